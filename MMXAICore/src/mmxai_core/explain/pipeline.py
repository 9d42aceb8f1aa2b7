"""One case explained end to end, and the folder it lands in. Research use only - not for diagnosis.

Steps (each timed into ``result["timings_s"]`` and announced through ``progress(step, fraction, text)``):

    load        read the image (the model is loaded once by :func:`load_model`: ``load_model`` timing)
    preprocess  the checkpoint's image preprocessing (records what it did, so maps can go back)
    gradcam     Grad-CAM++ of the explained class (positive class of a binary model, else the argmax or
                the asked-for class), attention rollout, cross-modal maps, all carried back onto the
                input's own grid (:func:`mmxai_core.explain.explain_image`). Its forward pass is also the
                prediction: probabilities and the predicted class (binary: the checkpoint's threshold on
                p(positive class), not the argmax); no separate predict pass (progress still announces
                ``predict``)
    shapley     exact Shapley values of the clinical fields (removed = unknown) and the image/clinical
                modality split, from one value function on the image encoding of the Grad-CAM++ pass:
                the image goes through the encoder once per explanation
    metrics     cross-modal coherence (when ``mmxai_core.explain.metrics.coherence`` is installed) and the
                requested quality metrics
    write       heatmap.nrrd, heatmap_label.nrrd, heatmap_bins.json, overlay.png, shap.png, report.html,
                then result.json last (format: ``docs/WORKER.md``)

Quality figures come from :mod:`mmxai_core.explain.metrics` through :mod:`.case_metrics`: a metric that
is not installed is refused up front when asked for (``--metrics``); coherence, always attempted, is left
out of ``result.json`` with a note when its module is missing or fails.

:func:`explain_to_folder` checks every input first, then builds the case in a hidden sibling folder and
renames it into place (:mod:`mmxai_core.explain.output_folder`): outputs appear complete or not at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmxai_core import RESEARCH_USE_NOTICE, __version__
from mmxai_core.errors import CheckpointError, ImageReadError, MMXAIError
from mmxai_core.explain.case_metrics import METRIC_NAMES, ExplainedCase, check_metrics_available, metric_function
from mmxai_core.explain.output_folder import (RESULT_FILE, RESULT_FORMAT, check_output_folder, input_sha256,
                                              publish_folder, read_result, remove_stale_partials, staging_folder)

SHAP_FILE = "shap.png"
REPORT_FILE = "report.html"
RESULT_FORMAT_VERSION = 1
#: Where each step starts on the 0..1 progress scale.
STEP_FRACTIONS = {"load": 0.0, "preprocess": 0.1, "predict": 0.25, "gradcam": 0.3, "shapley": 0.55,
                  "metrics": 0.7, "write": 0.9}
#: Smallest in-plane image size (pixels) the model is given.
MIN_IN_PLANE = 8

Progress = Callable[[str, float, str], None]


def _quiet(step: str, fraction: float, message: str) -> None:
    """The default progress callback: says nothing."""


# ------------------------------------------------------------------------------------------ options
@dataclasses.dataclass(frozen=True)
class ExplainOptions:
    """What to compute besides the defaults.

    target_class: class name to explain (default: the positive class of a binary model, else the
        predicted class). metrics: names from :data:`METRIC_NAMES`. write_maps: also write rollout.nrrd
        and crossmodal_<field>.nrrd. seed: RNG seed handed to the metrics (and Shapley sampling).
    """

    target_class: str | None = None
    metrics: tuple[str, ...] = ()
    write_maps: bool = False
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"target_class": self.target_class, "metrics": list(self.metrics), "write_maps": self.write_maps,
                "seed": self.seed}

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], source: str = "options") -> "ExplainOptions":
        """From a worker request's ``options`` object (keys: target_class, metrics, write_maps, seed)."""
        known = {"target_class", "metrics", "write_maps", "seed"}
        extra = sorted(set(options) - known)
        if extra:
            raise MMXAIError(f"{source}: unknown option(s) {', '.join(extra)}; allowed: {', '.join(sorted(known))}")
        target = options.get("target_class")
        if target is not None and not isinstance(target, str):
            raise MMXAIError(f"{source}: 'target_class' must be a class name or null, got {target!r}")
        metrics = options.get("metrics") or []
        if isinstance(metrics, str):
            metrics = parse_metric_names(metrics)
        if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
            raise MMXAIError(f"{source}: 'metrics' must be a list of names ({', '.join(METRIC_NAMES)})")
        seed = options.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise MMXAIError(f"{source}: 'seed' must be a whole number, got {seed!r}")
        return cls(target_class=target, metrics=tuple(parse_metric_names(",".join(metrics))),
                   write_maps=bool(options.get("write_maps", False)), seed=seed)


def parse_metric_names(text: str) -> list[str]:
    """``"stability,faithfulness"`` -> ``["stability", "faithfulness"]`` (checked, duplicates dropped)."""
    names: list[str] = []
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        if name not in METRIC_NAMES:
            raise MMXAIError(f"--metrics: unknown metric '{part.strip()}'; choose from {', '.join(METRIC_NAMES)}")
        if name not in names:
            names.append(name)
    return names


# ------------------------------------------------------------------------------------------ the model
@dataclasses.dataclass
class CheckpointInfo:
    """What a checkpoint says about itself, read from ``metadata.json`` alone (no torch, no weights), so
    clinical values, the target class and the output folder can be checked in a fraction of a second.

    folder (the folder holding metadata.json), metadata, schema (the fitted clinical schema), classes,
    name and version for display, weights_sha256.
    """

    folder: Path
    metadata: dict[str, Any]
    schema: Any
    classes: list[str]
    name: str
    version: str
    weights_sha256: str


def checkpoint_info(path: str | os.PathLike) -> CheckpointInfo:
    """Read a checkpoint's ``metadata.json`` (run folder or its ``checkpoint`` folder).

    Raises:
        CheckpointError: missing folder or metadata, not JSON, or no usable clinical schema / classes.
    """
    from mmxai_core.data.clinical import ClinicalPreprocessor

    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint folder not found")
    if not p.is_dir():
        raise CheckpointError(f"{p}: not a checkpoint folder (expected a folder with metadata.json and "
                              "weights.safetensors)")
    folder = p / "checkpoint" if (p / "checkpoint").is_dir() and not (p / "metadata.json").exists() else p
    meta_path = folder / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: not found; not an mmxai checkpoint folder") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: damaged or unreadable ({_one_line(exc)})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: damaged (not a JSON object)")
    try:
        schema = ClinicalPreprocessor.from_json_dict(meta["clinical_preprocessor"]).schema
        classes = [str(c) for c in meta["classes"]]
    except KeyError as exc:
        raise CheckpointError(f"{meta_path}: incomplete mmxai-train checkpoint, missing {exc}") from None
    except (MMXAIError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{meta_path}: invalid clinical preprocessing state ({_one_line(exc)})") from None
    default_name = folder.parent.name if folder.name == "checkpoint" else folder.name
    name = str(meta.get("name") or meta.get("model_name") or getattr(schema, "name", None) or default_name)
    version = str(meta.get("version") or meta.get("model_version") or meta.get("package_version") or "")
    return CheckpointInfo(folder=folder, metadata=meta, schema=schema, classes=classes, name=name,
                          version=version, weights_sha256=str(meta.get("weights_sha256", "")))


@dataclasses.dataclass
class LoadedModel:
    """A checkpoint ready to explain cases: ``run`` (:class:`~mmxai_core.train.predict.RunCheckpoint`),
    its folder, device, display name and version, weights hash, the fixed Grad-CAM++ scale (or None)
    and the seconds it took to load."""

    run: Any
    path: Path
    device: Any
    name: str
    version: str
    weights_sha256: str
    cam_scale: float | None
    load_seconds: float

    @property
    def classes(self) -> list[str]:
        return list(self.run.classes)

    def describe(self) -> dict[str, Any]:
        """The ``model`` entry of result.json."""
        meta = self.run.metadata
        return {"name": self.name, "version": self.version, "classes": self.classes,
                "variant": getattr(self.run.model, "variant", None),
                "package_version": meta.get("package_version"), "weights_sha256": self.weights_sha256,
                "clinical_fields": [f.name for f in self.run.clinical.schema.fields]}


def load_model(path: str | os.PathLike, device: str = "auto", info: CheckpointInfo | None = None) -> LoadedModel:
    """Load an ``mmxai-train`` checkpoint (run folder or its ``checkpoint`` folder) onto ``device``.

    Raises:
        CheckpointError: missing, damaged, incomplete or incompatible (one line naming the file).
        DeviceError: ``cuda`` / ``mps`` asked for but absent.
    """
    t0 = time.perf_counter()
    info = info or checkpoint_info(path)
    from mmxai_core.explain.gradcam import cam_scale_from_metadata
    from mmxai_core.train.device import resolve_device
    from mmxai_core.train.predict import load_run_checkpoint

    dev = resolve_device(device)
    try:
        run = load_run_checkpoint(info.folder, device=dev)
    except MMXAIError:
        raise
    except Exception as exc:  # a damaged file can make any parser raise anything
        raise CheckpointError(f"{info.folder}: cannot load the checkpoint ({type(exc).__name__}: "
                              f"{_one_line(exc)})") from None
    run.model.eval()
    try:
        cam_scale = cam_scale_from_metadata(run.metadata)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{info.folder / 'metadata.json'}: {exc}") from None
    return LoadedModel(run=run, path=info.folder, device=dev, name=info.name, version=info.version,
                       weights_sha256=info.weights_sha256, cam_scale=cam_scale,
                       load_seconds=time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------ the image
def read_case_image(path: str | os.PathLike, series_uid: str | None = None) -> Any:
    """Read an image and check that the model can take it (:func:`check_image_for_model`)."""
    from mmxai_core.io import read_image

    image = read_image(path, series_uid)
    check_image_for_model(image, path)
    return image


def check_image_for_model(image: Any, path: str | os.PathLike) -> None:
    """Refuse what :func:`~mmxai_core.io.read_image` accepts but the model cannot take.

    A colour photo (converted to luminance on reading: colours carry meaning the model never saw),
    complex or non-numeric voxels, a stack of single rows or columns (a 2-D image stored along the wrong
    axis), or an in-plane size below :data:`MIN_IN_PLANE` pixels.

    Raises:
        ImageReadError: naming the file and the problem.
    """
    arr = image.array
    if image.meta.get("converted_to_luminance"):
        raise ImageReadError(path, "is a colour image; the model takes greyscale images (convert it to "
                                   "greyscale first)")
    if arr.ndim != 3:
        raise ImageReadError(path, f"has {arr.ndim} dimensions; the model takes a 2-D image or a 3-D volume")
    if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ImageReadError(path, f"has {arr.dtype} voxels; the model takes real-valued greyscale voxels")
    z, y, x = arr.shape
    if z > 1 and (y == 1 or x == 1):
        raise ImageReadError(path, f"is {z} slices of {y}x{x} pixels: a 2-D image stored along the wrong "
                                   "axis, or a line profile; the model takes one slice (a 2-D image) or "
                                   "a volume of 2-D slices")
    if y < MIN_IN_PLANE or x < MIN_IN_PLANE:
        raise ImageReadError(path, f"is only {x}x{y} pixels in-plane; the model needs at least "
                                   f"{MIN_IN_PLANE}x{MIN_IN_PLANE}")


# ------------------------------------------------------------------------------------------ one case
def explain_case(model: LoadedModel, image: Any, clinical: Mapping[str, Any], out_dir: str | os.PathLike,
                 options: ExplainOptions | None = None, *, progress: Progress = _quiet,
                 timings: dict[str, float] | None = None, image_path: str | os.PathLike | None = None,
                 identity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Explain one case into ``out_dir`` (an existing, empty staging folder) and return the result dict.

    Args:
        model: from :func:`load_model`.
        image: the input :class:`~mmxai_core.io.Image` (already checked by :func:`read_case_image`).
        clinical: parsed values ``{field: value or None}`` (:func:`~.clinical_input.validate_clinical`).
        out_dir: where the files go; result.json is written last.
        options: target class, metrics, extra maps, seed.
        progress: ``progress(step, fraction, message)`` at the start of each step.
        timings: seconds already spent (e.g. ``{"load": ...}``), merged into ``timings_s``.
        image_path: only used to name the file in error messages.
        identity: ``{"inputs_sha256": ...}`` and other facts copied into result.json.

    Raises:
        MMXAIError: the image cannot be prepared, an unknown ``target_class``, a metric not available.
    """
    from mmxai_core.explain.clinical_input import displayed
    from mmxai_core.explain.modality import split_of_game
    from mmxai_core.explain.shapley import shapley_of_game
    from mmxai_core.explain.to_patient import explain_image
    from mmxai_core.explain.value_function import CoalitionValue

    options = options or ExplainOptions()
    out = Path(out_dir)
    run = model.run
    timings = dict(timings or {})
    notes: list[str] = []
    metric_fns = check_metrics_available(options.metrics)
    target = _target_index(options.target_class, model.classes)
    if not getattr(run.model, "uses_image", True):
        raise MMXAIError(f"{model.path}: a '{getattr(run.model, 'variant', '?')}' model has no image branch: "
                         "there is no image to explain")

    progress("preprocess", STEP_FRACTIONS["preprocess"], "preparing the image for the model")
    t = time.perf_counter()
    x = _model_input(model, image, clinical, image_path if image_path is not None else "image")
    timings["preprocess"] = time.perf_counter() - t

    # The Grad-CAM++ pass is also the prediction: its forward gives the probabilities, its target is the
    # positive class of a binary model or the predicted (argmax) class otherwise, and its image encoding
    # feeds the Shapley values, so the image goes through the encoder once per explanation.
    progress("predict", STEP_FRACTIONS["predict"], "predicting")
    timings["predict"] = 0.0        # kept in the timings contract: the prediction is timed under "gradcam"
    progress("gradcam", STEP_FRACTIONS["gradcam"], "Grad-CAM++ heatmap")
    normalise = "model" if model.cam_scale is not None else "case"
    if model.cam_scale is None:
        notes.append("The checkpoint stores no fixed Grad-CAM++ scale (explain.cam_scale): the heatmap is "
                     "scaled to this case's maximum, so its brightness is not comparable between cases.")
    explanation = explain_image(run.model, image, x.values, x.missing, record=x.record, model_array=x.array,
                                target_class=target, class_names=model.classes, cam_scale=model.cam_scale,
                                normalise=normalise, out_dir=out, write_maps=options.write_maps)
    et = explanation.timings
    timings["gradcam"] = sum(et.get(k, 0.0) for k in ("gradcam", "rollout", "crossmodal", "to_patient"))
    probs = np.asarray(explanation.probs, dtype=np.float64)
    predicted = int(run.decide(probs[None])[0])
    target = int(explanation.target_class)

    progress("shapley", STEP_FRACTIONS["shapley"], "Shapley values of the clinical fields")
    t = time.perf_counter()
    shown = displayed(clinical, run.clinical.schema)
    vf = CoalitionValue(run.model, x.images, x.clin_values, x.clin_missing, slice_mask=x.slice_mask, target=target,
                        encoding=explanation.encoding)
    shapley = shapley_of_game(vf, seed=options.seed, entered=[shown[n] for n in vf.field_names],
                              preprocessor=run.clinical, class_names=model.classes)
    modality = split_of_game(vf)
    timings["shapley"] = time.perf_counter() - t

    case = ExplainedCase(model=run.model, device=model.device, images=x.images, slice_mask=x.slice_mask,
                         clin_values=x.clin_values, clin_missing=x.clin_missing, target=target,
                         classes=model.classes, image=image, record=x.record, explanation=explanation,
                         shapley=shapley, modality=modality, value_function=vf, clinical=run.clinical,
                         entered=dict(clinical), cam_scale=model.cam_scale, normalise=normalise, seed=options.seed)
    progress("metrics", STEP_FRACTIONS["metrics"], "cross-modal coherence" + (
        " and " + ", ".join(options.metrics) if options.metrics else ""))
    t = time.perf_counter()
    coherence = _coherence(case, notes)
    metrics: dict[str, Any] = {}
    for k, (name, fn) in enumerate(metric_fns.items()):
        progress("metrics", STEP_FRACTIONS["metrics"] + 0.18 * (k + 1) / (len(metric_fns) + 1), f"metric: {name}")
        tm = time.perf_counter()
        metrics[name] = _jsonable(fn(case))
        timings[f"metric_{name}"] = time.perf_counter() - tm
    timings["metrics"] = time.perf_counter() - t

    progress("write", STEP_FRACTIONS["write"], "writing the report")
    t = time.perf_counter()
    from mmxai_core.report.html import write_report_html
    from mmxai_core.report.shap_plot import plot_shapley

    files = {k: Path(v).name for k, v in explanation.files.items()}
    files["shap_plot"] = plot_shapley(shapley, out / SHAP_FILE).name
    files["report"] = REPORT_FILE
    result = build_result(model, image, x.record, probs, predicted, target, explanation, shapley, modality,
                          clinical, shown, coherence, metrics, files, options, notes, identity)
    for final in (False, True):     # the report shows the timings up to its own writing; result.json all
        timings["write"] = et.get("write", 0.0) + (time.perf_counter() - t)
        timings["total"] = sum(timings.get(k, 0.0) for k in ("load_model", "load", "preprocess", "predict",
                                                             "gradcam", "shapley", "metrics", "write"))
        result["timings_s"] = _round_timings(timings)
        if not final:
            write_report_html(result, out, out / REPORT_FILE)
    from mmxai_core.utils.atomic import write_json_atomic

    write_json_atomic(out / RESULT_FILE, result)
    return result


@dataclasses.dataclass
class _ModelInput:
    """One case as the model takes it: ``array`` (Z, H, W) + ``record``; clinical ``values`` / ``missing``
    (F,) numpy; and the tensors on the model's device: images (1, Z, 1, H, W), slice_mask (1, Z),
    clin_values / clin_missing (1, F)."""

    array: np.ndarray
    record: Any
    values: np.ndarray
    missing: np.ndarray
    images: Any
    slice_mask: Any
    clin_values: Any
    clin_missing: Any


def _model_input(model: LoadedModel, image: Any, clinical: Mapping[str, Any], where: Any) -> _ModelInput:
    import torch

    from mmxai_core.data.image_preprocess import ImagePreprocessor
    from mmxai_core.errors import PreprocessingError
    from mmxai_core.explain.clinical_input import clinical_arrays

    try:
        array, record = ImagePreprocessor(model.run.image_preprocess).apply(image)
    except MMXAIError as exc:
        raise PreprocessingError(f"{where}: cannot be prepared for the model: {_one_line(exc)}") from None
    except (RuntimeError, ValueError) as exc:
        raise ImageReadError(where, f"cannot be prepared for the model ({_one_line(exc)})") from None
    values, missing = clinical_arrays(clinical, model.run.clinical)
    dev = model.device
    images = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, :, None].to(dev)
    return _ModelInput(array=array, record=record, values=values, missing=missing, images=images,
                       slice_mask=torch.ones(1, int(images.shape[1]), dtype=torch.bool, device=dev),
                       clin_values=torch.from_numpy(values)[None].to(dev),
                       clin_missing=torch.from_numpy(missing)[None].to(dev))


def _target_index(name: str | None, classes: Sequence[str]) -> int | None:
    if name is None:
        return None
    for k, c in enumerate(classes):
        if c == name or c.casefold() == str(name).strip().casefold():
            return k
    raise MMXAIError(f"--target-class: '{name}' is not a class of this model ({', '.join(classes)})")


def _coherence(case: ExplainedCase, notes: list[str]) -> dict[str, Any] | None:
    fn = metric_function("coherence")
    if fn is None:
        notes.append("Cross-modal coherence is not available in this installation "
                     "(mmxai_core.explain.metrics.coherence); it is left out.")
        return None
    try:
        return _jsonable(fn(case))
    except Exception as exc:  # coherence is an extra: its failure must not cost the explanation
        notes.append(f"Cross-modal coherence could not be computed ({type(exc).__name__}: {_one_line(exc)}).")
        return None


# ------------------------------------------------------------------------------------------ result.json
def build_result(model: LoadedModel, image: Any, record: Any, probs: np.ndarray, predicted: int, target: int,
                 explanation: Any, shapley: Any, modality: Any, clinical: Mapping[str, Any],
                 shown: Mapping[str, str], coherence: dict | None, metrics: dict, files: dict[str, str],
                 options: ExplainOptions, notes: list[str], identity: Mapping[str, Any] | None) -> dict[str, Any]:
    """The result.json dict (see ``docs/WORKER.md``); ``timings_s`` is added by the caller."""
    from mmxai_core.explain.clinical_input import plain_values

    classes = model.classes
    schema = model.run.clinical.schema
    thr = model.run.threshold
    binary = len(classes) == 2 and thr is not None
    se = shapley.standard_errors
    fields = []
    for j, name in enumerate(shapley.field_names):
        unknown = not bool(shapley.known[j])
        row = {"name": name, "label": schema.field(name).label if name in schema else name,
               "entered": "unknown" if unknown else shown.get(name, shapley.entered[j]), "unknown": unknown,
               "value": 0.0 if unknown else float(shapley.values[j])}
        if se is not None:
            row["standard_error"] = float(se[j])
        fields.append(row)
    quantity = (f"{'probability' if shapley.output == 'probability' else 'log-odds'} of the explained class "
                f"({classes[target]}); removed field = unknown")
    result: dict[str, Any] = {
        "notice": RESEARCH_USE_NOTICE,
        "format": RESULT_FORMAT, "format_version": RESULT_FORMAT_VERSION,
        "created_by": f"mmxai-core {__version__}",
        "model": model.describe(),
        "prediction": {
            "class": classes[predicted], "class_index": predicted,
            "probabilities": {c: float(p) for c, p in zip(classes, probs, strict=True)},
            "threshold": float(thr) if binary else None,
            "rule": (f"{classes[1]} when p({classes[1]}) >= threshold, else {classes[0]}" if binary
                     else "the class with the highest probability"),
            "explained_class": classes[target], "explained_probability": float(probs[target]),
        },
        "shapley": {"method": shapley.method, "quantity": quantity, "output": shapley.output,
                    "baseline": shapley.baseline, "base_value": float(shapley.base_value),
                    "fx": float(shapley.prediction), "efficiency_residual": float(shapley.efficiency_residual),
                    "n_evaluations": int(shapley.n_evaluations), "n_permutations": shapley.n_permutations,
                    "fields": fields},
        "modality_split": {"quantity": "two-player Shapley split of the explained class's probability: image "
                                       "(absent = the missing-image token) vs clinical data (absent = all "
                                       "fields unknown)",
                           "image": float(modality.image), "clinical": float(modality.clinical),
                           "interaction": float(modality.interaction),
                           "corners": {"both": float(modality.v_both), "image_only": float(modality.v_image_only),
                                       "clinical_only": float(modality.v_clinical_only),
                                       "none": float(modality.v_neither)}},
        "heatmap": {"method": "Grad-CAM++", "explained_class": classes[target],
                    "normalisation": _jsonable(explanation.normalisation),
                    "max": float(explanation.heatmap.array.max()), "display_threshold": explanation.bins.threshold,
                    "slice_weights": [round(float(w), 6) for w in explanation.slice_weights],
                    "clinical_attention": _jsonable(explanation.clinical_attention)},
        "input": {"shape_zyx": [int(s) for s in image.array.shape],
                  "spacing_xyz_mm": [float(s) for s in image.spacing],
                  "kind": "2d" if image.array.shape[0] == 1 else "volume",
                  "source_format": image.meta.get("source_format"),
                  "geometry_defaulted": bool(image.meta.get("geometry_defaulted", False)),
                  "model_shape_zyx": [int(s) for s in record.model_shape],
                  "preprocessing": list(record.steps),
                  "clinical": plain_values(clinical)},
        "options": options.to_dict(),
    }
    if coherence is not None:
        result["coherence"] = coherence
    if metrics:
        result["metrics"] = metrics
    if identity:
        result["identity"] = dict(identity)
    result["notes"] = list(notes)
    result["files"] = dict(files)
    return result


def _round_timings(t: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in t.items()}


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays -> numbers/lists, tuples -> lists, NaN -> None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------ identity
def case_identity(model: CheckpointInfo | LoadedModel, image_path: str | os.PathLike, series_uid: str | None,
                  clinical: Mapping[str, Any], options: ExplainOptions) -> dict[str, Any]:
    """``{"inputs_sha256": ...}``: a hash of everything that determines an explanation (the image's bytes,
    series, clinical values, model weights, options, package version); two runs with the same hash
    produce the same outputs."""
    from mmxai_core.explain.clinical_input import plain_values

    facts = {"image_sha256": input_sha256(image_path), "series_uid": series_uid,
             "clinical": plain_values(clinical), "weights_sha256": model.weights_sha256,
             "options": options.to_dict(), "mmxai_core": __version__}
    text = json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)
    return {"inputs_sha256": hashlib.sha256(text.encode()).hexdigest()}


@dataclasses.dataclass
class PreparedCase:
    """A case whose inputs were read and accepted: image path, series, the image, parsed clinical values,
    its identity (:func:`case_identity`) and the seconds spent reading."""

    image_path: Path
    series_uid: str | None
    image: Any
    clinical: dict[str, Any]
    identity: dict[str, Any]
    timings: dict[str, float]


def prepare_case(model: CheckpointInfo | LoadedModel, image_path: str | os.PathLike, clinical: Mapping[str, Any],
                 options: ExplainOptions | None = None, series_uid: str | None = None) -> PreparedCase:
    """Check the options against the model, read and check the image, hash the inputs (no torch needed
    with a :class:`CheckpointInfo`). Raises MMXAIError naming what is wrong."""
    options = options or ExplainOptions()
    check_metrics_available(options.metrics)
    _target_index(options.target_class, model.classes)
    t = time.perf_counter()
    image = read_case_image(image_path, series_uid)
    identity = case_identity(model, image_path, series_uid, clinical, options)
    return PreparedCase(Path(image_path), series_uid, image, dict(clinical), identity,
                        {"load": time.perf_counter() - t})


def explain_to_folder(model: LoadedModel, image_path: str | os.PathLike, clinical: Mapping[str, Any],
                      dest: str | os.PathLike, options: ExplainOptions | None = None, *,
                      series_uid: str | None = None, force: bool = False, progress: Progress = _quiet,
                      what: str = "--out", prepared: PreparedCase | None = None) -> dict[str, Any]:
    """Read, check, explain and publish one case to ``dest`` (complete or not at all).

    Everything the user can get wrong (image, clinical values, options, the output folder) is checked
    before any folder is made; on any error the staging folder is removed. ``prepared`` (from
    :func:`prepare_case` with the same inputs) skips reading the image again.
    """
    options = options or ExplainOptions()
    progress("load", STEP_FRACTIONS["load"], "reading the image")
    case = prepared or prepare_case(model, image_path, clinical, options, series_uid)
    timings = {"load_model": model.load_seconds, **case.timings}
    check_output_folder(dest, case.identity["inputs_sha256"], force, what)
    remove_stale_partials(Path(dest).parent, Path(dest).name)
    made = [p for p in reversed(Path(dest).absolute().parents) if not p.exists()]   # made for this output
    staging = staging_folder(dest)
    try:
        result = explain_case(model, case.image, case.clinical, staging, options, progress=progress,
                              timings=timings, image_path=case.image_path, identity=case.identity)
        publish_folder(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(made):      # leave nothing behind, not even the empty parents
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return result


__all__ = ["METRIC_NAMES", "REPORT_FILE", "RESULT_FILE", "SHAP_FILE", "STEP_FRACTIONS", "CheckpointInfo",
           "ExplainOptions", "ExplainedCase", "LoadedModel", "PreparedCase", "build_result", "case_identity",
           "check_image_for_model", "check_metrics_available", "check_output_folder", "checkpoint_info",
           "explain_case", "explain_to_folder", "input_sha256", "load_model", "metric_function",
           "parse_metric_names", "prepare_case", "publish_folder", "read_case_image", "read_result",
           "remove_stale_partials", "staging_folder"]
