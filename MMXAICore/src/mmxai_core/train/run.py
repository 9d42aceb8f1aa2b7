"""One training run, start to finish: manifest -> splits -> fitted preprocessing -> training -> threshold
on validation -> test metrics -> released checkpoint. Callable from Python (the ablation runner) and
behind ``mmxai-train``.

Research use, not for diagnosis.

    from mmxai_core.train.config import resolve_config
    from mmxai_core.train.run import run_training

    cfg = resolve_config("config.yaml", {"model.variant": "concat", "train.seed": 1})
    result = run_training(cfg, "cohort/manifest.csv", "cohort/schema.yaml", "runs/concat-s1",
                          splits="runs/attention-s0/splits.json")
    result.metrics["test"]["metrics"]["auc"]        # value, ci_low, ci_high
    result.predictions["test"].probs                 # (N, C), with .labels and .patient_ids

Order of work, so that bad input is refused before anything is written: read schema and manifest,
fingerprint the images, check the output folder, make or load the splits, fit the clinical preprocessing
on the training rows, preprocess every image (NaN check, case named); only then write ``run.json``,
``config.resolved.yaml``, ``splits.json`` and the image cache, and train. See
:mod:`mmxai_core.train.state` for the folder layout.

The checkpoint's metadata also holds ``explain``: the model's fixed Grad-CAM++ normalisation scale
(``explain.cam_scale``, the 99th percentile of raw map values over up to 32 validation cases, with the
percentile and the number of cases; :func:`cam_scale_entry`), so heatmaps are scaled per model, not per case.
Under ``torchrun`` (:mod:`mmxai_core.train.distributed`) every rank runs this function; rank 0 writes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mmxai_core import RESEARCH_USE_NOTICE, __version__
from mmxai_core.errors import MMXAIError
from mmxai_core.train.config import ConfigError, TrainConfig
from mmxai_core.train.state import RUN_FORMAT, RunFolder, RunFolderError

SPLIT_NAMES = ("train", "val", "test")
Log = Callable[[str], None]


@dataclasses.dataclass
class RunResult:
    """What a run produced.

    status: ``complete``, or ``stopped`` (``train.stop_after_epochs``; resume it later).
    metrics: ``{"val": ..., "test": ...}`` :func:`~mmxai_core.train.metrics.evaluate_predictions` results
        (empty when stopped). predictions: ``{"val": Predictions, "test": Predictions}`` (probs, labels,
        patient ids, case keys). threshold: the checkpoint's threshold entry. history: one
        :class:`~mmxai_core.train.loop.EpochRecord` per finished epoch. timings: seconds of the phases.
    image_stats: images preprocessed in this call and images read from the disk cache.
    """

    status: str
    out_dir: Path
    checkpoint_dir: Path | None
    config: TrainConfig
    metrics: dict[str, Any]
    predictions: dict[str, Any]
    threshold: dict[str, Any] | None
    history: list[Any]
    best_epoch: int | None
    stopped_early: bool
    data_fingerprint: dict[str, Any]
    timings: dict[str, float]
    image_stats: dict[str, int] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- helpers
def package_versions() -> dict[str, str]:
    """Versions of python, mmxai-core, torch, timm, torchvision, numpy, SimpleITK (where installed)."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "mmxai-core": __version__}
    for dist in ("torch", "timm", "torchvision", "numpy", "SimpleITK"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def build_model_config(cfg: TrainConfig, model_fields: list[tuple[str, str, int]], n_classes: int):
    """The :class:`~mmxai_core.model.ModelConfig` of a run (ConfigError naming the problem)."""
    from mmxai_core.model import model_config

    h, w = cfg.preprocess.output_size_hw
    try:
        return model_config(cfg.model.preset, clinical_fields=model_fields, num_classes=n_classes,
                            image_size=int(max(h, w)), **cfg.model.overrides())
    except ValueError as exc:
        raise ConfigError(f"config 'model': {exc}") from None


def _load_inputs(manifest: Any, schema: Any):
    from mmxai_core.data.manifest import Manifest, load_manifest
    from mmxai_core.data.schema import ClinicalSchema, load_schema

    if isinstance(manifest, Manifest):
        return manifest, manifest.schema
    if schema is None:
        raise ConfigError("a schema is needed to read the manifest")
    if not isinstance(schema, ClinicalSchema):
        schema = load_schema(schema)
    return load_manifest(manifest, schema), schema


def _resolve_splits(manifest: Any, cfg: TrainConfig, folder: RunFolder, mode: str, splits: Any):
    from mmxai_core.data.splits import Splits, load_splits, make_splits

    own = folder / "splits.json"
    if isinstance(splits, (str, os.PathLike)):
        splits = load_splits(splits)
    if mode == "resume" and own.is_file():
        saved = load_splits(own)
        if splits is not None and splits.to_dict() != saved.to_dict():
            raise RunFolderError(f"{own}: the run's splits differ from the split file given; --resume keeps the "
                                 "run's own splits")
        return saved, False
    if splits is not None:
        if not isinstance(splits, Splits):
            raise TypeError("splits must be a Splits object or a path to a split file")
        return splits, True
    return make_splits(manifest, cfg.data.val_fraction, cfg.data.test_fraction, seed=cfg.data.split_seed), True


def _check_splits(manifest: Any, index: dict[str, np.ndarray], where: str) -> None:
    labels = manifest.labels
    for s in SPLIT_NAMES:
        if len(index[s]) == 0:
            raise MMXAIError(f"{where}: split '{s}' is empty; every split needs cases (check the split file, the "
                             f"manifest's split column or data.{s}_fraction)")
    for s in ("train", "val"):
        present = set(labels[index[s]].tolist())
        absent = [c for k, c in enumerate(manifest.classes) if k not in present]
        if absent:
            raise MMXAIError(f"{where}: split '{s}' has no case of class {', '.join(map(repr, absent))}; "
                             "training and validation need every class")


def _predictions_csv(preds: Any, classes: list[str]) -> str:
    rows = preds.rows(classes)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["case"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


class _Bars:
    """tqdm progress bars on stderr (main process, ``train.progress``); epoch lines through ``log``."""

    def __init__(self, enabled: bool, total_epochs: int, done: int):
        self.enabled = enabled
        self.outer = None
        if enabled:
            from tqdm.auto import tqdm

            self._tqdm = tqdm
            self.outer = tqdm(total=total_epochs, initial=done, desc="epochs", unit="epoch", file=sys.stderr,
                              dynamic_ncols=True, leave=True)

    def batches(self, epoch: int, total: int):
        if not self.enabled:
            return None, None
        bar = self._tqdm(total=total, desc=f"epoch {epoch}", unit="batch", leave=False, file=sys.stderr,
                         dynamic_ncols=True)

        def update(i: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        return bar, update

    def epoch_done(self, rec: Any) -> None:
        if self.outer is not None:
            auc = "n/a" if rec.val_auc is None else f"{rec.val_auc:.3f}"
            self.outer.set_postfix(train=f"{rec.train_loss:.4f}", val=f"{rec.val_loss:.4f}", auc=auc, refresh=False)
            self.outer.update(1)

    def write(self, text: str, log: Log | None) -> None:
        if log is None:
            return
        if self.outer is not None:
            with self._tqdm.external_write_mode(file=sys.stderr):
                log(text)
        else:
            log(text)

    def close(self) -> None:
        if self.outer is not None:
            self.outer.close()


def _epoch_line(rec: Any, total: int) -> str:
    auc = "n/a" if rec.val_auc is None else f"{rec.val_auc:.3f}"
    star = "  (best)" if rec.improved else ""
    return (f"epoch {rec.epoch}/{total}: train loss {rec.train_loss:.4f}, val loss {rec.val_loss:.4f}, "
            f"val AUC {auc}, lr {rec.lr:.2e}; {rec.epoch_s:.1f} s (data {rec.data_s:.2f} s, model "
            f"{rec.model_s:.1f} s, val {rec.eval_s:.1f} s), {rec.cases_per_s:.1f} cases/s, "
            f"{rec.slices_per_s:.1f} slices/s{star}")


def metrics_summary(result: dict[str, Any], name: str) -> list[str]:
    """Printable lines: ``<name> set (...)`` then ``metric value [ci_low, ci_high]`` per metric."""
    thr = result.get("threshold") or {}
    rule = (f"class 1 when p(class 1) >= {thr['value']:.4g}, threshold from {thr.get('source', '?')}"
            if thr.get("value") is not None else "argmax")
    pct = f"{100 * result.get('bootstrap', {}).get('ci_level', 0.95):g}%"
    lines = [f"{name} set: {result['n_cases']} cases, {result['n_patients']} patients; {rule}; {pct} CI by "
             f"patient bootstrap ({result.get('bootstrap', {}).get('n_boot')} resamples)"]
    for metric, m in result["metrics"].items():
        value = "n/a" if m["value"] is None else f"{m['value']:.3f}"
        ci = "" if m.get("ci_low") is None else f"  [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
        lines.append(f"  {metric:<12} {value}{ci}")
    return lines


# ---------------------------------------------------------------------------------------------- the run
def run_training(config: TrainConfig, manifest: Any, schema: Any = None, out_dir: str | os.PathLike = "run", *,
                 splits: Any = None, resume: bool = False, force: bool = False, runtime: Any = None,
                 log: Log | None = None) -> RunResult:
    """Train and evaluate one model; write the run folder; return a :class:`RunResult`.

    Args:
        config: the resolved :class:`~mmxai_core.train.config.TrainConfig`.
        manifest: a manifest CSV path, or a loaded :class:`~mmxai_core.data.manifest.Manifest`.
        schema: the clinical schema (path or ClinicalSchema); ignored when ``manifest`` is loaded.
        out_dir: the run folder.
        splits: a :class:`~mmxai_core.data.splits.Splits` or split-file path to use instead of making new
            splits (e.g. the same splits for every variant and seed of an ablation).
        resume: continue the run in ``out_dir`` from its last finished epoch.
        force: replace what a previous run left in ``out_dir``.
        runtime: a :class:`~mmxai_core.train.device.Runtime` (default: from ``config.train``).
        log: called with each progress line (None: silent apart from progress bars).

    Raises:
        MMXAIError (one-line message) for bad input: schema/manifest disagreement, a class with a single
        patient, an empty split, NaN after preprocessing (case named), a device that is absent, an output
        folder holding a different run.
    """
    from mmxai_core.data.clinical import ClinicalPreprocessor
    from mmxai_core.data.dataset import ImageStore, MultimodalDataset
    from mmxai_core.data.splits import save_splits
    from mmxai_core.model import create_model
    from mmxai_core.train.device import make_runtime
    from mmxai_core.train.fingerprint import cohort_fingerprint, image_digests
    from mmxai_core.train.loop import Trainer, class_weights_from_labels, log_csv_text
    from mmxai_core.train.state import load_training_state, save_training_state

    cfg = config
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    rt = runtime or make_runtime(cfg.train.device, cfg.train.amp, cfg.train.threads)
    say = log if (log is not None and rt.is_main_process) else (lambda text: None)
    folder = RunFolder(out_dir, rt)
    show = bool(cfg.train.progress) and rt.is_main_process

    # ---- inputs, identity, folder check (read only)
    manifest_obj, schema_obj = _load_inputs(manifest, schema)
    classes = list(manifest_obj.classes)
    t0 = time.perf_counter()
    digests = image_digests([str(p) for p in manifest_obj.table["image"]], mode=cfg.data.fingerprint)
    timings["fingerprint_s"] = time.perf_counter() - t0
    cohort = cohort_fingerprint(manifest_obj, digests)
    identity = {"manifest_sha256": cohort["sha256"], "config_sha256": cfg.fingerprint()}
    mode = folder.decide(identity, resume, force)

    # ---- splits and clinical preprocessing
    split_obj, new_splits = _resolve_splits(manifest_obj, cfg, folder, mode, splits)
    index = split_obj.indices(manifest_obj)
    _check_splits(manifest_obj, index, split_obj.source or str(manifest_obj.path))
    clinical = ClinicalPreprocessor(schema_obj).fit([manifest_obj.records[i] for i in index["train"]])
    subsets = {s: manifest_obj.subset(index[s]) for s in SPLIT_NAMES}
    arrays = {s: clinical.transform(subsets[s].records) for s in SPLIT_NAMES}

    # ---- model config first (config errors before the slow image work)
    model_cfg = build_model_config(cfg, clinical.model_fields(), len(classes))
    probe = create_model(model_cfg, seed=0)
    use_images = probe.uses_image
    if use_images:
        stride = probe.image_encoder.stride
        if min(cfg.preprocess.output_size_hw) < stride:
            raise ConfigError(f"config 'preprocess.output_size_hw' {list(cfg.preprocess.output_size_hw)} is smaller "
                              f"than the image encoder's stride {stride}")
    del probe

    # ---- images: read and preprocess once, check for NaN
    cache_dir = None
    if cfg.data.cache == "disk":
        cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else folder.cache_dir
    store = ImageStore(cfg.preprocess, cache_dir=cache_dir, digests=digests)
    augment = cfg.augment if cfg.data.augment else None
    datasets = {s: MultimodalDataset(subsets[s], arrays[s], store if use_images else None,
                                     augment=augment if s == "train" else None, seed=cfg.train.seed,
                                     use_images=use_images) for s in SPLIT_NAMES}
    t0 = time.perf_counter()
    image_stats = {"preprocessed": 0, "from_cache": 0}
    if use_images:
        names: dict[str, str] = {}
        for s in SPLIT_NAMES:
            for path, name in zip(datasets[s].paths, datasets[s].names):
                names.setdefault(path, name)
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(names), desc="images", unit="image", file=sys.stderr, leave=False,
                       dynamic_ncols=True)

        def progress(done: int, total: int) -> None:
            if bar is not None and done > bar.n:
                bar.update(done - bar.n)
        try:
            st = store.load(list(names), names=names, workers=cfg.data.preprocess_workers, progress=progress)
        finally:
            if bar is not None:
                bar.close()
        timings["preprocess_s"] = time.perf_counter() - t0
        image_stats = {"preprocessed": st.computed, "from_cache": st.from_disk}
        say(f"images: {st.computed} preprocessed, {st.from_disk} from the cache, {store.nbytes / 2**20:.0f} MiB "
            f"in memory ({timings['preprocess_s']:.1f} s)")

    # ---- from here on the run folder is written (by rank 0; every rank has read the folder by now)
    rt.barrier()
    if mode == "restart":
        folder.clear()
    else:
        gone = folder.remove_leftovers()
        if gone:
            say(f"removed {len(gone)} temporary file(s) left by an interrupted run")
    saved_cfg = cfg.replace(**{"train.stop_after_epochs": None})
    run_info = {"format": RUN_FORMAT, "notice": RESEARCH_USE_NOTICE, **identity, "status": "running",
                "manifest": str(manifest_obj.path),
                "schema": str(schema) if isinstance(schema, (str, os.PathLike)) else None,
                "classes": classes, "package_version": __version__}
    folder.write_json("run.json", run_info)
    folder.write_text("config.resolved.yaml", saved_cfg.to_yaml())
    if new_splits or not (folder / "splits.json").is_file():
        folder.call(save_splits, split_obj, folder / "splits.json")
    folder.call(store.flush)

    # ---- model, trainer, state
    model = create_model(model_cfg, trunk_weights=cfg.model.trunk_weights, seed=cfg.train.seed)
    weights = (class_weights_from_labels(datasets["train"].labels, len(classes))
               if cfg.train.class_weights == "inverse" else None)
    trainer = Trainer(model, datasets["train"], datasets["val"], cfg, rt, weights)
    saved = load_training_state(folder.state_dir) if mode == "resume" else None
    if saved is not None:
        meta, groups = saved
        if meta.get("config_sha256") != identity["config_sha256"]:
            raise RunFolderError(f"{folder.state_dir}: the saved state belongs to another configuration")
        trainer.load_state(meta, groups)
        say(f"resuming after epoch {trainer.epoch} (step {trainer.step})")
    else:
        torch.manual_seed(cfg.train.seed)  # dropout; everything else has its own seeded generator
    say(f"training on {rt.describe()}: {len(datasets['train'])} train / {len(datasets['val'])} val / "
        f"{len(datasets['test'])} test cases, {trainer.steps_per_epoch} steps per epoch, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")

    # ---- epochs
    bars = _Bars(show, cfg.train.epochs, trainer.epoch)
    ran_here = 0
    best_file: str | None = (saved[0]["files"].get("best_model") if saved is not None else None)
    t0 = time.perf_counter()
    try:
        while not trainer.finished:
            bar, update = bars.batches(trainer.epoch + 1, trainer.steps_per_epoch)
            try:
                rec = trainer.run_epoch(update)
            finally:
                if bar is not None:
                    bar.close()
            groups, meta, best_now = trainer.state()
            meta.update({"config_sha256": identity["config_sha256"], "manifest_sha256": identity["manifest_sha256"]})
            if best_now:
                best_file = f"model-e{trainer.epoch:04d}.safetensors"
            refs = {"best_model": "model" if best_now else best_file} if best_file else {}
            folder.call(save_training_state, folder.state_dir, trainer.epoch, groups, meta, refs)
            folder.write_text("log.csv", log_csv_text(trainer.history))
            bars.epoch_done(rec)
            bars.write(_epoch_line(rec, cfg.train.epochs), say)
            ran_here += 1
            stop = cfg.train.stop_after_epochs
            if stop is not None and ran_here >= stop and not trainer.finished:
                bars.close()
                say(f"stopped after epoch {trainer.epoch} as asked (train.stop_after_epochs={stop}); "
                    "continue with --resume")
                timings["train_s"] = time.perf_counter() - t0
                return RunResult("stopped", folder.path, None, cfg, {}, {}, None, trainer.history,
                                 trainer.best_epoch, False, cohort, timings, image_stats)
    finally:
        bars.close()
    timings["train_s"] = time.perf_counter() - t0
    if trainer.stopped_early:
        say(f"early stopping after epoch {trainer.epoch}: no validation-loss improvement for "
            f"{cfg.train.patience} epochs; best epoch {trainer.best_epoch}")

    # ---- final evaluation, checkpoint, reports
    result = _finish(cfg, rt, folder, trainer, datasets, clinical, classes, manifest_obj, index, digests, cohort,
                     identity, run_info, say)
    rt.barrier()  # every rank returns once rank 0 has written the checkpoint and the reports
    timings["total_s"] = time.perf_counter() - t_start
    result.timings.update(timings)
    result.image_stats = image_stats
    return result


#: Grad-CAM++ normalisation scale stored in the checkpoint (``metadata["explain"]``): this percentile of the
#: raw map values over at most this many validation cases (see :func:`mmxai_core.explain.gradcam.calibrate_cam_scale`).
CAM_SCALE_PERCENTILE = 99.0
CAM_SCALE_MAX_CASES = 32


def cam_scale_entry(model: Any, dataset: Any, batch_size: int = 4, percentile: float = CAM_SCALE_PERCENTILE,
                    max_cases: int = CAM_SCALE_MAX_CASES) -> dict[str, Any]:
    """``metadata["explain"]`` of a checkpoint: the model's fixed Grad-CAM++ scale from validation cases.

    Returns ``{"cam_scale": float, "percentile", "n_cases", "source", "layer", "note"}``; ``cam_scale`` is
    None (with the reason in ``note``) for a model without an image branch or whose maps are all zero.
    """
    from mmxai_core.data.dataset import EpochSampler, make_loader
    from mmxai_core.explain.gradcam import calibrate_cam_scale

    n = min(len(dataset), int(max_cases))
    entry: dict[str, Any] = {"cam_scale": None, "percentile": float(percentile), "n_cases": n,
                             "source": "validation split (first cases in manifest order)",
                             "method": "Grad-CAM++ (explain.gradcam), percentile of the raw feature-resolution "
                                       "map values of every real slice, target = the positive class (binary) "
                                       "or the predicted class"}
    if not getattr(model, "uses_image", False):
        entry.update(n_cases=0, note="no image branch: no Grad-CAM++ maps")
        return entry
    entry["layer"] = next((name for name, m in model.named_modules() if m is model.gradcam_layer), None)
    loader = make_loader(dataset, batch_size, EpochSampler(n, shuffle=False))
    try:
        entry["cam_scale"] = float(calibrate_cam_scale(model, loader, percentile=percentile))
    except ValueError as exc:
        entry["note"] = str(exc)
    return entry


def _refit_unknown(cfg, rt, model, train_set, say) -> dict[str, Any]:
    """``train.unknown_refit``: refit the clinical "unknown" embeddings on the training cases (no
    augmentation) after the released weights are restored; the report goes into the checkpoint."""
    from mmxai_core.train.unknown_refit import refit_unknown

    passes = cfg.train.unknown_refit
    report = refit_unknown(model, train_set.without_augmentation(), passes, batch_size=cfg.train.eval_batch_size,
                           seed=cfg.train.seed, device=rt.device)
    say(f"'unknown' embeddings refitted on {report['rows']} (case, field) rows x {passes} pass(es): loss "
        f"{report['loss_first_pass']:.4f} (first pass) -> {report['loss_last_pass']:.4f} (last) in "
        f"{report['seconds']:.1f} s")
    return report


def _finish(cfg, rt, folder, trainer, datasets, clinical, classes, manifest, index, digests, cohort, identity,
            run_info, say) -> RunResult:
    from mmxai_core.model import save_checkpoint
    from mmxai_core.report.tables import to_jsonable, write_metrics_markdown
    from mmxai_core.train.fingerprint import cohort_fingerprint
    from mmxai_core.train.metrics import evaluate_predictions
    from mmxai_core.train.predict import RUN_CHECKPOINT_KIND, predict
    from mmxai_core.train.thresholds import select_threshold

    model = trainer.core
    model.load_state_dict(trainer.final_weights(), strict=True)
    bs, workers = cfg.train.eval_batch_size, cfg.data.loader_workers
    refit = _refit_unknown(cfg, rt, model, datasets["train"], say) if cfg.train.unknown_refit > 0 else None
    preds = {s: predict(model, datasets[s], rt, bs, workers) for s in ("val", "test")}
    binary = len(classes) == 2
    if binary:
        kw = {"target_sensitivity": cfg.train.target_sensitivity} if cfg.train.threshold == "target_sensitivity" else {}
        choice = select_threshold(preds["val"].labels, preds["val"].probs, method=cfg.train.threshold, **kw)
        threshold = {"value": choice.threshold, "rule": "class 1 when p(class 1) >= value",
                     "positive_class": classes[1], "method": choice.method, "source": "validation",
                     "validation": choice.to_dict()}
        thr_arg: Any = choice
    else:
        choice, thr_arg = None, None
        threshold = {"value": None, "rule": "argmax", "note": "multi-class: the predicted class is the argmax of "
                     "the probabilities; no threshold is tuned"}
    n_boot, seed = cfg.train.n_boot, cfg.train.seed
    metrics = {s: evaluate_predictions(preds[s].labels, preds[s].probs, preds[s].patient_ids, threshold=thr_arg,
                                       n_boot=n_boot, seed=seed) for s in ("val", "test")}
    metrics = to_jsonable(metrics)
    model_cfg = model.config
    fingerprint = {**cohort, "splits": {s: cohort_fingerprint(manifest, digests, index[s]) for s in SPLIT_NAMES},
                   "note": "sha256 over sorted (case key, class, image sha256, image bytes); no identifiers stored"}
    h, w = cfg.preprocess.output_size_hw
    metadata = {
        "checkpoint_kind": RUN_CHECKPOINT_KIND,
        "notice": RESEARCH_USE_NOTICE,
        "classes": classes,
        "input": {"image": {"channels": 1, "size_hw": [int(h), int(w)], "slices": "variable (padded per batch)",
                            "dtype": "float32", "space": "model space of image_preprocess"},
                  "clinical": {"fields": list(clinical.names), "encoding": "ClinicalPreprocessor (values, missing)"}},
        "clinical_preprocessor": clinical.to_json_dict(),
        "image_preprocess": cfg.preprocess.to_dict(),
        "augment": cfg.augment.to_dict() if cfg.data.augment else None,
        "threshold": threshold,
        "masking_rates": {"clinical_mask_rate": model_cfg.clinical_mask_rate,
                          "image_dropout_rate": model_cfg.image_dropout_rate,
                          "effective": dict(zip(("clinical_mask_rate", "image_dropout_rate"),
                                                model.missingness_rates()))},
        "data_fingerprint": fingerprint,
        "training": {"config": cfg.replace(**{"train.stop_after_epochs": None}).to_dict(),
                     "config_sha256": identity["config_sha256"], "epochs_run": trainer.epoch,
                     "best_epoch": trainer.best_epoch, "best_val_loss": trainer.stopper.best,
                     "stopped_early": trainer.stopped_early, "released_weights": "best validation loss"
                     if cfg.train.restore_best else "last epoch", "device": str(rt.device),
                     "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[rt.amp_dtype],
                     **({} if refit is None else {"unknown_refit": refit})},
        "metrics": metrics,
        "versions": package_versions(),
    }
    if rt.is_main_process:  # no collectives inside: the other ranks wait at the final barrier
        t0 = time.perf_counter()
        metadata["explain"] = cam_scale_entry(model, datasets["val"])
        scale = metadata["explain"]["cam_scale"]
        say(f"Grad-CAM++ scale {'n/a' if scale is None else f'{scale:.4g}'} from "
            f"{metadata['explain']['n_cases']} validation cases ({time.perf_counter() - t0:.1f} s)")
    folder.call(save_checkpoint, folder.checkpoint_dir, model, metadata)
    for s in ("val", "test"):
        folder.write_text(f"predictions/{s}.csv", _predictions_csv(preds[s], classes))
    report = {"notice": RESEARCH_USE_NOTICE, "classes": classes, "threshold": threshold,
              "best_epoch": trainer.best_epoch, "epochs_run": trainer.epoch, **metrics}
    folder.write_json("metrics.json", report)
    folder.call(write_metrics_markdown, metrics["test"], folder / "metrics.md",
                title="mmxai-train: test set (threshold chosen on validation)")
    folder.write_json("run.json", {**run_info, "status": "complete"})
    say(f"checkpoint: {folder.checkpoint_dir}; metrics: {folder / 'metrics.md'}")
    return RunResult("complete", folder.path, folder.checkpoint_dir, cfg, metrics, preds, threshold,
                     trainer.history, trainer.best_epoch, trainer.stopped_early, fingerprint, {})


__all__ = ["run_training", "RunResult", "build_model_config", "package_versions", "metrics_summary",
           "cam_scale_entry", "CAM_SCALE_PERCENTILE", "CAM_SCALE_MAX_CASES"]
