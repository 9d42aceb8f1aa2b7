"""Parameters of the image preprocessing, as one validated dataclass that round-trips through JSON.

Every parameter is explicit and has a default; :meth:`ImagePreprocessConfig.from_dict` rejects unknown keys
and every bad value raises :class:`~mmxai_core.errors.PreprocessingError` naming the parameter.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from mmxai_core.errors import PreprocessingError

INTENSITY_MODES = ("auto", "window", "zscore", "robust", "percentile", "none")
N4_MODES = ("auto", "on", "off")
CROP_MODES = ("center", "foreground")
LATERALITY_MODES = ("off", "auto", "meta_or_tissue", "tissue")
INTERPOLATIONS = ("linear", "bspline", "nearest")
_AXIS_PAIRS = ({"L", "R"}, {"P", "A"}, {"S", "I"})


@dataclasses.dataclass
class ImagePreprocessConfig:
    """What :class:`~mmxai_core.data.preprocess.ImagePreprocessor` does to one image.

    Attributes:
        orientation: 3-letter DICOM orientation code (SimpleITK ``DICOMOrient`` convention: the letter is
            where each index axis i, j, k points, e.g. ``"LPS"``) the model sees; ``None`` keeps the
            stored axes. A 2-D image (one slice) only has its two in-plane axes permuted / flipped.
        n4: MRI N4 bias-field correction: ``"auto"`` (when meta Modality is MR), ``"on"``, ``"off"``.
        n4_shrink_factor: N4 is fitted on a copy shrunk by this factor per axis (axes with few voxels
            are shrunk less); the bias field is then evaluated at full resolution.
        n4_iterations: maximum iterations per fitting level (its length is the number of levels).
        n4_convergence_threshold: N4 convergence threshold.
        intensity: ``"auto"`` (CT -> window, MR -> zscore, anything else -> percentile), ``"window"``
            (CT centre/width -> [0, 1]), ``"zscore"`` (clip at ``clip_percentiles`` of the foreground,
            then zero mean / unit std over the foreground), ``"robust"`` (minus the median, divided by the
            interquartile range of the foreground; no clipping: a bright lesion of a few percent of the
            foreground barely moves these statistics, so it does not rescale the rest of the image),
            ``"percentile"`` (clip at ``clip_percentiles`` of all voxels and scale to [0, 1]), ``"none"``.
        window_center: CT window centre (HU).
        window_width: CT window width (HU), > 0.
        clip_percentiles: (low, high) percentiles in [0, 100], low < high.
        foreground_threshold: intensity (input units, before N4) above which a voxel is foreground
            (body / breast); ``None`` = Otsu's threshold. The foreground feeds the N4 mask, the
            z-score statistics, the ``"foreground"`` crop and the tissue-side laterality test.
        foreground_largest_component: keep only the largest connected foreground component (drops
            burned-in labels and noise specks).
        target_spacing_xy: in-plane model spacing (x = column, y = row) in mm; ``None`` keeps native.
        target_spacing_z: slice spacing in mm; ``None`` keeps the native slices (their count varies).
            Ignored for a single-slice image.
        output_size_hw: fixed in-plane model size (H rows, W columns) reached by crop/pad;
            ``None`` keeps the resampled size. z is never cropped or padded.
        crop: where the (H, W) window sits: ``"center"`` of the image or centred on the
            ``"foreground"`` bounding box (kept inside the image where it fits).
        laterality: mammogram left/right normalisation: ``"off"``, ``"auto"`` (meta Modality MG only:
            meta laterality, else tissue side), ``"meta_or_tissue"`` (any image), ``"tissue"`` (tissue
            side only).
        laterality_target: ``"L"``: every breast is shown as a left breast in standard display
            (chest wall at column 0, tissue on the left half of the array); ``"R"``: the mirror image.
        interpolation: image interpolation onto the model grid: ``"linear"``, ``"bspline"``,
            ``"nearest"``.
        antialias: Gaussian smoothing (sigma = (factor - 1) / 2 voxels) along axes that are
            downsampled, before resampling.
        pad_value: model-space value outside the image; ``None`` = minimum of the normalised image.
    """

    orientation: str | None = "LPS"
    n4: str = "auto"
    n4_shrink_factor: int = 4
    n4_iterations: tuple[int, ...] = (50, 50, 30, 20)
    n4_convergence_threshold: float = 1e-3
    intensity: str = "auto"
    window_center: float = 40.0
    window_width: float = 400.0
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    foreground_threshold: float | None = None
    foreground_largest_component: bool = True
    target_spacing_xy: tuple[float, float] | None = (1.0, 1.0)
    target_spacing_z: float | None = None
    output_size_hw: tuple[int, int] | None = (256, 256)
    crop: str = "foreground"
    laterality: str = "auto"
    laterality_target: str = "L"
    interpolation: str = "linear"
    antialias: bool = True
    pad_value: float | None = None

    def __post_init__(self) -> None:
        self._coerce()
        self.validate()

    # ------------------------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImagePreprocessConfig":
        """Build from :meth:`to_dict` output; missing keys take defaults, unknown keys are an error."""
        if not isinstance(data, dict):
            raise PreprocessingError(f"ImagePreprocessConfig: expected a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PreprocessingError(f"ImagePreprocessConfig: unknown parameter(s) {unknown}; "
                                     f"known: {sorted(known)}")
        return cls(**data)

    # ---------------------------------------------------------------------------------------- checks
    def _coerce(self) -> None:
        for name in ("n4_iterations", "clip_percentiles", "target_spacing_xy", "output_size_hw"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, bytes)):
                try:
                    setattr(self, name, tuple(value))
                except TypeError:
                    _bad(name, "must be a sequence", value)

    def validate(self) -> None:
        """Raise :class:`PreprocessingError` naming the first invalid parameter."""
        if self.orientation is not None:
            code = self.orientation
            if (not isinstance(code, str) or len(code) != 3
                    or any(sum(c.upper() in pair for c in code) != 1 for pair in _AXIS_PAIRS)):
                _bad("orientation", "must be a 3-letter code with one of L/R, P/A, S/I each (e.g. 'LPS')",
                     code)
            self.orientation = code.upper()
        _choice("n4", self.n4, N4_MODES)
        _choice("intensity", self.intensity, INTENSITY_MODES)
        _choice("crop", self.crop, CROP_MODES)
        _choice("laterality", self.laterality, LATERALITY_MODES)
        _choice("laterality_target", self.laterality_target, ("L", "R"))
        _choice("interpolation", self.interpolation, INTERPOLATIONS)
        if not _is_int(self.n4_shrink_factor) or self.n4_shrink_factor < 1:
            _bad("n4_shrink_factor", "must be an integer >= 1", self.n4_shrink_factor)
        if (not isinstance(self.n4_iterations, tuple) or not self.n4_iterations
                or any(not _is_int(i) or i < 1 for i in self.n4_iterations)):
            _bad("n4_iterations", "must be a non-empty list of integers >= 1", self.n4_iterations)
        _positive("n4_convergence_threshold", self.n4_convergence_threshold)
        _finite("window_center", self.window_center)
        _positive("window_width", self.window_width)
        p = self.clip_percentiles
        if (not isinstance(p, tuple) or len(p) != 2 or not all(_is_num(v) for v in p)
                or not 0.0 <= p[0] < p[1] <= 100.0):
            _bad("clip_percentiles", "must be (low, high) with 0 <= low < high <= 100", p)
        if self.foreground_threshold is not None:
            _finite("foreground_threshold", self.foreground_threshold)
        if self.target_spacing_xy is not None:
            t = self.target_spacing_xy
            if len(t) != 2 or not all(_is_num(v) and math.isfinite(v) and v > 0 for v in t):
                _bad("target_spacing_xy", "must be two positive, finite spacings in mm (x, y) or null", t)
        if self.target_spacing_z is not None:
            _positive("target_spacing_z", self.target_spacing_z)
        if self.output_size_hw is not None:
            s = self.output_size_hw
            if len(s) != 2 or not all(_is_int(v) and v >= 1 for v in s):
                _bad("output_size_hw", "must be two integers >= 1 (H, W) or null", s)
        if self.pad_value is not None:
            _finite("pad_value", self.pad_value)
        for name in ("foreground_largest_component", "antialias"):
            if not isinstance(getattr(self, name), bool):
                _bad(name, "must be true or false", getattr(self, name))


def _bad(name: str, what: str, value: Any) -> None:
    raise PreprocessingError(f"ImagePreprocessConfig.{name}: {what}, got {value!r}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _bad(name, f"must be one of {list(allowed)}", value)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(name: str, v: Any) -> None:
    if not _is_num(v) or not math.isfinite(v):
        _bad(name, "must be a finite number", v)


def _positive(name: str, v: Any) -> None:
    if not _is_num(v) or not math.isfinite(v) or v <= 0:
        _bad(name, "must be a positive, finite number", v)
