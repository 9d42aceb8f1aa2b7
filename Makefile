# MMXAI: two commands do all the set-up.
#   make demo   the main job (synthetic cohort -> preprocessing -> preview; later: train + explain)
#   make test   the test suite
# Both create or reuse the git-ignored virtual environment .venv and install what they need.
#
# PyTorch: the default below is the build that works on the reference machine (CPU-only, x86-64,
# Python 3.11). For another GPU / CUDA driver, pass your own pip arguments, e.g.
#   make demo TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cu126"
# (see https://pytorch.org/get-started/locally/).

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.stamp-core
PYTEST_ARGS ?=
OUT ?= out

# The Slicer-side tests (Testing/) run in their own environment: slicer-core + PyQt5 + numpy. It must
# never share one with shap (both own a package named `slicer`); it reaches the core only through the
# worker process run with $(VPY).
SVENV ?= .venv-slicer
SPY := $(SVENV)/bin/python
SSTAMP := $(SVENV)/.stamp-slicer
SLICER_PYTEST_ARGS ?=

.PHONY: demo test bench venv venv-slicer clean-venv

venv: $(STAMP)

$(STAMP): MMXAICore/pyproject.toml Makefile
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH_SPEC)
	$(VPY) -m pip install -q -e "MMXAICore[shap,test]"
	@touch $(STAMP)

venv-slicer: $(SSTAMP)

$(SSTAMP): Testing/requirements.txt Makefile
	@test -x $(SPY) || $(PYTHON) -m venv $(SVENV)
	$(SPY) -m pip install -q --upgrade pip
	$(SPY) -m pip install -q -r Testing/requirements.txt
	@touch $(SSTAMP)

demo: $(STAMP)
	$(VPY) -m mmxai_core.demo --out $(OUT)/demo

test: $(STAMP) $(SSTAMP)
	$(VPY) -m pytest MMXAICore/tests $(PYTEST_ARGS)
	QT_QPA_PLATFORM=offscreen MMXAI_CORE_PYTHON="$(abspath $(VPY))" $(SPY) -m pytest Testing $(SLICER_PYTEST_ARGS)

# The benchmark suite (about 13 minutes on 2 CPU cores): writes BENCHMARKS.md and out/bench/*.json.
bench: $(STAMP)
	$(VPY) MMXAICore/benchmarks/run_all.py --out $(OUT)/bench --md BENCHMARKS.md

clean-venv:
	rm -rf $(VENV)
