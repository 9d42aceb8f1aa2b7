"""Explanation-quality metrics over the cases of an evaluated split (behind ``mmxai-evaluate --xai``).

Research use, not for diagnosis.

    evaluate_xai(checkpoint, dataset, predictions, *, runtime, out_dir, log,
                 metrics=None, max_cases=None, n_boot=1000, seed=0, progress_bar=True) -> dict

Called by :func:`mmxai_core.train.evaluate.evaluate_checkpoint` with the loaded
:class:`~mmxai_core.train.predict.RunCheckpoint`, the :class:`~mmxai_core.data.dataset.MultimodalDataset`
of the evaluated cases (images already preprocessed) and their
:class:`~mmxai_core.train.predict.Predictions`. Per case (model space, explained class: the positive
class of a binary model, else the predicted class) it computes Grad-CAM++ (upsampled raw map), the exact
clinical Shapley values and the image/clinical split once, then the asked-for metrics of
:mod:`mmxai_core.explain.metrics`:

============= =========================================================================================
stability     ``gradcam_stability`` (SSIM under noise and rigid transforms), ``shapley_stability``
              (Pearson under clinical jitter)
faithfulness  ``image_deletion`` (AOPC of the Grad-CAM++ order vs random orders), ``clinical_deletion``
              (AOPC of the Shapley order vs random orders; cases with at least one known field)
sanity        ``sanity_cascade`` per case: ``headline`` (everything above the CAM layer randomised),
              ``final`` (everything randomised), ``lowest``
localisation  ``localisation`` (pointing game, energy in the mask, IoU, each with its analytic random
              baseline) -- only for manifest rows with a mask, sent to model space with the case's
              PreprocessRecord (:func:`~mmxai_core.data.image_preprocess.to_model_space`)
coherence     ``case_coherence`` per case; with a ``ground_truth.json`` beside the manifest, the AUROC of
              separating its discordant cases (``coherence_auroc``)
============= =========================================================================================

Volumes (more than one slice) use fewer repeats (:data:`SETTINGS`) to bound the cost per case. The mean
|Shapley value| of each clinical field over the cases (unknown = 0, the Shapley value of an absent
player) is ranked; fields the ground truth lists as noise are marked.

Files written to ``out_dir`` (atomically): ``xai_cases.csv`` (one row per case), ``xai_summary.json``
(returned too, stored under ``"xai"`` in metrics.json), ``xai_summary.md`` (metric | mean | 95% CI |
baseline; CIs from a patient bootstrap of the per-case values), ``xai_details.json`` (every per-case
metric dict) and the figures ``xai_deletion.png``, ``xai_stability.png``, ``xai_sanity.png``,
``xai_shapley_fields.png``, ``xai_localisation.png`` (those with data).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.errors import MMXAIError
from mmxai_core.utils.mapping import nested_get as _get

#: Metric groups ``--xai-metrics`` may name (default: all).
XAI_METRICS = ("stability", "faithfulness", "sanity", "localisation", "coherence")

#: Repeats per case: 2-D images vs volumes (S > 1 slices; fewer, to bound the cost per case).
SETTINGS: dict[str, dict[str, int]] = {
    "2d": {"stability_k": 8, "deletion_n_random_image": 8, "deletion_n_random_clinical": 16,
           "localisation_n_random": 16, "batch_size": 16},
    "volume": {"stability_k": 4, "deletion_n_random_image": 4, "deletion_n_random_clinical": 8,
               "localisation_n_random": 4, "batch_size": 4},
}
CI_LEVEL = 0.95

FILES = ("xai_cases.csv", "xai_summary.json", "xai_summary.md", "xai_details.json")

# (column, label, metric group, baseline column or None, direction note)
SUMMARY_ROWS: tuple[tuple[str, str, str, str | None, str], ...] = (
    ("gradcam_ssim_noise", "Grad-CAM++ SSIM under noise", "stability", None, "1 = unchanged"),
    ("gradcam_ssim_rigid", "Grad-CAM++ SSIM under rigid transforms", "stability", None, "1 = unchanged"),
    ("shapley_pearson", "Shapley Pearson under clinical jitter", "stability", None, "1 = unchanged"),
    ("image_aopc", "image deletion AOPC", "faithfulness", "image_aopc_random", "higher than random = faithful"),
    ("clinical_aopc", "clinical deletion AOPC", "faithfulness", "clinical_aopc_random",
     "higher than random = faithful"),
    ("sanity_ssim_headline", "sanity SSIM, above CAM layer randomised (headline)", "sanity", None,
     "trained = 1; low (< 0.5) = map depends on learned layers"),
    ("sanity_ssim_final", "sanity SSIM, all randomised", "sanity", None, "trained = 1"),
    ("sanity_ssim_lowest", "sanity SSIM, lowest stage", "sanity", None, "trained = 1"),
    ("pointing_game", "pointing game", "localisation", "pointing_game_baseline", "analytic random map"),
    ("energy_in_mask", "energy inside the mask", "localisation", "energy_in_mask_baseline", "analytic random map"),
    ("iou", "IoU (top-n, n = mask size)", "localisation", "iou_baseline", "analytic random set"),
    ("coherence", "cross-modal coherence", "coherence", None, "low = discordant"),
)


class XAIEvaluationError(MMXAIError):
    """Bad ``--xai`` options or a model that cannot be explained (one line)."""


def parse_xai_metrics(text: str | Sequence[str] | None) -> list[str]:
    """``"stability,sanity"`` (or a list) -> checked names in :data:`XAI_METRICS` order; None/empty = all."""
    if text is None:
        return list(XAI_METRICS)
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = {p.strip().lower() for p in parts if p and p.strip()}
    unknown = sorted(n for n in names if n not in XAI_METRICS)
    if unknown:
        raise XAIEvaluationError(f"--xai-metrics: unknown metric '{unknown[0]}'; choose from "
                                 f"{', '.join(XAI_METRICS)}")
    if not names:
        raise XAIEvaluationError(f"--xai-metrics: no metric named; choose from {', '.join(XAI_METRICS)}")
    return [n for n in XAI_METRICS if n in names]


# ------------------------------------------------------------------------------------------ helpers
def _f(x: Any) -> float:
    """float or NaN."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v




def _jsonable(obj: Any) -> Any:
    from mmxai_core.explain.metrics._common import jsonable

    return jsonable(obj)


def patient_bootstrap_mean(values: Sequence[float], patients: Sequence[str], *, n_boot: int = 1000, seed: int = 0,
                           level: float = CI_LEVEL) -> dict[str, Any]:
    """Mean of the finite per-case ``values`` with a percentile CI from resampling patients (all cases of a
    drawn patient enter together); ``{"mean", "ci_low", "ci_high", "n_cases", "n_patients"}``."""
    v = np.asarray([_f(x) for x in values], dtype=np.float64)
    p = np.asarray([str(x) for x in patients], dtype=object)
    ok = np.isfinite(v)
    out: dict[str, Any] = {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_cases": int(ok.sum()),
                           "n_patients": 0}
    if not ok.any():
        return out
    v, p = v[ok], p[ok]
    uniq, inv = np.unique(p, return_inverse=True)
    sums = np.bincount(inv, weights=v, minlength=uniq.size)
    counts = np.bincount(inv, minlength=uniq.size).astype(np.float64)
    out.update(mean=float(v.mean()), n_patients=int(uniq.size))
    if n_boot > 0 and uniq.size >= 2:
        rng = np.random.default_rng(int(seed))
        draws = rng.integers(0, uniq.size, size=(int(n_boot), uniq.size))
        boots = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
        a = (1.0 - level) / 2.0
        out["ci_low"], out["ci_high"] = (float(q) for q in np.quantile(boots, [a, 1.0 - a]))
    return out


def _ground_truth(manifest_path: Path | None) -> tuple[dict | None, Path | None]:
    if manifest_path is None:
        return None, None
    path = Path(manifest_path).parent / "ground_truth.json"
    if not path.is_file():
        return None, None
    try:
        return json.loads(path.read_text(encoding="utf-8")), path
    except (OSError, ValueError):
        return None, path


def _noise_fields(gt: Mapping | None) -> set[str]:
    if not gt:
        return set()
    fields = gt.get("fields")
    out = {n for n, f in fields.items() if isinstance(f, Mapping) and f.get("noise")} if isinstance(fields, Mapping) \
        else set()
    listed = _get(gt, "label_model", "noise_fields")
    if isinstance(listed, (list, tuple)):
        out |= {str(n) for n in listed}
    return out


def _model_space_mask(ckpt: Any, image_path: str, mask_path: str, shape: tuple[int, ...]) -> np.ndarray:
    """The lesion mask of one case in model space (the case's PreprocessRecord from re-preprocessing it)."""
    from mmxai_core.data.image_preprocess import ImagePreprocessor, to_model_space
    from mmxai_core.explain.pipeline import read_case_image
    from mmxai_core.io import read_image

    image = read_case_image(image_path)
    _, record = ImagePreprocessor(ckpt.image_preprocess).apply(image)
    mask = np.asarray(to_model_space(read_image(mask_path), record)) > 0.5
    if mask.shape != tuple(shape):
        raise ValueError(f"mask in model space has shape {mask.shape}, the image {tuple(shape)}")
    return mask


# ------------------------------------------------------------------------------------------ one case
def _case_metrics(model: Any, ckpt: Any, item: Any, target: int, metrics: Sequence[str], mask: np.ndarray | None,
                  seed: int) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """(CSV row values, full metric dicts, ShapleyResult) of one case."""
    import torch

    from mmxai_core.explain.gradcam import gradcam_plus_plus
    from mmxai_core.explain.modality import split_of_game
    from mmxai_core.explain.shapley import shapley_of_game
    from mmxai_core.explain.value_function import CoalitionValue

    dev = next(model.parameters()).device
    images = item.image[None].to(dev)                       # (1, S, 1, H, W)
    s = int(images.shape[1])
    kind = "volume" if s > 1 else "2d"
    st = SETTINGS[kind]
    smask = torch.ones(1, s, dtype=torch.bool, device=dev)
    values = item.clin_values[None].to(dev)
    missing = item.clin_missing[None].to(dev)
    row: dict[str, Any] = {"kind": kind, "n_slices": s}
    details: dict[str, Any] = {}

    cam = gradcam_plus_plus(model, images, values, missing, slice_mask=smask, target_class=int(target))
    heat_raw = cam.upsampled()[0]                            # (S, H, W) raw map at input resolution
    vf = CoalitionValue(model, images, values, missing, slice_mask=smask, target=int(target), encoding=cam.encoding)
    shapley = shapley_of_game(vf, seed=seed)
    split = split_of_game(vf)
    row["p_target"] = float(shapley.prediction)
    row["phi_image"], row["phi_clinical"] = float(split.image), float(split.clinical)
    known = bool(np.asarray(shapley.known).any())

    if "stability" in metrics:
        from mmxai_core.explain.metrics.stability import (
            gradcam_stability,
            shapley_stability,
        )

        g = gradcam_stability(model, images, values, missing, slice_mask=smask, target_class=int(target),
                              k=st["stability_k"], seed=seed, batch_size=st["batch_size"])
        c = shapley_stability(model, images, values, missing, slice_mask=smask, target=int(target),
                              k=st["stability_k"], seed=seed) if known else \
            {"skipped": "no known clinical field"}
        row["gradcam_ssim_noise"] = _get(g, "noise", "mean")
        row["gradcam_ssim_rigid"] = _get(g, "rigid", "mean")
        row["shapley_pearson"] = _get(c, "pearson", "mean")
        details["stability"] = {"gradcam": g, "shapley": c}
    if "faithfulness" in metrics:
        from mmxai_core.explain.metrics.faithfulness import (
            clinical_deletion,
            image_deletion,
        )

        im = image_deletion(model, images, values, missing, attribution=heat_raw, slice_mask=smask,
                            target_class=int(target), n_random=st["deletion_n_random_image"], seed=seed,
                            batch_size=st["batch_size"])
        row["image_aopc"] = _get(im, "attributed", "aopc")
        row["image_aopc_random"] = _get(im, "random", "aopc", "mean")
        cl: dict[str, Any] = {"skipped": "no known clinical field: nothing to delete"}
        if known:
            cl = clinical_deletion(model, images, values, missing, shapley=shapley, slice_mask=smask,
                                   n_random=st["deletion_n_random_clinical"], seed=seed)
            row["clinical_aopc"] = _get(cl, "attributed", "aopc")
            row["clinical_aopc_random"] = _get(cl, "random", "aopc", "mean")
        details["faithfulness"] = {"image": im, "clinical": cl}
    if "sanity" in metrics:
        from mmxai_core.explain.metrics.sanity import sanity_cascade

        sc = sanity_cascade(model, images, values, missing, slice_mask=smask, target_class=int(target), seed=seed)
        row["sanity_ssim_headline"] = _get(sc, "headline", "ssim_mean")
        row["sanity_headline_stage"] = _get(sc, "headline", "stage")
        row["sanity_ssim_final"] = _get(sc, "final", "ssim_mean")
        row["sanity_ssim_lowest"] = _get(sc, "lowest", "ssim_mean")
        row["sanity_lowest_stage"] = _get(sc, "lowest", "stage")
        details["sanity"] = sc
    if "localisation" in metrics and mask is not None:
        from mmxai_core.explain.metrics.localisation import localisation

        lo = localisation(heat_raw.numpy(), mask, n_random=st["localisation_n_random"], seed=seed)
        row["localisation_defined"] = bool(lo.get("defined"))
        for key in ("pointing_game", "energy_in_mask", "iou"):
            row[key] = _get(lo, key, "value")
            row[f"{key}_baseline"] = _get(lo, key, "baseline")
        details["localisation"] = lo
    if "coherence" in metrics:
        from mmxai_core.explain.metrics.coherence import case_coherence

        co = case_coherence(model, images, values, missing, slice_mask=smask, target=int(target), split=split,
                            shapley=shapley, cam=cam)
        row["coherence"] = co.get("coherence")
        row["coherence_modality_agreement"] = _get(co, "components", "modality_agreement")
        row["coherence_spatial"] = _get(co, "components", "spatial_colocation")
        details["coherence"] = co
    return row, details, shapley


# ------------------------------------------------------------------------------------------ the split
def evaluate_xai(checkpoint: Any, dataset: Any, predictions: Any, *, runtime: Any = None,
                 out_dir: str | Path, log: Callable[[str], None] | None = None,
                 metrics: str | Sequence[str] | None = None, max_cases: int | None = None, n_boot: int = 1000,
                 seed: int = 0, progress_bar: bool = True) -> dict[str, Any]:
    """Explanation-quality metrics of the first ``max_cases`` cases (default all) of ``dataset``.

    Args:
        checkpoint: :class:`~mmxai_core.train.predict.RunCheckpoint` (its model on the runtime's device).
        dataset: the evaluated :class:`~mmxai_core.data.dataset.MultimodalDataset` (images loaded).
        predictions: their :class:`~mmxai_core.train.predict.Predictions` (dataset order).
        runtime: the evaluation's Runtime (torch threads are already set by it; not changed here).
        out_dir: folder for the files (module docstring).
        metrics: names from :data:`XAI_METRICS` (comma string or list); default all.
        max_cases: explain only the first N cases in manifest order.
        n_boot, seed: patient bootstrap of the per-case means; seed of every metric.

    Returns:
        The JSON-ready summary (also ``xai_summary.json``).

    Raises:
        XAIEvaluationError: bad options, or a model without an image branch.
    """
    import torch
    from tqdm.auto import tqdm

    from mmxai_core.utils.atomic import write_json_atomic, write_text_atomic

    say = log or (lambda text: None)
    names = parse_xai_metrics(metrics)
    if max_cases is not None and int(max_cases) < 1:
        raise XAIEvaluationError(f"--xai-max-cases must be >= 1, got {max_cases}")
    model = checkpoint.model
    if not getattr(model, "uses_image", True) or not getattr(dataset, "use_images", True):
        raise XAIEvaluationError(f"--xai: a '{getattr(model, 'variant', '?')}' model has no image branch: there is "
                                 "no image explanation to evaluate")
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_all = len(dataset)
    n = n_all if max_cases is None else min(n_all, int(max_cases))
    classes = list(checkpoint.classes)
    decided = np.asarray(checkpoint.decide(predictions.probs))
    pos = {int(ix): j for j, ix in enumerate(np.asarray(predictions.indices))}
    table = dataset.manifest.table
    masks = [None if m is None or (isinstance(m, float) and math.isnan(m)) or str(m) == "" else str(m)
             for m in table["mask"].tolist()] if "mask" in table.columns else [None] * n_all
    gt, gt_path = _ground_truth(getattr(dataset.manifest, "path", None))
    noise = _noise_fields(gt)
    field_names: list[str] | None = None
    rows: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []
    phis: list[np.ndarray] = []
    knowns: list[np.ndarray] = []
    errors: list[str] = []
    bar = tqdm(total=n, desc="mmxai-evaluate --xai", unit="case", file=sys.stderr, disable=not progress_bar,
               dynamic_ncols=True)
    try:
        for i in range(n):
            tc = time.perf_counter()
            j = pos.get(i)
            target = 1 if len(classes) == 2 else int(decided[j] if j is not None else 0)
            row: dict[str, Any] = {"case": str(dataset.keys[i]), "patient_id": str(dataset.patient_ids[i]),
                                   "dataset": table["dataset"].iloc[i] if "dataset" in table.columns else None,
                                   "label": classes[int(dataset.labels[i])], "target": classes[target],
                                   "has_mask": masks[i] is not None, "error": ""}
            try:
                mask = None
                item = dataset[i]
                if "localisation" in names and masks[i] is not None:
                    mask = _model_space_mask(checkpoint, dataset.paths[i], masks[i],
                                             tuple(item.image[:, 0].shape))
                part, det, shapley = _case_metrics(model, checkpoint, item, target, names, mask, seed)
                row.update(part)
                field_names = list(shapley.field_names)
                phis.append(np.asarray(shapley.values, dtype=np.float64))
                knowns.append(np.asarray(shapley.known, dtype=bool))
                for f, v in zip(shapley.field_names, shapley.values):
                    row[f"phi_{f}"] = float(v)
                details.append({"case": row["case"], "patient_id": row["patient_id"], **det})
            except MMXAIError:
                raise
            except Exception as exc:  # noqa: BLE001 -- one failing case must not cost the split; it is reported
                msg = f"{dataset.names[i]}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                row["error"] = msg
                errors.append(msg)
                say(f"xai: {msg}")
            row["seconds"] = time.perf_counter() - tc
            rows.append(row)
            bar.update(1)
    finally:
        bar.close()

    summary = _summarise(rows, details, names, phis, knowns, field_names, noise, gt, gt_path, n_boot, seed)
    summary.update(n_cases=n, n_cases_available=n_all, max_cases=None if max_cases is None else int(max_cases),
                   torch_threads=int(torch.get_num_threads()),
                   device=str(getattr(runtime, "device", next(model.parameters()).device)),
                   errors=errors, seconds=time.perf_counter() - t0)
    summary = _jsonable(summary)
    files = dict(zip(FILES, FILES))
    write_text_atomic(out / "xai_cases.csv", _cases_csv(rows))
    write_json_atomic(out / "xai_details.json", _jsonable({"notice": RESEARCH_USE_NOTICE, "cases": details}))
    files.update(_plots(out, details, summary))
    summary["files"] = sorted(files.values())
    write_json_atomic(out / "xai_summary.json", summary)
    write_text_atomic(out / "xai_summary.md", _markdown(summary))
    say(f"xai: {n} case(s), metrics {', '.join(names)} ({summary['seconds']:.1f} s)")
    return summary


# ------------------------------------------------------------------------------------------ summary
def _parameters(details: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], names: Sequence[str]
                ) -> dict[str, Any]:
    """Every metric's parameters as the metric reported them, per image kind (first case of each kind)."""
    out: dict[str, Any] = {"settings_by_kind": SETTINGS, "seed_note": "every metric seeded with the same seed",
                           "explained_class": "the positive class (class 1) of a binary model, else the predicted "
                                              "class", "space": "model input space (preprocessed image)"}
    paths = {"stability": (("gradcam",), ("shapley",)), "faithfulness": (("image",), ("clinical",)),
             "sanity": ((),), "localisation": ((),), "coherence": ((),)}
    for name in names:
        per_kind: dict[str, Any] = {}
        for det, row in zip(details, (r for r in rows if not r.get("error"))):
            kind = row.get("kind")
            if kind in per_kind or name not in det:
                continue
            entry = {}
            for p in paths[name]:
                part = _get(det[name], *p) if p else det[name]
                params = _get(part, "parameters")
                if params is not None:
                    entry["/".join(p) or name] = params
            if entry:
                per_kind[kind] = entry
        out[name] = per_kind
    out["localisation"] = {**out.get("localisation", {}), "mask": "manifest mask sent to model space with the "
                           "case's PreprocessRecord (nearest neighbour); only cases with a mask",
                           "heatmap": "Grad-CAM++ raw map upsampled to the model input"} \
        if "localisation" in names else out.get("localisation")
    out["bootstrap"] = None
    return out


def _summarise(rows, details, names, phis, knowns, field_names, noise, gt, gt_path, n_boot, seed) -> dict:
    from mmxai_core.explain.metrics.localisation import summarise_localisation

    ok = [r for r in rows if not r.get("error")]
    patients = [r["patient_id"] for r in ok]
    table = []
    for col, label, group, base_col, note in SUMMARY_ROWS:
        if group not in names:
            continue
        vals = [r.get(col) for r in ok]
        if not any(math.isfinite(_f(v)) for v in vals):
            continue
        stat = patient_bootstrap_mean(vals, patients, n_boot=n_boot, seed=seed)
        base = None
        if base_col:
            bv = np.array([_f(r.get(base_col)) for r in ok if math.isfinite(_f(r.get(col)))])
            base = float(np.nanmean(bv)) if np.isfinite(bv).any() else None
        table.append({"metric": col, "label": label, "group": group, **stat, "baseline": base,
                      "baseline_kind": ("mean over the same cases" if base_col else None), "note": note})
    out: dict[str, Any] = {
        "notice": RESEARCH_USE_NOTICE, "metrics": list(names), "table": table,
        "ci": {"level": CI_LEVEL, "method": "patient bootstrap (patients resampled with replacement, all their "
               "cases together), percentile interval", "n_boot": int(n_boot), "seed": int(seed)},
    }
    params = _parameters(details, rows, names)
    params["bootstrap"] = out["ci"]
    out["parameters"] = params
    if "localisation" in names:
        loc = [d["localisation"] for d in details if "localisation" in d]
        out["localisation"] = summarise_localisation(loc) if loc else {"n_cases": 0, "n_defined": 0,
                                                                      "note": "no case has a mask"}
    if "coherence" in names:
        out["coherence_auroc"] = _coherence_auroc(ok, gt, gt_path, n_boot, seed)
    if field_names is not None and phis:
        out["clinical_fields"] = _field_ranking(field_names, np.array(phis), np.array(knowns), noise, gt is not None)
    return out


def _coherence_auroc(ok, gt, gt_path, n_boot, seed) -> dict[str, Any]:
    if gt is None:
        return {"auroc": None, "reason": "no ground_truth.json beside the manifest"}
    from mmxai_core.explain.metrics.coherence import coherence_auroc, discordant_flags

    try:
        flags = discordant_flags(gt, [r["patient_id"] for r in ok])
    except (ValueError, KeyError, TypeError) as exc:
        return {"auroc": None, "reason": f"ground_truth.json unusable: {exc}", "ground_truth": str(gt_path)}
    res = coherence_auroc([_f(r.get("coherence")) for r in ok], flags, n_bootstrap=n_boot, seed=seed)
    res["ground_truth"] = str(gt_path)
    return res


def _field_ranking(names, phis: np.ndarray, knowns: np.ndarray, noise: set[str], have_gt: bool) -> dict[str, Any]:
    mean_abs = np.abs(phis).mean(axis=0)
    n_known = knowns.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_known = np.where(n_known > 0, np.abs(phis).sum(axis=0) / np.maximum(n_known, 1), np.nan)
    order = np.argsort(-mean_abs, kind="stable")
    ranking = [{"rank": r + 1, "field": names[k], "mean_abs_shapley": float(mean_abs[k]),
                "mean_abs_shapley_when_known": float(mean_known[k]), "n_known": int(n_known[k]),
                "noise": (names[k] in noise) if have_gt else None} for r, k in enumerate(order)]
    out: dict[str, Any] = {"definition": "mean over the cases of |Shapley value| (an unknown field counts 0, its "
                                         "Shapley value), probability of the explained class",
                           "ranking": ranking, "noise_fields": sorted(noise) if have_gt else None}
    if have_gt and noise:
        inf = [e["mean_abs_shapley"] for e in ranking if not e["noise"]]
        noi = [e["mean_abs_shapley"] for e in ranking if e["noise"]]
        out["informative_above_noise"] = bool(inf and noi and min(inf) > max(noi))
    return out


# ------------------------------------------------------------------------------------------ writing
def _cases_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    first = ["case", "patient_id", "dataset", "label", "target", "kind", "n_slices", "has_mask", "p_target",
             "phi_image", "phi_clinical"]
    metric_cols = [c for c, *_ in SUMMARY_ROWS]
    extra = ["image_aopc_random", "clinical_aopc_random", "sanity_headline_stage", "sanity_lowest_stage",
             "localisation_defined", "pointing_game_baseline", "energy_in_mask_baseline", "iou_baseline",
             "coherence_modality_agreement", "coherence_spatial"]
    seen = set(first + metric_cols + extra + ["seconds", "error"])
    phi_cols = []
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                phi_cols.append(k)
    header = first + metric_cols + extra + phi_cols + ["seconds", "error"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        cells = []
        for c in header:
            v = r.get(c)
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                cells.append("")
            elif isinstance(v, float):
                cells.append(f"{v:.6g}")
            else:
                cells.append(str(v))
        w.writerow(cells)
    return buf.getvalue()


def _fmt(x: Any) -> str:
    v = _f(x)
    return "n/a" if not math.isfinite(v) else f"{v:.3g}"


def _markdown(s: Mapping[str, Any]) -> str:
    ci = s["ci"]
    lines = ["# Explanation quality (mmxai-evaluate --xai)", "", f"*{RESEARCH_USE_NOTICE}*", "",
             f"{s['n_cases']} of {s['n_cases_available']} case(s); metrics: {', '.join(s['metrics'])}; "
             f"torch threads {s['torch_threads']}; {s['seconds']:.1f} s.", "",
             f"95% CI: {ci['method']}, {ci['n_boot']} resamples (seed {ci['seed']}). Baseline: the random "
             "baseline's mean over the same cases, where the metric has one.", "",
             "| metric | mean | 95% CI | baseline | n cases | note |", "|---|---|---|---|---|---|"]
    for t in s["table"]:
        lines.append(f"| {t['label']} | {_fmt(t['mean'])} | [{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}] | "
                     f"{_fmt(t['baseline'])} | {t['n_cases']} | {t['note']} |")
    auc = s.get("coherence_auroc")
    if auc is not None:
        lines += ["", "## Coherence vs ground-truth discordance", ""]
        if auc.get("auroc") is None:
            lines.append(f"AUROC not available: {auc.get('reason', 'n/a')}.")
        else:
            lines.append(f"AUROC {_fmt(auc['auroc'])} [{_fmt(auc.get('ci_low'))}, {_fmt(auc.get('ci_high'))}] "
                         f"(lower coherence = discordant; {auc['n_discordant']} discordant vs {auc['n_other']} "
                         f"other; stratified bootstrap; chance 0.5).")
    loc = s.get("localisation")
    if loc is not None:
        lines += ["", f"Localisation: {loc.get('n_defined', 0)} of {loc.get('n_cases', 0)} masked case(s) defined "
                      "(only cases with a mask in the manifest)."]
    fields = s.get("clinical_fields")
    if fields:
        lines += ["", "## Clinical fields by mean |Shapley value|", "", fields["definition"] + ".", "",
                  "| rank | field | mean abs Shapley | mean when known | n known | noise field |",
                  "|---|---|---|---|---|---|"]
        for e in fields["ranking"]:
            mark = "n/a" if e["noise"] is None else ("yes" if e["noise"] else "no")
            lines.append(f"| {e['rank']} | {e['field']} | {_fmt(e['mean_abs_shapley'])} | "
                         f"{_fmt(e['mean_abs_shapley_when_known'])} | {e['n_known']} | {mark} |")
        if "informative_above_noise" in fields:
            lines += ["", f"Every informative field above every noise field: "
                          f"{'yes' if fields['informative_above_noise'] else 'no'}."]
    lines += ["", "## Parameters", "", "```json", json.dumps(s["parameters"], indent=1, sort_keys=True), "```"]
    if s.get("errors"):
        lines += ["", "## Cases that failed", ""] + [f"- {e}" for e in s["errors"]]
    figs = [f for f in s.get("files", []) if f.endswith(".png")]
    if figs:
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figs]
    return "\n".join(lines) + "\n"


def _mean_deletion(results: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The per-case image deletion results averaged curve by curve (same fraction grid)."""
    res = [r for r in results if r and "attributed" in r]
    if not res:
        return None
    grid = res[0]["parameters"]["fractions"]
    res = [r for r in res if r["parameters"]["fractions"] == grid]
    mean = lambda key, *p: np.nanmean(np.array([_get(r, *p)[key] if key else _get(r, *p) for r in res],
                                               dtype=float), axis=0).tolist()
    out = {"metric": "image_deletion", "parameters": dict(res[0]["parameters"]),
           "score": f"probability of the explained class, mean over {len(res)} case(s)",
           "attributed": {"score": mean(None, "attributed", "score"), "aopc": float(np.nanmean(
               [r["attributed"]["aopc"] for r in res]))}}
    if all("random" in r for r in res):
        out["random"] = {"score_mean": mean(None, "random", "score_mean"),
                         "score_std": mean(None, "random", "score_std"),
                         "aopc": {"mean": float(np.nanmean([r["random"]["aopc"]["mean"] for r in res]))}}
    return out


def _plots(out: Path, details: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> dict[str, str]:
    from mmxai_core.report import xai_plots as xp

    files: dict[str, str] = {}
    dele = _mean_deletion([_get(d, "faithfulness", "image") for d in details])
    if dele is not None:
        xp.plot_deletion(dele, out / "xai_deletion.png",
                         title=f"Image deletion, mean over cases vs random orders ({dele['parameters']['removal']})")
        files["deletion"] = "xai_deletion.png"
    stab = []
    for d in details:
        if "stability" in d:
            entry = dict(d["stability"]["gradcam"])
            if "pearson" in d["stability"]["shapley"]:
                entry["pearson"] = d["stability"]["shapley"]["pearson"]
            stab.append(entry)
    if stab:
        xp.plot_stability(stab, out / "xai_stability.png", title="Explanation stability (per-case means)")
        files["stability"] = "xai_stability.png"
    san = [d["sanity"] for d in details if "sanity" in d]
    if san:
        stages = [c["stage"] for c in san[0]["curve"]]
        same = [r for r in san if [c["stage"] for c in r["curve"]] == stages]
        curve = [{"stage": st, "ssim_per_case": [r["curve"][k]["ssim_per_case"][0] for r in same]}
                 for k, st in enumerate(stages)]
        head = san[0]["headline"]["stage"]
        hv = [r["headline"]["ssim_mean"] for r in same]
        merged = {"curve": curve, "headline": {"stage": head, "ssim_mean": float(np.nanmean(_as_float(hv)))}}
        xp.plot_sanity(merged, out / "xai_sanity.png")
        files["sanity"] = "xai_sanity.png"
    fields = summary.get("clinical_fields")
    if fields:
        bars = {(e["field"] + (" (noise)" if e["noise"] else "")): {"value": e["mean_abs_shapley"]}
                for e in fields["ranking"]}
        xp.plot_metric_bars(bars, out / "xai_shapley_fields.png", title="Mean |Shapley value| per clinical field")
        files["shapley_fields"] = "xai_shapley_fields.png"
    loc = summary.get("localisation")
    if loc and loc.get("n_defined"):
        bars = {k.replace("_", " "): {"value": loc[k]["mean"], "baseline": loc[k]["baseline_mean"]}
                for k in ("pointing_game", "energy_in_mask", "iou")}
        xp.plot_metric_bars(bars, out / "xai_localisation.png", title="Localisation vs random-map baseline")
        files["localisation"] = "xai_localisation.png"
    return files


def _as_float(values: Sequence[Any]) -> np.ndarray:
    return np.array([_f(v) for v in values], dtype=float)


__all__ = [
    "SETTINGS",
    "XAI_METRICS",
    "XAIEvaluationError",
    "evaluate_xai",
    "parse_xai_metrics",
    "patient_bootstrap_mean",
]
