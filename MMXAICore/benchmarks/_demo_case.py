"""A synthetic 2D input for the shipped demo model (MMXAISlicer/Resources/DemoModel), written as NRRD, and
clinical values valid for its schema. Used by bench_click.py and bench_metrics.py. Research use only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "MMXAISlicer" / "Resources" / "DemoModel"


def write_case(folder: Path, size: int = 128, slices: int = 1) -> tuple[Path, dict]:
    """(image path, clinical values {field: value}) of a synthetic case for the demo model's schema."""
    from mmxai_core.explain.pipeline import checkpoint_info
    from mmxai_core.io import Image, write_image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arr = rng.normal(100, 20, (slices, size, size)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    arr[:, (yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 10) ** 2] += 80   # a bright blob
    path = folder / "case.nrrd"
    write_image(Image(arr, (0.5, 0.5, 1.0), (0.0, 0.0, 0.0), np.eye(3), {}), path)
    clinical = {}
    for f in checkpoint_info(DEMO_MODEL).schema.fields:
        if f.type == "numeric":
            lo, hi = f.range or (0.0, 1.0)
            clinical[f.name] = round((lo + hi) / 2, 1)
        elif f.type == "boolean":
            clinical[f.name] = True
        else:
            clinical[f.name] = f.categories[min(1, len(f.categories) - 1)]
    return path, clinical
