"""``python -m mmxai_core.demo --out DIR``: the end-to-end demo behind ``make demo``.

Research use only - not for diagnosis.

Steps (each prints what it did and how long it took):

1. write (or reuse) the default synthetic cohort: ``mmxai-synth --n 400 --kind mixed --seed 0``;
2. validate its manifest against its schema, make patient-grouped stratified splits, fit the clinical
   preprocessing on the training split;
3. read and preprocess a few 2D and 3D cases, send each lesion mask to model space and back onto the
   patient's grid (Dice, centroid error), and write ``preview.png``;
4. train the tiny multimodal model (:data:`DEMO_OVERRIDES`) on the splits of step 2 and print the test
   metrics with patient-bootstrap 95% CIs (``DIR/run``: checkpoint, metrics, log); a finished run of the
   same configuration and data is reused unless ``--retrain``;
5. :func:`explain_step` (the explanation of one test case; a hook for the explanation commands);
6. :func:`xai_quality_step`: explanation quality of the demo model on the test split
   (``mmxai-evaluate --xai``): localisation and coherence over every test case, sanity, stability and
   faithfulness over the first :data:`XAI_SANITY_CASES`; prints the figures the README quotes;
7. with ``--export-model DIR``: copy the checkpoint there (the shipped demo model of the Slicer module,
   ``MMXAISlicer/Resources/DemoModel``), after checking its size and that no patient identifier is in it.

Budget: the whole demo in about 18 minutes on 2 CPU cores (training 16 of them, on one thread: README).
N4 bias-field correction is off for the synthetic cohort: its MR bias field is a smooth +-12 % (1 SD)
multiplicative field that the intensity normalisation and the model absorb, while N4 costs ~1.5-1.9 s per MR
series (~5-6 min for the 200 series of the default cohort on this machine) against ~0.07 s without. Real MR
data keeps ``preprocess.n4=auto``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.cli._common import notice, run_cli

PROG = "mmxai-demo"

#: Training configuration of the demo model (mmxai-train overrides). 96 px at 1.6 mm fits a synthetic
#: mammogram (~160 x 128 mm); 4 mm slices keep 10-24 slices per MR series; N4 off (module docstring).
#: One torch thread: single-thread training is bit-reproducible (two threads sum in a different order
#: from run to run), so every `make demo` trains the same weights as the shipped demo model.
#: ``train.aux_image_only=1``: the image-only prediction (every clinical field unknown) is trained alongside
#: the multimodal one, so that the image branch learns the lesion although the clinical facts are learned
#: first (README, "Heatmap localisation": test AUC 0.758 -> 0.892, pointing game 0.534 -> 0.707).
#: ``train.patience`` = ``train.epochs``: no early stopping (the weights of the best validation loss are still
#: the ones kept). The loss on 80 validation cases is noisy: with patience 10, four of five training seeds
#: stopped at epoch 14-20 on a best epoch of 4-10, where training on found its best validation loss at epoch
#: 28-29 (README, "Heatmap localisation", seed table). Seed 0, the demo's, never stopped early: same weights.
DEMO_OVERRIDES: dict[str, str] = {
    "model.preset": "tiny", "preprocess.output_size_hw": "96,96", "preprocess.target_spacing_xy": "1.6,1.6",
    "preprocess.target_spacing_z": "4", "preprocess.n4": "off", "train.epochs": "30", "train.patience": "30",
    "train.batch_size": "8", "optim.lr": "1e-3", "train.threads": "1", "train.n_boot": "1000",
    "train.progress": "false", "train.aux_image_only": "1", "train.unknown_refit": "3"}
MAX_MODEL_BYTES = 10 * 2**20
#: Test cases that get the costlier explanation metrics (sanity cascade, stability, faithfulness).
XAI_SANITY_CASES = 16


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
    # N4 off as for training (module docstring); it changes intensities only, not the geometry checked here
    pre = ImagePreprocessor(ImagePreprocessConfig(output_size_hw=(size_hw, size_hw), target_spacing_xy=None,
                                                  n4="off"))
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


@dataclasses.dataclass
class DemoContext:
    """What the steps after training get: folders, the manifest, the split file, the run's result."""

    out: Path
    cohort: Path
    manifest: Any
    splits_path: Path
    run_dir: Path
    checkpoint_dir: Path
    metrics: dict[str, Any]


def demo_config(epochs: int | None = None, threads: int | None = None):
    """The demo's :class:`~mmxai_core.train.config.TrainConfig` (:data:`DEMO_OVERRIDES`, optionally changed)."""
    from mmxai_core.train.config import resolve_config

    overrides = dict(DEMO_OVERRIDES)
    if epochs is not None:
        overrides["train.epochs"] = str(epochs)
    if threads is not None:
        overrides["train.threads"] = str(threads)
    return resolve_config(None, overrides)


def _finished_run(run_dir: Path, cfg: Any, manifest: Any) -> dict | None:
    """metrics.json of a finished run of ``cfg`` on ``manifest`` in ``run_dir``, else None."""
    from mmxai_core.train.fingerprint import cohort_fingerprint, image_digests

    try:
        info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if info.get("status") != "complete" or info.get("config_sha256") != cfg.fingerprint():
        return None
    digests = image_digests([str(p) for p in manifest.table["image"]], mode=cfg.data.fingerprint)
    if info.get("manifest_sha256") != cohort_fingerprint(manifest, digests)["sha256"]:
        return None
    return metrics


def train_step(out: Path, cohort: Path, manifest: Any, splits_path: Path, cfg: Any, retrain: bool) -> DemoContext:
    """Train the demo model on the demo's splits (or reuse a finished identical run); print test metrics."""
    from mmxai_core.train.run import metrics_summary, run_training

    run_dir = out / "run"
    metrics = None if retrain else _finished_run(run_dir, cfg, manifest)
    if metrics is not None:
        _say(f"reusing the trained model in {run_dir} (same configuration and data; --retrain to train again)")
    else:
        h, w = cfg.preprocess.output_size_hw
        stopping = (f"early stopping after {cfg.train.patience} epochs without improvement"
                    if cfg.train.patience < cfg.train.epochs else "no early stopping")
        _say(f"training the tiny model: {h}x{w} px, up to {cfg.train.epochs} epochs, {cfg.train.threads} CPU "
             f"thread(s), {stopping}, keeping the weights of the "
             f"{'best validation loss' if cfg.train.restore_best else 'last epoch'}")
        t0 = time.perf_counter()
        result = run_training(cfg, manifest, None, run_dir, splits=splits_path, force=True,
                              log=lambda text: _say(f"  {text}"))
        metrics = {"test": result.metrics["test"], "val": result.metrics["val"]}
        hist = result.history
        _say(f"trained in {time.perf_counter() - t0:.1f} s: {len(hist)} epochs (best {result.best_epoch}), "
             f"{sum(r.cases_per_s for r in hist) / len(hist):.1f} cases/s, "
             f"{sum(r.slices_per_s for r in hist) / len(hist):.1f} image slices/s in training")
    for line in metrics_summary(metrics["test"], "test"):
        _say(line)
    return DemoContext(out=out, cohort=cohort, manifest=manifest, splits_path=splits_path, run_dir=run_dir,
                       checkpoint_dir=run_dir / "checkpoint", metrics=metrics)


def explain_step(ctx: DemoContext, metrics: Sequence[str] = ("stability", "faithfulness")) -> Path | None:
    """Explain one test case with the demo model; print the prediction and the strongest clinical fields;
    return the path of its ``report.html``.

    The case: the first test-split malignant case that has a lesion mask and an image volume (else the
    first test case). Written to ``ctx.out / "explained" / <case id>`` (replaced on every demo run).
    """
    from mmxai_core.data.splits import load_splits
    from mmxai_core.explain.pipeline import ExplainOptions, explain_to_folder, load_model

    manifest = ctx.manifest
    table = manifest.table
    test_rows = load_splits(ctx.splits_path).indices(manifest)["test"]
    if len(test_rows) == 0:
        return None

    def score(i: int) -> tuple[int, int, int]:
        row = table.iloc[i]
        has_mask = isinstance(row["mask"], str) and bool(row["mask"])
        return (int(row["label"] == manifest.classes[-1]), int(has_mask), int(Path(row["image"]).is_dir()))

    i = max(test_rows, key=score)
    row = table.iloc[i]
    case_id = str(row["case_id"] or Path(row["image"]).name).replace("/", "_")
    dest = ctx.out / "explained" / case_id
    t0 = time.perf_counter()
    model = load_model(ctx.checkpoint_dir, "cpu")
    result = explain_to_folder(model, row["image"], manifest.records[i], dest,
                               ExplainOptions(metrics=tuple(metrics)), force=True, what="demo output")
    pred = result["prediction"]
    _say(f"explained test case {case_id} (true label {row['label']}) in {time.perf_counter() - t0:.1f} s: "
         f"predicted {pred['class']}, p = {pred['probabilities'][pred['explained_class']]:.2f} for "
         f"{pred['explained_class']} (threshold {pred['threshold']})")
    fields = sorted((f for f in result["shapley"]["fields"] if not f["unknown"]), key=lambda f: -abs(f["value"]))
    for f in fields[:4]:
        _say(f"  Shapley {f['value']:+.3f}  {f['label'] or f['name']} = {f['entered']}")
    split = result.get("modality_split") or {}
    if split:
        _say(f"  modality split: image {split.get('image', float('nan')):+.3f}, "
             f"clinical {split.get('clinical', float('nan')):+.3f}")
    return dest / result["files"]["report"]


def xai_quality_step(ctx: DemoContext, threads: int | None = None) -> dict[str, Any]:
    """Explanation quality of the demo model on the test split; prints and returns the headline figures.

    Two ``mmxai-evaluate --xai`` runs over the test split, written to ``ctx.out / "xai-test"`` (localisation
    and coherence, every case) and ``ctx.out / "xai-test-sanity"`` (sanity, stability, faithfulness, the
    first :data:`XAI_SANITY_CASES` cases). Both reuse the run's preprocessing cache.
    """
    from mmxai_core.train.evaluate import evaluate_checkpoint

    cache = ctx.run_dir / "cache"
    common = dict(split="test", splits=str(ctx.splits_path), n_boot=200, threads=threads,
                  cache_dir=cache if cache.is_dir() else None)
    t0 = time.perf_counter()
    evaluate_checkpoint(ctx.checkpoint_dir, ctx.cohort / "manifest.csv", ctx.out / "xai-test", xai=True,
                        xai_options={"metrics": "localisation,coherence", "progress_bar": False}, **common)
    evaluate_checkpoint(ctx.checkpoint_dir, ctx.cohort / "manifest.csv", ctx.out / "xai-test-sanity", xai=True,
                        xai_options={"metrics": "sanity,stability,faithfulness", "max_cases": XAI_SANITY_CASES,
                                     "progress_bar": False}, **common)
    main = json.loads((ctx.out / "xai-test" / "xai_summary.json").read_text(encoding="utf-8"))
    other = json.loads((ctx.out / "xai-test-sanity" / "xai_summary.json").read_text(encoding="utf-8"))
    figures: dict[str, Any] = {"seconds": round(time.perf_counter() - t0, 1)}
    loc = main.get("localisation") or {}
    pg = loc.get("pointing_game") or {}
    figures["pointing_game"] = pg.get("mean")
    figures["pointing_game_baseline"] = pg.get("baseline_mean")
    figures["pointing_game_cases"] = loc.get("n_defined")
    coh = main.get("coherence_auroc") or {}
    figures["coherence_auroc"] = coh.get("auroc")
    fields = main.get("clinical_fields") or {}
    figures["informative_above_noise"] = fields.get("informative_above_noise")
    figures["field_ranking"] = [r["field"] + (" (noise)" if r.get("noise") else "") for r in fields.get("ranking", [])]
    rows = {r.get("metric"): r for r in other.get("table", []) if isinstance(r, dict)}
    for key in ("sanity_ssim_headline", "sanity_ssim_final", "gradcam_ssim_noise", "gradcam_ssim_rigid",
                "shapley_pearson", "image_aopc", "clinical_aopc"):
        figures[key] = (rows.get(key) or {}).get("mean")
    for key in ("image_aopc", "clinical_aopc"):
        figures[f"{key}_random"] = (rows.get(key) or {}).get("baseline")

    def fmt(x: Any) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    _say(f"explanation quality on the test split ({figures['seconds']:.0f} s; {ctx.out / 'xai-test'}, "
         f"{ctx.out / 'xai-test-sanity'}):")
    _say(f"  pointing game {fmt(figures['pointing_game'])} over {figures['pointing_game_cases']} masked cases "
         f"(random map {fmt(figures['pointing_game_baseline'])}); coherence AUROC for the discordant cases "
         f"{fmt(figures['coherence_auroc'])}")
    _say(f"  clinical fields by mean |Shapley|: {', '.join(figures['field_ranking'])}; every informative field "
         f"above every noise field: {figures['informative_above_noise']}")
    _say(f"  sanity SSIM (everything above the CAM layer randomised) {fmt(figures['sanity_ssim_headline'])}, "
         f"(all randomised) {fmt(figures['sanity_ssim_final'])}; Grad-CAM++ SSIM under noise "
         f"{fmt(figures['gradcam_ssim_noise'])}, rigid {fmt(figures['gradcam_ssim_rigid'])}; image deletion AOPC "
         f"{fmt(figures['image_aopc'])} (random {fmt(figures['image_aopc_random'])})")
    return figures


def find_identifiers(text: str, manifest: Any) -> list[str]:
    """Patient ids and case ids of ``manifest`` that occur in ``text`` as whole words."""
    ids = {str(p) for p in manifest.table["patient_id"]}
    ids |= {str(c) for c in manifest.table["case_id"] if c is not None}
    return sorted(i for i in ids if i and re.search(rf"(?<![A-Za-z0-9]){re.escape(i)}(?![A-Za-z0-9])", text))


def export_model(checkpoint_dir: Path, dest: Path, manifest: Any, command: str) -> Path:
    """Copy the checkpoint to ``dest`` (weights + metadata with a ``provenance`` entry), refusing one that
    is larger than :data:`MAX_MODEL_BYTES` or names a patient; check that it loads. Other files in
    ``dest`` (its README) stay."""
    import shutil

    from mmxai_core.errors import MMXAIError
    from mmxai_core.train.predict import load_run_checkpoint
    from mmxai_core.utils.atomic import atomic_path, write_json_atomic

    meta = json.loads((checkpoint_dir / "metadata.json").read_text(encoding="utf-8"))
    meta["provenance"] = {"made_by": command, "data": "synthetic cohort (mmxai-synth: fake patients, no real "
                          "data)", "notice": RESEARCH_USE_NOTICE}
    text = json.dumps(meta)
    found = find_identifiers(text, manifest)
    if found:
        raise MMXAIError(f"{checkpoint_dir}: metadata names patient/case ids ({', '.join(found[:3])}); not exported")
    size = (checkpoint_dir / "weights.safetensors").stat().st_size + len(text.encode("utf-8"))
    if size > MAX_MODEL_BYTES:
        raise MMXAIError(f"{checkpoint_dir}: {size / 2**20:.1f} MiB, over the {MAX_MODEL_BYTES / 2**20:.0f} MiB limit")
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest / "weights.safetensors") as tmp:
        shutil.copyfile(checkpoint_dir / "weights.safetensors", tmp)
    write_json_atomic(dest / "metadata.json", meta)
    for name in ("weights.safetensors", "metadata.json"):
        (dest / name).chmod(0o644)  # shipped files: readable by everyone (temporary files are 0600)
    load_run_checkpoint(dest)  # refuses an incomplete or inconsistent copy
    return dest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=f"MMXAI end-to-end demo. {RESEARCH_USE_NOTICE}")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--n", type=int, default=400, help="synthetic patients (default 400)")
    p.add_argument("--seed", type=int, default=0, help="seed for cohort and splits (default 0)")
    p.add_argument("--kind", choices=("2d", "3d", "mixed"), default="mixed")
    p.add_argument("--epochs", type=int, help=f"training epochs (default {DEMO_OVERRIDES['train.epochs']})")
    p.add_argument("--threads", type=int, help=f"torch CPU threads (default {DEMO_OVERRIDES['train.threads']})")
    p.add_argument("--retrain", action="store_true", help="train again even if DIR/run holds the same finished run")
    p.add_argument("--no-train", action="store_true", help="stop after the preprocessing preview")
    p.add_argument("--no-xai-eval", action="store_true", help="skip the explanation-quality evaluation of the "
                   "test split")
    p.add_argument("--export-model", metavar="DIR", help="copy the trained checkpoint to DIR (the Slicer module's "
                   "demo model: MMXAISlicer/Resources/DemoModel)")
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
    if not args.no_train:
        cfg = demo_config(args.epochs, args.threads)
        ctx = train_step(out, cohort, manifest, out / "splits.json", cfg, args.retrain)
        report = explain_step(ctx)
        if not args.no_xai_eval:
            xai_quality_step(ctx, args.threads)
        if report is not None:
            _say(f"explanation report: {report}")
        if args.export_model:
            parts = ["python -m mmxai_core.demo", f"--out {args.out}"]
            parts += [f"--{k} {v}" for k, v in (("n", args.n), ("seed", args.seed), ("kind", args.kind))
                      if v != build_parser().get_default(k)]
            parts += [f"--{k} {v}" for k, v in (("epochs", args.epochs), ("threads", args.threads)) if v is not None]
            command = " ".join(parts + [f"--export-model {args.export_model}"])
            dest = export_model(ctx.checkpoint_dir, Path(args.export_model), manifest, command)
            size = sum(f.stat().st_size for f in (dest / "weights.safetensors", dest / "metadata.json"))
            _say(f"demo model exported to {dest} ({size / 2**20:.2f} MiB; loads with load_run_checkpoint)")
    _say(f"done in {time.perf_counter() - t_all:.1f} s. {RESEARCH_USE_NOTICE}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``python -m mmxai_core.demo``)."""
    return run_cli(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
