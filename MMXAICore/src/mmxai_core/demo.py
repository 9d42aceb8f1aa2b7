"""``python -m mmxai_core.demo --out DIR``: the end-to-end demo behind ``make demo``.

Research use only - not for diagnosis.

Steps (each prints what it did and how long it took):

1. write (or reuse) the default synthetic cohort: ``mmxai-synth --n 400 --kind mixed --seed 0``;
2. validate its manifest against its schema, make patient-grouped stratified splits, fit the clinical
   preprocessing on the training split;
3. read and preprocess a few 2D and 3D cases, send each lesion mask to model space and back onto the
   patient's grid (Dice, centroid error), and write ``preview.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.cli._common import notice, run_cli

PROG = "mmxai-demo"


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def ensure_cohort(folder: Path, n: int, seed: int, kind: str) -> Path:
    """Write the synthetic cohort to ``folder`` unless an identical one (same n, seed, kind) is there."""
    from mmxai_core.data.synthetic import write_cohort
    from mmxai_core.data.synthetic.output import timed_progress

    gt_path = folder / "ground_truth.json"
    if gt_path.is_file():
        gt = json.loads(gt_path.read_text(encoding="utf-8"))
        params = gt.get("parameters", gt)
        if (params.get("n"), params.get("seed"), params.get("kind")) == (n, seed, kind):
            _say(f"reusing synthetic cohort in {folder}")
            return folder
    t0 = time.perf_counter()
    write_cohort(folder, n=n, seed=seed, kind=kind, force=True, progress=timed_progress("[demo] synth"))
    _say(f"wrote synthetic cohort ({n} patients, kind {kind}, seed {seed}) to {folder} "
         f"in {time.perf_counter() - t0:.1f} s")
    return folder


def validate_and_split(cohort: Path, run_dir: Path, seed: int):
    """Load + validate the manifest, make and save splits, fit clinical preprocessing on train."""
    from mmxai_core.data.clinical import ClinicalPreprocessor
    from mmxai_core.data.manifest import load_manifest
    from mmxai_core.data.schema import load_schema
    from mmxai_core.data.splits import make_splits, save_splits

    t0 = time.perf_counter()
    schema = load_schema(cohort / "schema.yaml")
    manifest = load_manifest(cohort / "manifest.csv", schema)
    splits = make_splits(manifest, seed=seed)
    save_splits(splits, run_dir / "splits.json")
    idx = splits.indices(manifest)
    clinical = ClinicalPreprocessor(schema).fit(manifest.subset(idx["train"]).table)
    arrays = clinical.transform(manifest.table)
    _say(f"manifest valid: {len(manifest.table)} images of {manifest.table['patient_id'].nunique()} patients, "
         f"classes {manifest.classes}; {len(schema.fields)} clinical fields, "
         f"{arrays.missing.mean() * 100:.1f}% values unknown ({time.perf_counter() - t0:.1f} s)")
    for name in ("train", "val", "test"):
        sub = manifest.table.iloc[idx[name]]
        counts = sub["label"].value_counts().to_dict()
        _say(f"  {name:5s}: {len(sub):4d} images, {sub['patient_id'].nunique():4d} patients, labels {counts}")
    return schema, manifest, splits, clinical


def preview_preprocessing(manifest, out_png: Path, n_per_kind: int = 3, size_hw: int = 128) -> list[dict]:
    """Preprocess a few cases with masks, round-trip each mask, draw ``out_png``; return per-case figures."""
    from mmxai_core.data.image_preprocess import (ImagePreprocessConfig, ImagePreprocessor, to_model_space,
                                                  to_original_grid)
    from mmxai_core.io import read_image
    from mmxai_core.report.preview import write_preprocessing_preview

    table = manifest.table
    with_mask = table[table["mask"].notna() & (table["mask"].astype(str) != "")]
    modality = with_mask["image"].map(lambda p: "3d" if Path(p).is_dir() else "2d")
    chosen = [*with_mask[modality == "2d"].index[:n_per_kind], *with_mask[modality == "3d"].index[:n_per_kind]]
    pre = ImagePreprocessor(ImagePreprocessConfig(output_size_hw=(size_hw, size_hw), target_spacing_xy=None))
    panels, figures = [], []
    for i in chosen:
        row = table.loc[i]
        t0 = time.perf_counter()
        image = read_image(row["image"])
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        model_arr, record = pre.apply(image)
        t_pre = time.perf_counter() - t0
        mask = read_image(row["mask"])
        mask_bin = mask.array > 0
        model_mask = to_model_space(mask_bin.astype(np.uint8), record)
        back = to_original_grid(model_mask.astype(np.float32), record, interpolation="linear").array > 0.5
        dice = _dice(mask_bin, back)
        shift = _centroid_shift_vox(mask_bin, back)
        figures.append({"case": row.get("case_id") or Path(row["image"]).name, "shape": list(image.shape),
                        "model_shape": list(model_arr.shape), "read_s": t_read, "preprocess_s": t_pre,
                        "dice_roundtrip": dice, "centroid_shift_vox": shift, "label": row["label"]})
        panels.append((image.array, mask_bin, model_arr, model_mask > 0, back,
                       f"{row['label']} | {'x'.join(map(str, image.shape))} -> {'x'.join(map(str, model_arr.shape))}"
                       f" | Dice {dice:.3f}"))
    write_preprocessing_preview(panels, out_png)
    return figures


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / denom) if denom else 1.0


def _centroid_shift_vox(a: np.ndarray, b: np.ndarray) -> float:
    if not a.any() or not b.any():
        return float("nan")
    ca = np.array(np.nonzero(a)).mean(axis=1)
    cb = np.array(np.nonzero(b)).mean(axis=1)
    return float(np.abs(ca - cb).max())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=f"MMXAI end-to-end demo. {RESEARCH_USE_NOTICE}")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--n", type=int, default=400, help="synthetic patients (default 400)")
    p.add_argument("--seed", type=int, default=0, help="seed for cohort and splits (default 0)")
    p.add_argument("--kind", choices=("2d", "3d", "mixed"), default="mixed")
    return p


def _body(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    notice(PROG)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    cohort = ensure_cohort(out / "cohort", args.n, args.seed, args.kind)
    schema, manifest, splits, clinical = validate_and_split(cohort, out, args.seed)
    figures = preview_preprocessing(manifest, out / "preview.png")
    for f in figures:
        _say(f"  {f['case']}: {f['shape']} -> {f['model_shape']}, read {f['read_s'] * 1000:.0f} ms, "
             f"preprocess {f['preprocess_s'] * 1000:.0f} ms, mask round trip Dice {f['dice_roundtrip']:.3f}, "
             f"centroid shift {f['centroid_shift_vox']:.2f} voxel")
    from mmxai_core.utils.atomic import write_json_atomic

    write_json_atomic(out / "preprocessing_check.json", {"notice": RESEARCH_USE_NOTICE, "cases": figures})
    _say(f"preview: {out / 'preview.png'}")
    _say(f"done in {time.perf_counter() - t_all:.1f} s. {RESEARCH_USE_NOTICE}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``python -m mmxai_core.demo``)."""
    return run_cli(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
