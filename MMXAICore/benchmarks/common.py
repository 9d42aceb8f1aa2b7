"""Shared helpers of the benchmark suite (research use, not for diagnosis).

* :func:`bench_model`: a model built with EXPLICIT settings (the tiny preset's values spelled out), so a
  change of a preset's defaults does not silently change what a benchmark measures.
* :func:`interleaved`: time several functions side by side: warm-up rounds, then ``repeats`` rounds in
  which every function runs once (in the same order); medians per function and the median of the
  per-round ratios against a reference. On a shared machine, load drifts over minutes; functions
  measured in the same round see the same load, so their ratio holds better than absolute times.
* :func:`machine`: what the figures were measured on.

Times are wall-clock seconds (``time.perf_counter``); a CUDA device is synchronised around each call.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

#: 6 numeric + 4 categorical fields: the size of a typical schema (10 fields, 1,024 coalitions).
FIELDS10 = [(f"num{i}", "numeric", 0) for i in range(6)] + [(f"cat{i}", "categorical", 3) for i in range(4)]
VALUES10 = np.array([0.2, 0.5, 0.9, 0.1, 0.7, 0.4, 0, 1, 2, 1], np.float32)

#: The tiny preset, spelled out (see mmxai_core.model.config.PRESETS).
TINY = dict(trunk="resnet10t", trunk_out_index=2, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0,
            fusion_heads=4, mil_hidden=64, slice_chunk=16, dropout=0.1, token_pool="mean", reverse_fusion=True,
            final_norm=False, head_norm=False, fusion_ffn=False, variant="attention", num_classes=2)


def fields(n: int) -> list[tuple[str, str, int]]:
    """n fields, alternating numeric and 3-category fields."""
    return [(f"f{i}", "numeric", 0) if i % 2 == 0 else (f"f{i}", "categorical", 3) for i in range(n)]


def field_values(n: int) -> np.ndarray:
    """Entered values for :func:`fields` (numeric in [0, 1], category codes 0..2), float32 (n,)."""
    rng = np.random.default_rng(n)
    return np.array([rng.uniform() if i % 2 == 0 else float(rng.integers(0, 3)) for i in range(n)], np.float32)


def bench_model(clinical_fields=FIELDS10, image_size: int = 128, seed: int = 0, perturb: float = 0.1,
                **overrides) -> torch.nn.Module:
    """The tiny architecture with explicit settings, in eval mode; non-trunk weights perturbed (fixed seed)
    so that the clinical fields matter as in a trained model (a fresh init barely uses them)."""
    from mmxai_core.model import create_model, model_config

    settings = {**TINY, "image_size": image_size, **overrides}
    preset = settings.pop("preset", "tiny")
    model = create_model(model_config(preset, clinical_fields=clinical_fields, **settings), seed=seed).eval()
    if perturb:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.startswith("image_encoder.trunk"):
                    p.add_(torch.randn(p.shape, generator=gen) * perturb)
    return model


def _sync(device: str | torch.device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: Mapping[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                reference: str | None = None, device: str = "cpu") -> dict[str, dict]:
    """Time ``fns`` side by side (see the module docstring).

    Returns ``{name: {"median_s", "min_s", "max_s", "runs", "times_s", "ratio"}}``; ``ratio`` is the median
    over rounds of time / reference time (when ``reference`` is given).
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in times.items():
        row = {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "runs": len(ts),
               "times_s": [round(t, 6) for t in ts]}
        if reference is not None:
            row["ratio"] = statistics.median(t / r for t, r in zip(ts, times[reference]))
        out[name] = row
    return out


def machine() -> dict:
    """CPU, cores, threads, versions: what a figure was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def command() -> str:
    """The command line that produced the figures (as typed, relative to the repository root)."""
    return " ".join(["python", *sys.argv])


def setup_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


def write_json(path: str | None, data: dict) -> None:
    """Write ``data`` (plus the machine and command) as JSON when ``path`` is given; print it otherwise."""
    data = {"command": command(), "machine": machine(), **data}
    text = json.dumps(data, indent=2, default=float)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms"
