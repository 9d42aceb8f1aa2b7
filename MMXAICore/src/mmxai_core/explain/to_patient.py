"""Image explanations of one case, carried back onto the patient's grid and written to files.

Flow: image (native geometry) -> preprocessing (record) -> model input (1, Z, 1, H, W) -> Grad-CAM++ (and
attention rollout, cross-modal maps) in model space (Z, H, W) -> :func:`to_original_grid` (one resampling in
patient space, linear) -> maps on the input image's exact grid (size, spacing, origin, direction) ->

    heatmap.nrrd        float32 in [0, 1] on the model's fixed scale (clipped)
    heatmap_label.nrrd  uint8 bins of heatmap.nrrd (0 = below threshold; see :mod:`.binning`)
    heatmap_bins.json   bin edges, colours (bin 0 transparent), normalisation, class and probability
    overlay.png         input slice through the maximum (mosaic for volumes) with the heatmap
    rollout.nrrd, crossmodal_<field>.nrrd   only with ``write_maps=True``

Labels are computed from the patient-grid heatmap (not resampled themselves), so both files agree voxel
for voxel. Every file is written atomically. Research use, not for diagnosis.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.explain.binning import HeatmapBins, write_bins_json
from mmxai_core.io.image import Image

HEATMAP_FILE = "heatmap.nrrd"
LABEL_FILE = "heatmap_label.nrrd"
BINS_FILE = "heatmap_bins.json"
OVERLAY_FILE = "overlay.png"


@dataclasses.dataclass
class ImageExplanation:
    """Image explanation of one case.

    Model space (arrays (Z, H, W) float32 on ``record.model``):
        heatmap_model: Grad-CAM++ in [0, 1] (``normalisation``); heatmap_raw_model: un-normalised maps
        (logit units) upsampled to (H, W); rollout_model: attention rollout relevance or None;
        crossmodal_model: {field: attention weight map} (empty when the model has no cross-attention).
    Patient grid (:class:`Image` with exactly the input's size, spacing, origin, direction):
        heatmap (float32, [0, 1]), heatmap_label (uint8 bins); rollout and crossmodal (properties,
        resampled on first use).
    target_class, class_name, probability (of the target class), probs (all classes),
    slice_weights (Z,) slice-pooling weights, clinical_attention {field: weight} or None,
    normalisation {"mode", "scale"}, bins, record (the preprocessing record), timings (seconds per step),
    files {name: path} written; encoding: the case's image encoding from the Grad-CAM++ pass (for the
    Shapley values, so the image is encoded once per explanation).
    """

    target_class: int
    class_name: str
    probability: float
    probs: list[float]
    normalisation: dict[str, Any]
    bins: HeatmapBins
    record: Any
    heatmap_model: np.ndarray
    heatmap_raw_model: np.ndarray
    heatmap: Image
    heatmap_label: Image
    slice_weights: np.ndarray
    rollout_model: np.ndarray | None = None
    crossmodal_model: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    clinical_attention: dict[str, float] | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    files: dict[str, Path] = dataclasses.field(default_factory=dict)
    encoding: Any = None
    _on_patient_grid: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def rollout(self) -> Image | None:
        """Attention rollout on the patient's grid (None without rollout), resampled on first use: a
        volume's patient-grid maps are large (one float32 per input voxel) and most callers never read them."""
        if self.rollout_model is None:
            return None
        if "rollout" not in self._on_patient_grid:
            self._on_patient_grid["rollout"] = map_to_patient(self.rollout_model, self.record, clip=(0.0, None))
        return self._on_patient_grid["rollout"]

    @property
    def crossmodal(self) -> dict[str, Image]:
        """{field: cross-modal attention map on the patient's grid}, resampled on first use (see ``rollout``)."""
        if "crossmodal" not in self._on_patient_grid:
            self._on_patient_grid["crossmodal"] = {f: map_to_patient(m, self.record, clip=(0.0, 1.0))
                                                   for f, m in self.crossmodal_model.items()}
        return self._on_patient_grid["crossmodal"]

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts (no arrays): class, probability, normalisation, bins, timings, files."""
        return {"target_class": self.target_class, "class_name": self.class_name,
                "probability": self.probability, "probs": self.probs, "normalisation": self.normalisation,
                "bins": self.bins.to_dict(), "heatmap_max": float(self.heatmap.array.max()),
                "slice_weights": [float(v) for v in self.slice_weights],
                "clinical_attention": self.clinical_attention, "timings_s": self.timings,
                "files": {k: str(v) for k, v in self.files.items()}}


# ------------------------------------------------------------------------------------------ grids
def map_to_patient(model_map: np.ndarray | torch.Tensor, record: Any, *, clip: tuple[float, float] | None = None,
                   interpolation: str = "linear") -> Image:
    """A model-space map (Z, H, W) on ``record.model`` -> float32 :class:`Image` on the patient's grid.

    One linear resampling in patient space (:func:`~mmxai_core.data.image_preprocess.to_original_grid`);
    patient voxels outside the model grid (cropped away) get 0. ``clip`` = (lo, hi) clips the values.
    """
    from mmxai_core.data.image_preprocess import to_original_grid

    if isinstance(model_map, torch.Tensor):
        model_map = model_map.detach().cpu().numpy()
    arr = np.asarray(model_map, dtype=np.float32)
    image = to_original_grid(arr, record, interpolation=interpolation, default_value=0.0)
    out = np.asarray(image.array, dtype=np.float32)
    if clip is not None:
        out = np.clip(out, clip[0], clip[1])
    return Image(out, image.spacing, image.origin, image.direction, dict(image.meta))


def heatmap_to_patient(heat_model: np.ndarray | torch.Tensor, record: Any,
                       bins: HeatmapBins | None = None) -> tuple[Image, Image]:
    """Model-space heatmap in [0, 1] -> (patient-grid heatmap float32 in [0, 1], its uint8 bin labels)."""
    bins = bins or HeatmapBins()
    heat = map_to_patient(heat_model, record, clip=(0.0, 1.0))
    label = Image(bins.label(heat.array), heat.spacing, heat.origin, heat.direction, dict(heat.meta))
    return heat, label


def write_heatmap_files(out_dir: str | os.PathLike, heat: Image, label: Image, bins: HeatmapBins,
                        extra: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write ``heatmap.nrrd``, ``heatmap_label.nrrd`` and ``heatmap_bins.json`` (``extra`` keys added to
    the JSON) into ``out_dir``, atomically; returns ``{"heatmap", "heatmap_label", "heatmap_bins"}``."""
    from mmxai_core.io import write_image

    out = Path(out_dir)
    return {"heatmap": write_image(Image(heat.array.astype(np.float32), heat.spacing, heat.origin,
                                         heat.direction), out / HEATMAP_FILE),
            "heatmap_label": write_image(Image(label.array.astype(np.uint8), label.spacing, label.origin,
                                               label.direction), out / LABEL_FILE),
            "heatmap_bins": write_bins_json(out / BINS_FILE, bins, extra)}


# ------------------------------------------------------------------------------------------ one case
def explain_image(model: torch.nn.Module, image: Image, clin_values: Any = None, clin_missing: Any = None, *,
                  preprocessor: Any = None, record: Any = None, model_array: np.ndarray | None = None,
                  target_class: int | None = None, class_names: Sequence[str] | None = None,
                  cam_scale: float | None = None, normalise: str = "model", bins: HeatmapBins | None = None,
                  target_layer: Any = None, reshape_transform: Any = None, slice_chunk: int | None = None,
                  rollout: bool = True, crossmodal: bool = True, out_dir: str | os.PathLike | None = None,
                  write_maps: bool = False, overlay_slices: int = 9) -> ImageExplanation:
    """Explain one case's image and carry the maps back onto ``image``'s grid.

    Args:
        model: a :class:`~mmxai_core.model.MultimodalClassifier` with an image branch.
        image: the input as read (:class:`Image`, native geometry).
        clin_values: (F,) or (1, F) preprocessed clinical values; clin_missing: same shape, bool
            (``None``: NaN = missing). ``None`` for an ``image_only`` model.
        preprocessor: an :class:`~mmxai_core.data.image_preprocess.ImagePreprocessor` applied to ``image``;
            or give ``model_array`` (Z, H, W) and ``record`` from an earlier ``apply``.
        target_class: class to explain (default: the positive class of a binary model, else predicted).
        class_names: names for the title / summary (default ``class <k>``).
        cam_scale: the model's fixed scale (checkpoint metadata ``explain.cam_scale``); needed for
            ``normalise="model"``; ``normalise="case"`` divides by the case maximum instead.
        bins: label binning (default :class:`HeatmapBins`: threshold 0.2, 10 bins).
        target_layer, reshape_transform, slice_chunk: see :class:`GradCAMPlusPlusExplainer`.
        rollout, crossmodal: also compute attention rollout / cross-modal maps (when the model has them).
        out_dir: write the files (see the module docstring) there; ``None`` writes nothing.
        write_maps: also write rollout and cross-modal maps as NRRD.
        overlay_slices: slices in the overlay mosaic of a volume.
    """
    from mmxai_core.explain.crossmodal_maps import crossmodal_maps
    from mmxai_core.explain.gradcam import GradCAMPlusPlusExplainer, normalise_maps
    from mmxai_core.explain.rollout import attention_rollout

    bins = bins or HeatmapBins()
    timings: dict[str, float] = {}
    t_total = time.perf_counter()

    # 1. model input
    t = time.perf_counter()
    if model_array is None:
        if preprocessor is None:
            raise ValueError("explain_image needs a preprocessor, or model_array with its record")
        model_array, record = preprocessor.apply(image)
    elif record is None:
        raise ValueError("explain_image: model_array needs the PreprocessRecord it came with")
    model_array = np.asarray(model_array, dtype=np.float32)
    if tuple(model_array.shape) != tuple(record.model_shape):
        raise ValueError(f"model_array shape {model_array.shape} does not match the record's model grid "
                         f"{tuple(record.model_shape)}")
    if tuple(image.shape) != tuple(record.original_shape):
        raise ValueError(f"image shape {image.shape} does not match the record's original grid "
                         f"{tuple(record.original_shape)}")
    timings["preprocess"] = time.perf_counter() - t
    z, h, w = model_array.shape
    images = torch.from_numpy(np.ascontiguousarray(model_array))[None, :, None]        # (1, Z, 1, H, W)
    values, missing = _clinical(clin_values, clin_missing)

    # 2. Grad-CAM++ (one pass also gives the attentions for rollout / cross-modal maps)
    t = time.perf_counter()
    want_rollout = rollout and model.config.depth > 0
    with GradCAMPlusPlusExplainer(model, target_layer, reshape_transform, slice_chunk) as cam:
        result = cam(images, values, missing, target_class=target_class, return_attentions=want_rollout)
    raw_up = result.upsampled()                                                         # (1, Z, H, W)
    heat_model = normalise_maps(raw_up, normalise, cam_scale)[0].numpy()
    timings["gradcam"] = time.perf_counter() - t
    out = result.output
    k = int(result.target_class[0])
    probs = [float(p) for p in out.probs[0]]
    name = class_names[k] if class_names is not None and k < len(class_names) else f"class {k}"
    norm_info = {"mode": normalise, "scale": float(cam_scale) if normalise == "model" else None,
                 "layer": result.layer, "raw_max": float(raw_up.max())}

    # 3. rollout and cross-modal maps (model space)
    rollout_model = None
    if want_rollout:
        t = time.perf_counter()
        rollout_model = attention_rollout(out, (h, w))[0].numpy()
        timings["rollout"] = time.perf_counter() - t
    field_names = [f.name for f in model.config.clinical_fields]
    cross_model: dict[str, np.ndarray] = {}
    clinical_attention = None
    if crossmodal and out.cross_attention is not None:
        t = time.perf_counter()
        cross_model = {f: m.numpy() for f, m in crossmodal_maps(out, field_names, 0, (h, w)).items()}
        clinical_attention = {f: float(v) for f, v in zip(field_names, out.clinical_attention[0], strict=True)}
        timings["crossmodal"] = time.perf_counter() - t

    # 4. back to the patient's grid
    t = time.perf_counter()
    heat, label = heatmap_to_patient(heat_model, record, bins)   # rollout, cross-modal maps: on first use
    timings["to_patient"] = time.perf_counter() - t

    slice_weights = out.slice_weights[0].numpy() if out.slice_weights is not None else np.ones(z, np.float32)
    explanation = ImageExplanation(
        target_class=k, class_name=name, probability=probs[k], probs=probs, normalisation=norm_info,
        bins=bins, record=record, heatmap_model=heat_model.astype(np.float32),
        heatmap_raw_model=raw_up[0].numpy().astype(np.float32), heatmap=heat, heatmap_label=label,
        slice_weights=slice_weights.astype(np.float32), rollout_model=rollout_model,
        crossmodal_model=cross_model, clinical_attention=clinical_attention,
        timings=timings, encoding=result.encoding)

    # 5. files
    if out_dir is not None:
        t = time.perf_counter()
        _write_all(Path(out_dir), explanation, image, write_maps, overlay_slices)
        timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_total
    return explanation


def _write_all(out: Path, ex: ImageExplanation, image: Image, write_maps: bool, overlay_slices: int) -> None:
    from mmxai_core.io import write_image
    from mmxai_core.report.overlay import write_overlay

    extra = {"normalisation": ex.normalisation, "target_class": ex.target_class, "class_name": ex.class_name,
             "probability": ex.probability,
             "notice": RESEARCH_USE_NOTICE}
    ex.files.update(write_heatmap_files(out, ex.heatmap, ex.heatmap_label, ex.bins, extra))
    scale = "model scale" if ex.normalisation["mode"] == "model" else "case maximum = 1"
    ex.files["overlay"] = write_overlay(
        out / OVERLAY_FILE, image.array, ex.heatmap.array,
        title=f"{ex.class_name} - probability {ex.probability:.3f}", spacing=image.spacing,
        threshold=ex.bins.threshold, colormap=ex.bins.colormap, n_slices=overlay_slices,
        heat_label=f"Grad-CAM++ ({scale})")
    if write_maps:
        if ex.rollout is not None:
            ex.files["rollout"] = write_image(ex.rollout, out / "rollout.nrrd")
        for field, img in ex.crossmodal.items():
            ex.files[f"crossmodal:{field}"] = write_image(img, out / f"crossmodal_{_safe(field)}.nrrd")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "field"


def _clinical(values: Any, missing: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if values is None:
        return None, None
    v = torch.as_tensor(np.asarray(values, dtype=np.float32)).reshape(1, -1)
    m = None if missing is None else torch.as_tensor(np.asarray(missing, dtype=bool)).reshape(1, -1)
    return v, m


__all__ = ["ImageExplanation", "explain_image", "map_to_patient", "heatmap_to_patient", "write_heatmap_files",
           "HEATMAP_FILE", "LABEL_FILE", "BINS_FILE", "OVERLAY_FILE"]
