"""Clinical values entered for one case (CLI ``--clinical``, a worker request, a manifest row), checked
against the checkpoint's clinical schema. Research use only - not for diagnosis.

Input: a JSON object ``{"field": value, ...}``; a field that is absent, ``null`` or one of the schema's
"unknown" spellings (``"unknown"``, ``"NA"``, ``"?"``, ...) is unknown, so ``{}`` means "all unknown".
Refused, each with one line that names the source and the field:

* text that is not JSON, or JSON that is not an object (a list, a number, ...);
* a field the schema does not know (the closest known name is suggested), or a field given twice;
* a value of the wrong type: a list or object anywhere, a boolean for a number, text that is no number;
* ``NaN`` / ``Infinity`` (JSON does not allow them, Python's parser does): use ``null`` for unknown;
* a number outside the field's range, a category the field does not have.

    raw = read_clinical_arg('{"age": 57, "breast_density": "C"}')     # or "@case.json"
    values = validate_clinical(raw, schema, source="--clinical")       # {field: parsed value or None}
    arr, missing = clinical_arrays(values, preprocessor)              # (F,) float32, (F,) bool
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mmxai_core.data.schema import ClinicalSchema, ClinicalValueError, FieldSpec, is_unknown, parse_value
from mmxai_core.errors import SchemaError

#: Largest clinical JSON accepted (a record of a few fields is a few hundred bytes).
MAX_CLINICAL_BYTES = 1_000_000


class _NonFinite:
    """Stand-in for a JSON ``NaN`` / ``Infinity`` literal, so the error can name the field it sits in."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


class _Duplicate:
    """Marks a key given twice in one JSON object."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        out[key] = _Duplicate() if key in out else value
    return out


def parse_clinical_json(text: str, source: str = "clinical JSON") -> dict[str, Any]:
    """Parse ``text`` into a raw ``{field: value}`` mapping (values not yet checked against a schema).

    Raises:
        SchemaError: not valid JSON (with line and column), or not a JSON object.
    """
    if len(text) > MAX_CLINICAL_BYTES:
        raise SchemaError(f"{source}: clinical JSON of {len(text):,} characters is too long "
                          f"(at most {MAX_CLINICAL_BYTES:,})")
    if not text.strip():
        raise SchemaError(f"{source}: empty; give a JSON object such as {{\"age\": 57}} or {{}} for all unknown")
    try:
        data = json.loads(text, parse_constant=_NonFinite, object_pairs_hook=_pairs)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise SchemaError(f"{source}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise SchemaError(f"{source}: must be a JSON object of field -> value (e.g. {{\"age\": 57}}), "
                          f"got {_json_type(data)}")
    return data


def read_clinical_arg(arg: str, source: str = "--clinical") -> dict[str, Any]:
    """The CLI's ``--clinical`` value: JSON text, or ``@path`` to a JSON file (UTF-8)."""
    if arg.startswith("@"):
        path = Path(arg[1:])
        try:
            if path.stat().st_size > MAX_CLINICAL_BYTES:
                raise SchemaError(f"{path}: clinical JSON file is larger than {MAX_CLINICAL_BYTES:,} bytes")
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise SchemaError(f"{path}: clinical JSON file not found") from None
        except IsADirectoryError:
            raise SchemaError(f"{path}: is a folder, expected a clinical JSON file") from None
        except UnicodeDecodeError:
            raise SchemaError(f"{path}: clinical JSON file is not UTF-8 text") from None
        except OSError as exc:
            raise SchemaError(f"{path}: cannot read the clinical JSON file ({exc.strerror or exc})") from None
        return parse_clinical_json(text, source=str(path))
    return parse_clinical_json(arg, source=source)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, str):
        return "text"
    if isinstance(value, numbers.Number):
        return "a number"
    return type(value).__name__


def _check_type(spec: FieldSpec, value: Any) -> None:
    """Refuse values no field type can hold, before the schema's own parser sees them."""
    if isinstance(value, _Duplicate):
        raise ClinicalValueError(spec.name, "given more than once")
    if isinstance(value, _NonFinite) or (isinstance(value, (float, np.floating)) and not math.isfinite(value)):
        raise ClinicalValueError(spec.name, f"value {value!r} is not allowed; use null for unknown, or "
                                            f"{spec.allowed()}")
    if value is None or isinstance(value, (str, bool, np.bool_)):
        return
    if isinstance(value, (numbers.Real, np.integer, np.floating)):
        return
    raise ClinicalValueError(spec.name, f"wrong type: got {_json_type(value)}, expected {spec.allowed()}")


def validate_clinical(raw: Mapping[str, Any], schema: ClinicalSchema, source: str = "clinical values"
                      ) -> dict[str, Any]:
    """Check ``raw`` against ``schema``; return ``{field: parsed value or None}`` for every schema field.

    Raises:
        SchemaError: not a mapping, or unknown field(s) (all named, with the closest known name).
        ClinicalValueError (a SchemaError): a value that does not fit; every bad field is named, in one
            line joined by ``; ``, prefixed with ``source``.
    """
    if not isinstance(raw, Mapping):
        raise SchemaError(f"{source}: must be an object of field -> value, got {_json_type(raw)}")
    unknown = [str(k) for k in raw if k not in schema]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, schema.names, n=1, cutoff=0.6)
            hints.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise SchemaError(f"{source}: unknown field(s) {', '.join(hints)}; the model's fields are "
                          f"{', '.join(schema.names) or '(none)'}")
    out: dict[str, Any] = {}
    problems: list[ClinicalValueError] = []
    for spec in schema.fields:
        value = raw.get(spec.name)
        try:
            _check_type(spec, value)
            out[spec.name] = None if is_unknown(value) else parse_value(spec, value)
        except ClinicalValueError as exc:
            problems.append(exc)
    if problems:
        first = problems[0]
        text = "; ".join(str(p) for p in problems)
        err = ClinicalValueError(first.field, first.problem)
        err.args = (f"{source}: {text}",)
        raise err
    return out


def clinical_arrays(values: Mapping[str, Any], preprocessor: Any) -> tuple[np.ndarray, np.ndarray]:
    """Parsed values (:func:`validate_clinical`) -> model input ``(values (F,) float32, missing (F,) bool)``
    through the checkpoint's fitted ``ClinicalPreprocessor`` (model field order)."""
    arrays = preprocessor.transform([dict(values)])
    return arrays.values[0].astype(np.float32), arrays.missing[0].astype(bool)


def display_value(spec: FieldSpec, value: Any) -> str:
    """How an entered (parsed) value is shown: ``57 years``, ``C``, ``yes`` / ``no``, ``unknown``."""
    if value is None:
        return "unknown"
    if spec.type == "boolean":
        return "yes" if value else "no"
    if spec.is_numeric:
        v = float(value)
        text = str(int(v)) if v == int(v) and abs(v) < 1e15 else f"{v:.6g}"
        return f"{text} {spec.unit}" if spec.unit else text
    return str(value)


def displayed(values: Mapping[str, Any], schema: ClinicalSchema) -> dict[str, str]:
    """``{field: display text}`` for every schema field (see :func:`display_value`)."""
    return {f.name: display_value(f, values.get(f.name)) for f in schema.fields}


def plain_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Parsed values as JSON-safe plain values (numbers, text, booleans, null), schema order kept."""
    out: dict[str, Any] = {}
    for name, v in values.items():
        if v is None or isinstance(v, (bool, str)):
            out[name] = v
        elif isinstance(v, (np.bool_,)):
            out[name] = bool(v)
        elif isinstance(v, numbers.Integral):
            out[name] = int(v)
        elif isinstance(v, numbers.Real):
            out[name] = float(v)
        else:
            out[name] = str(v)
    return out


__all__ = ["MAX_CLINICAL_BYTES", "parse_clinical_json", "read_clinical_arg", "validate_clinical",
           "clinical_arrays", "display_value", "displayed", "plain_values"]
