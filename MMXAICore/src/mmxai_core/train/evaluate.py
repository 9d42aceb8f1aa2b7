"""Evaluate a released ``mmxai-train`` checkpoint on a manifest (behind ``mmxai-evaluate``).

Research use, not for diagnosis.

    from mmxai_core.train.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint("runs/r1/checkpoint", "cohort/manifest.csv", out_dir="eval/test",
                                 split="test", splits="runs/r1/splits.json")
    report.result["metrics"]["auc"]          # value, ci_low, ci_high (95%, patient bootstrap)

What is computed (definitions: :mod:`mmxai_core.train.metrics`, :mod:`mmxai_core.train.calibration`):

* accuracy, sensitivity, specificity, F1 and AUC with percentile CIs from a patient-level bootstrap
  (``n_boot`` >= 1000 by default; all cases of a patient are resampled together);
* binary: the **checkpoint's validation threshold** (Youden's J, or the lowest cut reaching a target
  sensitivity, whichever the run was trained with) applied unchanged: a case is class 1 when
  ``p(class 1) >= threshold``. Multi-class: argmax, and sensitivity, specificity, F1 and AUC are macro
  averages over the classes present; the macro AUC is the unweighted mean of the one-vs-rest AUCs of
  ``probs[:, c]`` (scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``);
* calibration: ECE (10 equal-width bins) and Brier score, and a reliability diagram;
* when the manifest has a ``dataset`` column, the same per dataset (``by_dataset``).

Files in ``out_dir``: ``metrics.json`` (everything above plus the inputs' description),
``metrics.csv`` (one row per dataset x metric), ``metrics.md`` (tables), ``reliability.png``,
``predictions.csv`` (per case: case key, patient id, label, probabilities, predicted class).

Bad input is refused before anything is written, with a one-line :class:`~mmxai_core.errors.MMXAIError`:
a folder that is not a checkpoint, a schema or manifest that does not fit the checkpoint (unknown
columns, a schema with other fields, labels outside the checkpoint's classes, none of the clinical
fields present), a split that is unknown or empty. The files are written into a temporary folder beside
``out_dir`` and moved in only when all are complete.

Explanation metrics over the same cases (``xai=True``, ``mmxai-evaluate --xai``) are delegated to
``mmxai_core.explain.evaluate_xai.evaluate_xai`` (see :func:`xai_hook`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.errors import MMXAIError

Log = Callable[[str], None]
OUTPUT_FILES = ("metrics.json", "metrics.csv", "metrics.md", "reliability.png", "predictions.csv")
XAI_MODULE = "mmxai_core.explain.evaluate_xai"


class EvaluationInputError(MMXAIError):
    """The checkpoint, manifest, schema or split given to an evaluation cannot be used together."""


@dataclasses.dataclass
class EvaluationReport:
    """What :func:`evaluate_checkpoint` produced: ``result`` (the metrics.json content), ``predictions``
    (:class:`~mmxai_core.train.predict.Predictions`), ``files`` (name -> path), ``timings`` (seconds)."""

    result: dict[str, Any]
    predictions: Any
    files: dict[str, Path]
    timings: dict[str, float]


# ---------------------------------------------------------------------------------------------- xai hook
def xai_hook() -> Callable[..., dict]:
    """The explanation-metrics function ``evaluate_xai`` of :data:`XAI_MODULE`, or EvaluationInputError.

    Contract for that function (called after the predictions, before any file is written)::

        evaluate_xai(checkpoint, dataset, predictions, *, runtime, out_dir, log) -> dict

    ``checkpoint`` a :class:`~mmxai_core.train.predict.RunCheckpoint`, ``dataset`` the
    :class:`~mmxai_core.data.dataset.MultimodalDataset` of the evaluated cases, ``predictions`` their
    :class:`~mmxai_core.train.predict.Predictions`, ``out_dir`` the (temporary) output folder where it may
    write its own files. The JSON-ready dict it returns is stored under ``"xai"`` in ``metrics.json``.
    """
    import importlib

    try:
        module = importlib.import_module(XAI_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name not in (XAI_MODULE, XAI_MODULE.rsplit(".", 1)[0]):
            raise
        raise EvaluationInputError("--xai: explanation metrics are not available yet in this version of "
                                   f"mmxai-core ({XAI_MODULE} is missing)") from None
    fn = getattr(module, "evaluate_xai", None)
    if fn is None:
        raise EvaluationInputError(f"--xai: explanation metrics are not available yet ({XAI_MODULE} has no "
                                   "evaluate_xai)")
    return fn


# ---------------------------------------------------------------------------------------------- inputs
def _schema_signature(schema: Any) -> list[dict]:
    d = schema.to_dict()
    return [{k: f.get(k) for k in ("name", "type", "categories")} for f in d.get("fields", [])]


def check_schema(given: Any, expected: Any, where: str) -> None:
    """Refuse a schema whose fields (names, types, categories, order) differ from the checkpoint's."""
    a, b = _schema_signature(given), _schema_signature(expected)
    if a == b:
        return
    names_a, names_b = [f["name"] for f in a], [f["name"] for f in b]
    if names_a != names_b:
        extra = [n for n in names_a if n not in names_b]
        lacking = [n for n in names_b if n not in names_a]
        what = "; ".join(x for x in (f"not in the checkpoint: {', '.join(extra)}" if extra else "",
                                      f"missing: {', '.join(lacking)}" if lacking else "",
                                      "different order" if not extra and not lacking else "") if x)
        raise EvaluationInputError(f"{where}: the schema's clinical fields do not match the checkpoint's ({what})")
    bad = [fa["name"] for fa, fb in zip(a, b) if fa != fb]
    raise EvaluationInputError(f"{where}: field(s) {', '.join(bad)} differ from the checkpoint's schema "
                               "(type or categories)")


def checkpoint_schema(ckpt: Any) -> Any:
    """The checkpoint's clinical schema with the checkpoint's class names (labels are read against them)."""
    from mmxai_core.data.schema import ClinicalSchema

    d = ckpt.clinical.schema.to_dict()
    d["classes"] = list(ckpt.classes)
    return ClinicalSchema.from_dict(d)


def select_rows(manifest: Any, split: str | None, splits: Any) -> np.ndarray:
    """Row positions to evaluate: all rows, or the rows of ``split`` from a split file or the manifest's
    ``split`` column. EvaluationInputError when the split is unknown or empty."""
    from mmxai_core.data.manifest import SPLIT_NAMES
    from mmxai_core.data.splits import load_splits

    n = len(manifest)
    if split is None:
        if splits is not None:
            raise EvaluationInputError("--splits needs --split (train, val or test)")
        rows = np.arange(n, dtype=np.int64)
        where = str(manifest.path)
    else:
        name = {"validation": "val"}.get(split, split)
        if name not in SPLIT_NAMES:
            raise EvaluationInputError(f"--split: unknown split {split!r}; use {', '.join(SPLIT_NAMES)}")
        if splits is not None:
            obj = load_splits(splits) if isinstance(splits, (str, os.PathLike)) else splits
            rows = obj.indices(manifest)[name]
            where = f"{obj.source or 'the splits'}"
        else:
            column = manifest.table["split"]
            if column.isna().all():
                raise EvaluationInputError(f"{manifest.path}: --split {split} needs a split file (--splits) or a "
                                           "'split' column in the manifest")
            rows = np.flatnonzero((column == name).to_numpy()).astype(np.int64)
            where = f"{manifest.path} (split column)"
        split = name
    if rows.size == 0:
        raise EvaluationInputError(f"{where}: split '{split}' is empty; nothing to evaluate")
    return rows


def _check_columns(manifest: Any, ckpt: Any) -> list[str]:
    """Warnings for clinical fields without a manifest column; error when none is present."""
    fields = list(ckpt.clinical.names)
    if not fields or not getattr(ckpt.model, "uses_clinical", True):
        return []
    with_column = set(manifest.table.columns)
    absent = [f for f in fields if f not in with_column]
    if len(absent) == len(fields):
        raise EvaluationInputError(f"{manifest.path}: none of the checkpoint's clinical fields "
                                   f"({', '.join(fields)}) is a column of the manifest")
    if absent:
        return [f"clinical field(s) without a manifest column, treated as unknown for every case: "
                f"{', '.join(absent)}"]
    return []


def _threshold_arg(ckpt: Any) -> Any:
    """What evaluate_predictions takes: the validation choice (dict with 'threshold') or None (multi-class)."""
    if ckpt.threshold is None:
        return None
    thr = ckpt.metadata.get("threshold") or {}
    choice = thr.get("validation")
    if isinstance(choice, dict) and choice.get("threshold") is not None:
        return {**choice, "threshold": ckpt.threshold}
    return {"threshold": ckpt.threshold, "method": thr.get("method", "given")}


# ---------------------------------------------------------------------------------------------- main
def evaluate_checkpoint(model_dir: str | os.PathLike, manifest: str | os.PathLike, out_dir: str | os.PathLike,
                        schema: str | os.PathLike | None = None, *, split: str | None = None, splits: Any = None,
                        n_boot: int = 1000, seed: int = 0, ci_level: float = 0.95, n_bins: int = 10,
                        batch_size: int = 16, device: str = "auto", threads: int | None = None,
                        cache_dir: str | os.PathLike | None = None, workers: int = 0, xai: bool = False,
                        xai_options: dict | None = None, runtime: Any = None,
                        log: Log | None = None) -> EvaluationReport:
    """Evaluate the checkpoint in ``model_dir`` (a run folder or its ``checkpoint/``) on ``manifest``.

    Args:
        schema: optional; must match the checkpoint's clinical schema (the checkpoint's own is used).
        split, splits: evaluate only the rows of ``split`` (``train`` | ``val`` | ``test``) from the split
            file ``splits`` (e.g. the run's ``splits.json``) or from the manifest's ``split`` column.
        n_boot, seed, ci_level: patient bootstrap; n_bins: calibration bins.
        cache_dir: keep preprocessed images there (reused by later evaluations).
        xai: also compute explanation metrics (:func:`xai_hook`); ``xai_options`` (e.g. ``metrics``,
            ``max_cases``) are passed to it as keyword arguments.

    Raises:
        MMXAIError (one line) for bad input; nothing is written then.
    """
    from mmxai_core.data.dataset import ImageStore, MultimodalDataset
    from mmxai_core.data.manifest import load_manifest
    from mmxai_core.data.schema import load_schema
    from mmxai_core.train.device import make_runtime
    from mmxai_core.train.metrics import evaluate_predictions
    from mmxai_core.train.predict import load_run_checkpoint, predict

    say = log or (lambda text: None)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EvaluationInputError(f"{out}: exists and is not a folder")
    xai_fn = xai_hook() if xai else None
    path = Path(model_dir)
    if not path.exists():
        raise EvaluationInputError(f"{path}: checkpoint folder not found")
    looks_like = any((path / n).exists() for n in ("metadata.json", "weights.safetensors", "checkpoint"))
    if not path.is_dir() or not looks_like:
        raise EvaluationInputError(f"{path}: not an MMXAI checkpoint folder (expected weights.safetensors and "
                                   "metadata.json, or a run folder holding checkpoint/)")
    rt = runtime or make_runtime(device, "off", threads)
    ckpt = load_run_checkpoint(path, device=rt.device)
    eval_schema = checkpoint_schema(ckpt)
    if schema is not None:
        check_schema(load_schema(schema), eval_schema, str(schema))
    manifest_obj = load_manifest(manifest, eval_schema, min_cases_per_class=0)
    warnings = _check_columns(manifest_obj, ckpt)
    rows = select_rows(manifest_obj, split, splits)
    sub = manifest_obj.subset(rows)
    uses_image = bool(getattr(ckpt.model, "uses_image", True))
    store = ImageStore(ckpt.image_preprocess, cache_dir=cache_dir) if uses_image else None
    data = MultimodalDataset(sub, ckpt.clinical.transform(sub.records), store, use_images=uses_image)
    t0 = time.perf_counter()
    if uses_image:
        stats = data.load_images(workers=workers)
        say(f"images: {stats.computed} preprocessed, {stats.from_disk} from the cache "
            f"({time.perf_counter() - t0:.1f} s)")
    timings["preprocess_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = predict(ckpt.model, data, rt, batch_size=batch_size)
    timings["predict_s"] = time.perf_counter() - t0
    names = [d for d in sub.table["dataset"].tolist()]
    datasets = (np.asarray(["(none)" if d is None else str(d) for d in names], dtype=object)[preds.indices]
                if any(d is not None for d in names) else None)
    t0 = time.perf_counter()
    result = evaluate_predictions(preds.labels, preds.probs, preds.patient_ids, threshold=_threshold_arg(ckpt),
                                  n_boot=n_boot, seed=seed, dataset=datasets, ci_level=ci_level, n_bins=n_bins)
    timings["metrics_s"] = time.perf_counter() - t0
    result["warnings"] = warnings + list(result.get("warnings", []))
    result["classes"] = list(ckpt.classes)
    result["threshold"]["rule"] = ((ckpt.metadata.get("threshold") or {}).get("rule")
                                   or ("argmax" if ckpt.threshold is None else "class 1 when p(class 1) >= value"))
    result["inputs"] = {"checkpoint": str(path), "manifest": str(manifest_obj.path),
                        "split": {"validation": "val"}.get(split, split) if split else None,
                        "splits": str(splits) if isinstance(splits, (str, os.PathLike)) else None,
                        "checkpoint_variant": getattr(ckpt.model, "variant", None),
                        "checkpoint_test_metrics": _summary_metrics(ckpt.metadata)}
    staging = _staging_folder(out)
    try:
        if xai_fn is not None:
            t0 = time.perf_counter()
            result["xai"] = xai_fn(ckpt, data, preds, runtime=rt, out_dir=staging, log=say, **(xai_options or {}))
            timings["xai_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - t_all
        result["timings"] = dict(timings)
        _write_outputs(staging, result, preds, ckpt)
        files = _move_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return EvaluationReport(result=result, predictions=preds, files=files, timings=timings)


def _summary_metrics(meta: dict) -> dict | None:
    test = (meta.get("metrics") or {}).get("test") if isinstance(meta.get("metrics"), dict) else None
    if not isinstance(test, dict) or "metrics" not in test:
        return None
    return {k: v.get("value") for k, v in test["metrics"].items() if isinstance(v, dict)}


def _staging_folder(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.eval-", dir=out.parent))


def _write_outputs(folder: Path, result: dict, preds: Any, ckpt: Any) -> None:
    from mmxai_core.report.plots import plot_reliability
    from mmxai_core.report.tables import write_metrics_csv, write_metrics_json, write_metrics_markdown
    from mmxai_core.train.run import _predictions_csv

    write_metrics_json(result, folder / "metrics.json")
    write_metrics_csv(result, folder / "metrics.csv")
    split = result["inputs"].get("split")
    title = f"mmxai-evaluate: {split + ' split' if split else 'all cases'} of {Path(result['inputs']['manifest']).name}"
    write_metrics_markdown(result, folder / "metrics.md", title=title)
    plot_reliability(result["calibration"], folder / "reliability.png")
    text = _predictions_csv(preds, list(ckpt.classes))
    decided = ckpt.decide(preds.probs)
    lines = text.splitlines()
    lines[0] += ",predicted"
    lines[1:] = [f"{line},{ckpt.classes[k]}" for line, k in zip(lines[1:], decided)]
    from mmxai_core.utils.atomic import write_text_atomic

    write_text_atomic(folder / "predictions.csv", "\n".join(lines) + "\n")


def _move_in(staging: Path, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for item in sorted(staging.iterdir()):
        dest = out / item.name
        if dest.is_dir() and item.is_dir():
            shutil.rmtree(dest)
        os.replace(item, dest)
        files[item.name] = dest
    return files


__all__ = ["evaluate_checkpoint", "EvaluationReport", "EvaluationInputError", "xai_hook", "check_schema",
           "checkpoint_schema", "select_rows", "OUTPUT_FILES", "XAI_MODULE"]
