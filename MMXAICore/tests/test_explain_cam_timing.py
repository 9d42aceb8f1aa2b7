"""Cost of Grad-CAM++ against one forward + backward pass of the same model (tiny preset, 128 px).

A benchmark, skipped unless ``MMXAI_BENCH=1`` (about 1-1.5 min on 2 CPU cores); run with ``-s`` to see the
table: median of 5 runs each, for a 2D case and a 64-slice volume. "Explanations cost little": the bound is
loose. Timed on ONE thread (``torch.set_num_threads(1)``): on a shared 2-core machine multi-threaded timings
vary several-fold from run to run.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

from mmxai_core.explain.gradcam import GradCAMPlusPlusExplainer
from mmxai_core.model import create_model, model_config

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3), ("er", "categorical", 2), ("size", "numeric", 0)]


def median_time(fn, repeats=5):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MMXAI_BENCH") != "1", reason="benchmark: set MMXAI_BENCH=1 to run")
def test_gradcam_costs_about_one_forward_backward():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run_benchmark()
    finally:
        torch.set_num_threads(threads)


def _run_benchmark():
    torch.manual_seed(0)
    model = create_model(model_config("tiny", FIELDS), seed=0).eval()
    values = torch.tensor([[0.4, 2.0, 1.0, 0.3]])
    missing = torch.zeros(1, 4, dtype=torch.bool)
    rows = []
    for label, slices in (("2D 128x128", 1), ("volume 64x128x128", 64)):
        x = torch.randn(1, slices, 1, 128, 128)

        def forward_backward(x=x):
            model.zero_grad(set_to_none=True)
            model(x, None, None, values, missing).logits[:, 1].sum().backward()

        fb = median_time(forward_backward)
        model.zero_grad(set_to_none=True)
        cams = {}
        for chunk in sorted({model.config.slice_chunk, slices}):
            with GradCAMPlusPlusExplainer(model, slice_chunk=chunk) as cam:
                cams[chunk] = median_time(lambda cam=cam, x=x: cam(x, values, missing))
        rows.append((label, fb, cams))
    print("\ncase                  fwd+bwd [s]   Grad-CAM++ [s] by slice_chunk   ratio")
    for label, fb, cams in rows:
        parts = ", ".join(f"chunk {c}: {t:.3f}" for c, t in cams.items())
        print(f"{label:20s}  {fb:10.3f}   {parts}   {max(cams.values()) / fb:.2f}x")
        assert max(cams.values()) < 4.0 * fb
