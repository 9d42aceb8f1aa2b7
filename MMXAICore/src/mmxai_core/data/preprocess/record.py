"""What the preprocessing did to one image: JSON-serialisable, enough to carry maps back exactly.

The key fields are two grids: ``original`` (the input image's grid) and ``model`` (the grid of the
preprocessed array). Both are physical grids in the same patient space (LPS mm), so going back is one
resampling of a model-space map onto ``original`` (:func:`~mmxai_core.data.preprocess.to_original_grid`).
The per-step dicts record parameters and statistics for audit and reproduction.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from mmxai_core.errors import PreprocessingError
from mmxai_core.utils.atomic import write_json_atomic

RECORD_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Grid:
    """A voxel grid in patient space (SimpleITK conventions, see :mod:`mmxai_core.io.image`).

    Attributes:
        size: (X, Y, Z) number of voxels in index order i, j, k (``array.shape`` reversed).
        spacing: (sx, sy, sz) mm.
        origin: LPS mm of the centre of voxel [0, 0, 0].
        direction: 9 direction cosines, row-major; column c is the LPS direction of index axis c.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in np.ravel(self.direction)))
        if len(self.size) != 3 or len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise PreprocessingError(f"Grid: size, spacing, origin need 3 entries and direction 9, got {self}")

    @classmethod
    def of(cls, image) -> "Grid":
        """The grid of an :class:`~mmxai_core.io.Image` (or anything with ``size_xyz``, spacing,
        origin, direction)."""
        return cls(image.size_xyz, image.spacing, image.origin, np.asarray(image.direction).reshape(-1))

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Array shape (Z, Y, X) of an array on this grid."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def direction_matrix(self) -> np.ndarray:
        """(3, 3) direction matrix, columns = index axes."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def index_to_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous (i, j, k, 1) to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def resample_args(self) -> dict[str, Any]:
        """Keyword arguments for ``sitk.Resample`` that define this grid as the output grid."""
        return {"size": self.size, "outputOrigin": self.origin, "outputSpacing": self.spacing,
                "outputDirection": self.direction}

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Grid":
        try:
            return cls(data["size"], data["spacing"], data["origin"], data["direction"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PreprocessingError(f"Grid: cannot read {data!r}: {exc}") from exc


@dataclasses.dataclass
class PreprocessRecord:
    """Everything :meth:`ImagePreprocessor.apply` did to one image.

    Attributes:
        original: grid of the input image; maps are carried back onto it.
        model: grid of the preprocessed (Z, H, W) array, in the same patient space.
        steps: names of the steps applied, in order (``reorient``, ``n4``, ``intensity``,
            ``antialias``, ``resample``, ``crop_pad``, ``laterality_flip``).
        config: the :class:`ImagePreprocessConfig` as a dict.
        modality: meta Modality of the input ("" when absent).
        reorientation: codes, axis permutation and flips, or None when not requested.
        bias_field: N4 parameters and bias range, or None when N4 did not run.
        intensity: mode and the statistics used (window bounds, percentiles, mean/std, threshold).
        resampling: native and model spacing, interpolation, antialias sigmas (mm).
        crop_pad: resampled size, window start (may be negative = padding), per-side crop/pad in voxels.
        laterality: source of the decision, laterality found, whether the column axis was flipped; or
            None when laterality normalisation is off.
        pad_value: model-space value written outside the image.
        format_version: version of this record's layout.
    """

    original: Grid
    model: Grid
    steps: list[str]
    config: dict[str, Any]
    modality: str = ""
    reorientation: dict[str, Any] | None = None
    bias_field: dict[str, Any] | None = None
    intensity: dict[str, Any] = dataclasses.field(default_factory=dict)
    resampling: dict[str, Any] = dataclasses.field(default_factory=dict)
    crop_pad: dict[str, Any] = dataclasses.field(default_factory=dict)
    laterality: dict[str, Any] | None = None
    pad_value: float = 0.0
    format_version: int = RECORD_FORMAT_VERSION

    @property
    def model_shape(self) -> tuple[int, int, int]:
        """Shape (Z, H, W) of the preprocessed array."""
        return self.model.shape_zyx

    @property
    def original_shape(self) -> tuple[int, int, int]:
        """Shape (Z, Y, X) of the original image array."""
        return self.original.shape_zyx

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (round-trips exactly through ``json``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["original"] = self.original.to_dict()
        out["model"] = self.model.to_dict()
        return json.loads(json.dumps(out))  # deep copy, tuples -> lists, fails early if not JSON-able

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessRecord":
        if not isinstance(data, dict):
            raise PreprocessingError(f"PreprocessRecord: expected a dict, got {type(data).__name__}")
        version = data.get("format_version", RECORD_FORMAT_VERSION)
        if version != RECORD_FORMAT_VERSION:
            raise PreprocessingError(f"PreprocessRecord.format_version: {version!r} is not supported "
                                     f"(this version reads {RECORD_FORMAT_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PreprocessingError(f"PreprocessRecord: unknown field(s) {unknown}")
        for required in ("original", "model", "steps", "config"):
            if required not in data:
                raise PreprocessingError(f"PreprocessRecord.{required}: missing")
        kwargs = dict(json.loads(json.dumps(data)))
        kwargs["original"] = Grid.from_dict(kwargs["original"])
        kwargs["model"] = Grid.from_dict(kwargs["model"])
        return cls(**kwargs)

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON (atomically)."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PreprocessRecord":
        """Read a record written by :meth:`save`."""
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise PreprocessingError(f"{path}: cannot read preprocessing record: {exc}") from exc
        return cls.from_dict(data)
