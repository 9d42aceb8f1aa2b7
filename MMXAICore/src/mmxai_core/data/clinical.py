"""Clinical preprocessing, scikit-learn style: fit on the training records, transform any records, save the
fitted state as plain JSON.

Output (see ``docs/CONVENTIONS.md``): two arrays of shape (N, F), F = number of schema fields, columns in
schema field order:

* ``values`` float32. Numeric fields: the value clipped to the training IQR fence
  ``[Q1 - k IQR, Q3 + k IQR]``, then min-max scaled with the training minimum and maximum *after*
  clipping, so training values land in [0, 1]; new values beyond the training range saturate at 0 or 1.
  A numeric field whose (clipped) training values are all equal, or that was never known in training,
  maps every known value to 0.5. Ordinal / categorical / boolean fields: the category code 0..K-1 as a
  float (boolean: false = 0, true = 1).
* ``missing`` bool: True where the value is unknown; there ``values`` is 0 and the model uses the field's
  learned "unknown" embedding.

The fitted state holds only per-field summary numbers (quartiles, fences, minimum, maximum, counts),
never training rows.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

import numpy as np

from mmxai_core.data.schema import ClinicalSchema, SchemaError
from mmxai_core.errors import PreprocessingError

STATE_FORMAT = "mmxai.clinical_preprocessor"
STATE_VERSION = 1
_STAT_KEYS = ("q1", "q3", "clip_lo", "clip_hi", "min", "max", "n_known")


@dataclasses.dataclass
class ClinicalArrays:
    """Preprocessed clinical data.

    Attributes:
        values: float32 (N, F); scaled numeric values in [0, 1] or category codes; 0 where missing.
        missing: bool (N, F); True where the field is unknown.
        names: the F field names, in column order.
    """

    values: np.ndarray
    missing: np.ndarray
    names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.values.shape[0])


def _records_to_dicts(records: Any) -> list[Mapping[str, Any]]:
    """A DataFrame (only the schema's columns are read later) or a sequence of mappings."""
    try:
        import pandas as pd

        if isinstance(records, pd.DataFrame):
            return records.to_dict(orient="records")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(records, Mapping):
        raise PreprocessingError("records must be a list of dicts or a DataFrame, got a single dict "
                                 "(wrap one record in a list)")
    if not isinstance(records, Iterable):
        raise PreprocessingError(f"records must be a list of dicts or a DataFrame, got {type(records).__name__}")
    return list(records)


class ClinicalPreprocessor:
    """Fit on training records, transform records into :class:`ClinicalArrays`.

    Args:
        schema: the clinical schema (defines the fields and their order).
        iqr_k: fence factor k of the IQR clipping (1.5 = Tukey's fences); None disables clipping.

    Records are a list of dicts ``{field name: raw value}`` (unknown names are an error; absent fields
    are unknown) or a pandas DataFrame (its other columns, e.g. a manifest's ``patient_id``, are ignored;
    absent schema columns are unknown). Raw values are parsed with the schema, so CSV strings and parsed
    values are both accepted.
    """

    def __init__(self, schema: ClinicalSchema, iqr_k: float | None = 1.5):
        if not isinstance(schema, ClinicalSchema):
            raise PreprocessingError(f"schema must be a ClinicalSchema, got {type(schema).__name__}")
        if iqr_k is not None and (isinstance(iqr_k, bool) or not isinstance(iqr_k, (int, float))
                                  or not math.isfinite(iqr_k) or iqr_k <= 0):
            raise PreprocessingError(f"iqr_k must be a positive number or None, got {iqr_k!r}")
        self.schema = schema
        self.iqr_k = None if iqr_k is None else float(iqr_k)
        self.stats_: dict[str, dict[str, float | int | None]] | None = None

    # ------------------------------------------------------------------------------------ helpers
    @property
    def is_fitted(self) -> bool:
        return self.stats_ is not None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.schema.names)

    def model_fields(self) -> list[tuple[str, str, int]]:
        """``(name, kind, cardinality)`` per field in column order: kind ``numeric`` (cardinality 0) or
        ``categorical`` (ordinal, categorical and boolean; cardinality K = number of categories)."""
        return [(f.name, "numeric", 0) if f.is_numeric else (f.name, "categorical", f.cardinality)
                for f in self.schema.fields]

    def _parse(self, records: Any) -> list[dict[str, Any]]:
        rows = _records_to_dicts(records)
        names = set(self.schema.names)
        from_frame = _is_frame(records)
        out = []
        for i, rec in enumerate(rows):
            if from_frame:
                rec = {k: v for k, v in rec.items() if k in names}
            try:
                out.append(self.schema.parse_record(rec))
            except SchemaError as e:
                raise SchemaError(f"record {i}: {e}") from None
        return out

    # ---------------------------------------------------------------------------------------- fit
    def fit(self, records: Any) -> "ClinicalPreprocessor":
        """Learn per-numeric-field quartiles, IQR fences and min/max from the training records."""
        parsed = self._parse(records)
        if not parsed:
            raise PreprocessingError("cannot fit the clinical preprocessor on zero records")
        stats: dict[str, dict[str, float | int | None]] = {}
        for f in self.schema.fields:
            if not f.is_numeric:
                continue
            x = np.array([r[f.name] for r in parsed if r[f.name] is not None], dtype=np.float64)
            stats[f.name] = _numeric_stats(x, self.iqr_k)
        self.stats_ = stats
        return self

    def fit_transform(self, records: Any) -> ClinicalArrays:
        return self.fit(records).transform(records)

    # ---------------------------------------------------------------------------------- transform
    def transform(self, records: Any) -> ClinicalArrays:
        """Records -> :class:`ClinicalArrays` with ``values`` float32 (N, F) and ``missing`` bool (N, F)."""
        self._check_fitted("transform")
        parsed = self._parse(records)
        n, nf = len(parsed), len(self.schema.fields)
        values = np.zeros((n, nf), dtype=np.float64)
        missing = np.ones((n, nf), dtype=bool)
        for j, f in enumerate(self.schema.fields):
            known = np.array([r[f.name] is not None for r in parsed], dtype=bool)
            missing[:, j] = ~known
            if not known.any():
                continue
            if f.is_numeric:
                x = np.array([r[f.name] for r in parsed if r[f.name] is not None], dtype=np.float64)
                values[known, j] = self._scale(f.name, x)
            else:
                values[known, j] = [f.code(r[f.name]) for r in parsed if r[f.name] is not None]
        return ClinicalArrays(values.astype(np.float32), missing, self.names)

    def _scale(self, name: str, x: np.ndarray) -> np.ndarray:
        s = self.stats_[name]  # type: ignore[index]
        if s["min"] is None or s["max"] == s["min"]:
            return np.full_like(x, 0.5)
        if s["clip_lo"] is not None:
            x = np.clip(x, s["clip_lo"], s["clip_hi"])
        return np.clip((x - s["min"]) / (s["max"] - s["min"]), 0.0, 1.0)

    def inverse_numeric(self, name: str, scaled: Any) -> Any:
        """Scaled value(s) of numeric field ``name`` -> value(s) in the field's unit (for display).

        Exact for values inside the training [min, max] after clipping; clipped values come back as the
        fence. A constant or never-known field gives its training value (or NaN if never known).
        Accepts a scalar or an array; returns the same shape (float64).
        """
        self._check_fitted("inverse_numeric")
        f = self.schema.field(name)
        if not f.is_numeric:
            raise PreprocessingError(f"field '{name}' is {f.type}, not numeric; use decode_category()")
        s = self.stats_[name]  # type: ignore[index]
        arr = np.asarray(scaled, dtype=np.float64)
        if s["min"] is None:
            out = np.full_like(arr, np.nan)
        else:
            out = s["min"] + arr * (s["max"] - s["min"])
        return float(out) if np.ndim(out) == 0 else out

    def decode_category(self, name: str, code: float | int) -> Any:
        """Category code (as in ``values``) of a non-numeric field -> the category (boolean: bool)."""
        f = self.schema.field(name)
        if f.is_numeric:
            raise PreprocessingError(f"field '{name}' is numeric; use inverse_numeric()")
        k = int(round(float(code)))
        if not 0 <= k < f.cardinality:
            raise PreprocessingError(f"field '{name}': code {code} is outside 0..{f.cardinality - 1}")
        return f.levels[k]

    def _check_fitted(self, what: str) -> None:
        if self.stats_ is None:
            raise PreprocessingError(f"ClinicalPreprocessor.{what}: not fitted yet; call fit(training records) "
                                     f"first or load a fitted state with from_json_dict()")

    # --------------------------------------------------------------------------------- JSON state
    def to_json_dict(self) -> dict[str, Any]:
        """The fitted state (and schema) as plain JSON-serialisable data; floats round-trip exactly."""
        self._check_fitted("to_json_dict")
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "iqr_k": self.iqr_k,
                "schema": self.schema.to_dict(),
                "numeric": {k: dict(v) for k, v in self.stats_.items()}}  # type: ignore[union-attr]

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any]) -> "ClinicalPreprocessor":
        """Rebuild a fitted preprocessor from :meth:`to_json_dict` output; gives bit-identical outputs."""
        if not isinstance(d, Mapping) or d.get("format") != STATE_FORMAT:
            raise PreprocessingError(f"not a clinical preprocessor state (expected format '{STATE_FORMAT}')")
        if d.get("version") != STATE_VERSION:
            raise PreprocessingError(f"clinical preprocessor state version {d.get('version')!r} is not "
                                     f"supported (this is version {STATE_VERSION})")
        schema = ClinicalSchema.from_dict(d.get("schema"), source="clinical preprocessor state")
        pre = cls(schema, iqr_k=d.get("iqr_k"))
        numeric = d.get("numeric")
        expected = {f.name for f in schema.fields if f.is_numeric}
        if not isinstance(numeric, Mapping) or set(numeric) != expected:
            raise PreprocessingError(f"clinical preprocessor state: numeric statistics must cover exactly "
                                     f"the numeric fields {sorted(expected)}")
        stats = {}
        for name, s in numeric.items():
            if not isinstance(s, Mapping) or set(s) != set(_STAT_KEYS):
                raise PreprocessingError(f"clinical preprocessor state: field '{name}' needs keys {_STAT_KEYS}")
            stats[name] = {k: (None if s[k] is None else (int(s[k]) if k == "n_known" else float(s[k])))
                           for k in _STAT_KEYS}
        pre.stats_ = stats
        return pre


def _is_frame(obj: Any) -> bool:
    try:
        import pandas as pd

        return isinstance(obj, pd.DataFrame)
    except ImportError:  # pragma: no cover
        return False


def _numeric_stats(x: np.ndarray, iqr_k: float | None) -> dict[str, float | int | None]:
    """Quartiles, fences and the min/max after clipping of the known training values ``x`` (1-D)."""
    if x.size == 0:
        return {k: None for k in _STAT_KEYS} | {"n_known": 0}
    q1, q3 = (float(q) for q in np.percentile(x, [25.0, 75.0]))
    if iqr_k is None:
        lo = hi = None
        clipped = x
    else:
        iqr = q3 - q1
        lo, hi = q1 - iqr_k * iqr, q3 + iqr_k * iqr
        clipped = np.clip(x, lo, hi)
    return {"q1": q1, "q3": q3, "clip_lo": lo, "clip_hi": hi, "min": float(clipped.min()),
            "max": float(clipped.max()), "n_known": int(x.size)}
