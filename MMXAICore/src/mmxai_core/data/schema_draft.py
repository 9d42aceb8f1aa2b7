"""Draft a clinical schema from a CSV table: a starting point the user then edits.

Rules (first match wins, per column; reserved manifest columns are skipped):

* boolean: every known value is true/false, yes/no or 0/1;
* ordinal: every known value is a whole number from 0 to ``max_ordinal`` (never for age columns);
  categories run from the observed minimum to the observed maximum;
* numeric: every known value is a number; the range is the observed min-max widened by 10 % of the span,
  rounded outwards, never below 0 when no value is negative;
* categorical: otherwise, up to ``max_categories`` levels (case-insensitive);
* columns with more levels, or with no known value, are left out with a warning.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from mmxai_core.data.schema import (RESERVED_COLUMNS, _NUMBER_RE, ClinicalSchema, FieldSpec, _fmt,
                                    is_unknown)
from mmxai_core.errors import SchemaError

_DICOM_GUESS = {"age": "PatientAge", "patient_age": "PatientAge", "patientage": "PatientAge",
                "sex": "PatientSex", "patient_sex": "PatientSex", "weight": "PatientWeight"}


def draft_schema_from_csv(csv_path: str | os.PathLike, exclude: Sequence[str] = RESERVED_COLUMNS,
                          max_categories: int = 20, max_ordinal: int = 10,
                          name: str | None = None) -> ClinicalSchema:
    """Draft a schema from a table of clinical values; review and edit it before use.

    Rules, per column (cells that mean unknown are ignored; columns in ``exclude`` and the reserved
    manifest columns are skipped):

    1. **boolean** when every known value is one of true/false, yes/no or 0/1 (any case);
    2. **ordinal** when every known value is a whole number between 0 and ``max_ordinal`` (e.g. a grade,
       a BI-RADS category, a density class); the categories are every integer from the observed minimum
       to the observed maximum;
    3. **numeric** when every known value is a number; the range is the observed [min, max] widened by
       10 % of its span on each side (at least 1 % of the magnitude, or 1), rounded outwards to two
       significant digits of the span, and not below 0 when no value is negative;
    4. **categorical** otherwise, when there are at most ``max_categories`` distinct values (case-
       insensitive; the first spelling seen is kept), categories sorted alphabetically;
    5. columns with more distinct values than that (free text, identifiers) or without any known value
       are left out with a warning.

    Labels come from the column names (``mean_radius`` -> ``Mean radius``); the help text records what was
    observed; ``age`` / ``sex`` / ``weight`` columns get the DICOM keyword to prefill from. Units are
    left empty: fill them in.
    """
    import pandas as pd

    csv_path = Path(csv_path)
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_filter=False)
    except FileNotFoundError:
        raise SchemaError(f"{csv_path}: file not found") from None
    except Exception as e:  # pandas parser errors, decode errors
        raise SchemaError(f"{csv_path}: cannot read as CSV ({e})") from None
    excluded = {str(c) for c in exclude}
    fields: list[FieldSpec] = []
    for column in table.columns:
        col = str(column).strip()
        if col in excluded or col in RESERVED_COLUMNS:
            continue
        raw = [v for v in table[column].tolist() if not is_unknown(v)]
        n_total, n_known = len(table), len(raw)
        spec = _draft_field(col, [v.strip() for v in raw], max_categories, max_ordinal,
                            f"{n_known} of {n_total} rows known")
        if spec is None:
            continue
        fields.append(spec)
    if not fields:
        raise SchemaError(f"{csv_path}: no column could be drafted as a clinical field")
    return ClinicalSchema(fields=fields, name=name or csv_path.stem)


def _draft_label(col: str) -> str:
    text = re.sub(r"[_\s]+", " ", col).strip()
    return text[:1].upper() + text[1:] if text else col


def _draft_field(col: str, values: list[str], max_categories: int, max_ordinal: int,
                 seen: str) -> FieldSpec | None:
    label = _draft_label(col)
    dicom = _DICOM_GUESS.get(col.casefold())
    if not values:
        warnings.warn(f"column '{col}' has no known value; left out of the drafted schema", stacklevel=3)
        return None
    folded = {v.casefold() for v in values}
    if folded <= {"true", "false"} or folded <= {"yes", "no"} or folded <= {"0", "1", "0.0", "1.0"}:
        return FieldSpec(name=col, type="boolean", label=label, help=f"Drafted: {seen}.",
                         dicom=None if dicom == "PatientAge" else dicom)
    if all(_NUMBER_RE.fullmatch(v) for v in values):
        x = np.array([float(v) for v in values])
        whole = bool(np.all(x == np.round(x)))
        if whole and x.min() >= 0 and x.max() <= max_ordinal and dicom != "PatientAge":
            cats = list(range(int(x.min()), int(x.max()) + 1))
            return FieldSpec(name=col, type="ordinal", label=label, categories=tuple(cats), dicom=dicom,
                             help=f"Drafted: whole numbers {cats[0]} to {cats[-1]}; {seen}.")
        lo, hi = _widened_range(float(x.min()), float(x.max()))
        return FieldSpec(name=col, type="numeric", label=label, range=(lo, hi), dicom=dicom,
                         help=f"Drafted: observed {_fmt(x.min())} to {_fmt(x.max())}; {seen}.")
    cats: dict[str, str] = {}
    for v in values:
        cats.setdefault(v.casefold(), v)
    if len(cats) > max_categories:
        warnings.warn(f"column '{col}' has {len(cats)} distinct values (more than max_categories="
                      f"{max_categories}); left out of the drafted schema", stacklevel=3)
        return None
    return FieldSpec(name=col, type="categorical", label=label, dicom=dicom,
                     categories=tuple(sorted(cats.values(), key=str.casefold)),
                     help=f"Drafted: {len(cats)} categories; {seen}.")


def _widened_range(lo: float, hi: float) -> tuple[float, float]:
    """Observed [lo, hi] widened by 10 % of the span (min 1 % of the magnitude, or 1), rounded outwards."""
    span = hi - lo
    pad = 0.1 * span if span > 0 else (0.01 * abs(hi) or 1.0)
    step = 10.0 ** (math.floor(math.log10(max(span, pad))) - 1)
    new_lo = math.floor((lo - pad) / step) * step
    new_hi = math.ceil((hi + pad) / step) * step
    if lo >= 0:
        new_lo = max(new_lo, 0.0)
    digits = max(0, -math.floor(math.log10(step)))
    return round(new_lo, digits), round(new_hi, digits)
