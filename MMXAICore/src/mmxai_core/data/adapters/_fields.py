"""Clinical field declarations (plain dicts in the schema-file format) and manifest cell values.

A field is a dict with ``name``, ``label``, ``type`` (``numeric`` | ``ordinal`` | ``categorical`` |
``boolean``) and, where they apply, ``unit``, ``range``, ``categories``, ``help``, ``dicom``
(:mod:`mmxai_core.data.schema` validates them when the schema is written).

* :func:`draft_fields` drafts fields from column values with the schema module's own drafter
  (:func:`mmxai_core.data.schema.draft_schema_from_csv`), so adapters and ``draft_schema_from_csv``
  agree;
* :func:`field_from_spec` completes a field the user typed (categories taken from the values);
* :func:`manifest_value` checks a cell with :func:`mmxai_core.data.schema.parse_value` (the parser
  ``load_manifest`` uses) and returns the text written to the manifest: numbers in shortest form
  (``57``, ``1.5``), categories as declared, booleans ``true`` / ``false``, unknown as an empty cell.
"""

from __future__ import annotations

import csv
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from mmxai_core.data.schema import FieldSpec, draft_schema_from_csv, parse_value
from mmxai_core.data.schema import FIELD_TYPES, ClinicalValueError, is_unknown
from mmxai_core.errors import DatasetError, SchemaError

FIELD_KEYS = ("name", "label", "type", "unit", "range", "categories", "help", "dicom")


def make_field(name: str, type_: str, label: str | None = None, **extra: Any) -> dict[str, Any]:
    """A field dict with keys in the schema-file order; ``None`` extras are left out."""
    if type_ not in FIELD_TYPES:
        raise DatasetError(f"field '{name}': unknown type '{type_}' (use one of {', '.join(FIELD_TYPES)})")
    unknown = set(extra) - set(FIELD_KEYS)
    if unknown:
        raise DatasetError(f"field '{name}': unknown key(s) {sorted(unknown)} (allowed: {', '.join(FIELD_KEYS)})")
    out: dict[str, Any] = {"name": name, "label": label or name, "type": type_}
    for key in FIELD_KEYS[3:]:
        if extra.get(key) is not None:
            out[key] = extra[key]
    return out


def field_name(text: str) -> str:
    """A schema/manifest name from a column name: lower case, runs of other characters as ``_``
    (``"Mol Subtype"`` -> ``"mol_subtype"``)."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", text.strip()).strip("_").lower()
    return name or "field"


def format_number(value: float) -> str:
    """Shortest text for a number: ``57.0`` -> ``"57"``, ``0.5`` -> ``"0.5"``."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _as_number(text: Any) -> float | None:
    try:
        return float(str(text).strip())
    except ValueError:
        return None


def category_text(value: Any) -> str:
    """Text of a category or label: whole numbers in shortest form (``1.0`` -> ``1``), else stripped text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return format_number(value)
    text = str(value).strip()
    if re.fullmatch(r"[-+]?\d+(\.0*)?", text):
        return format_number(float(text))
    return text


def _categories(values: Iterable[str]) -> list[Any]:
    """Distinct known values: numbers sorted numerically (ints where whole), else text sorted."""
    uniq = sorted({category_text(v) for v in values if not is_unknown(v)})
    nums = [_as_number(v) for v in uniq]
    if uniq and all(n is not None for n in nums):
        return [int(n) if float(n).is_integer() else n for n in sorted(nums)]  # type: ignore[arg-type]
    return uniq


def draft_fields(columns: Mapping[str, list[str]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Draft a field per column (``{name: values}``) with :func:`draft_schema_from_csv`.

    Returns ``({name: field dict}, notes)``; a column the drafter leaves out (no known value, free text)
    is missing from the dict and its reason is in the notes.
    """
    if not columns:
        return {}, []
    names = list(columns)
    n = len(next(iter(columns.values())))
    with tempfile.TemporaryDirectory(prefix="mmxai-draft-") as tmp:
        path = Path(tmp) / "columns.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(names)
            writer.writerows([[columns[c][i] for c in names] for i in range(n)])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                schema = draft_schema_from_csv(path, exclude=())
            except SchemaError:  # nothing could be drafted; the warnings say why
                schema = None
    notes = [str(w.message) for w in caught]
    drafted = {} if schema is None else {f.name: f.to_dict() for f in schema.fields}
    return drafted, notes


def field_from_spec(name: str, spec: str | Mapping[str, Any], values: Iterable[str], *,
                    label: str | None = None) -> dict[str, Any]:
    """Complete the user's field ``spec`` (a type name or a partial field dict with ``type``).

    Missing categories of an ordinal or categorical field are taken from the values (ordinal: numbers
    in numeric order; the order of text ordinals must be given).
    """
    given: dict[str, Any] = {"type": spec} if isinstance(spec, str) else dict(spec)
    type_ = given.pop("type", None)
    if type_ is None:
        raise DatasetError(f"field '{name}': the spec {dict(spec)} has no 'type'")
    given.pop("name", None)
    lab = given.pop("label", None) or label
    if type_ in ("ordinal", "categorical") and not given.get("categories"):
        cats = _categories(values)
        if not cats:
            raise DatasetError(f"field '{name}': type {type_} needs categories and the column has no "
                               f"known value to take them from")
        if type_ == "ordinal" and not all(isinstance(c, (int, float)) for c in cats):
            raise DatasetError(f"field '{name}': the order of the text categories {cats} of an ordinal "
                               f"field cannot be guessed; give 'categories' in order")
        given["categories"] = cats
    return make_field(name, type_, lab, **given)


def field_spec(field: Mapping[str, Any]) -> FieldSpec:
    """The validated :class:`FieldSpec` of a field dict (a :class:`DatasetError` if it is invalid)."""
    try:
        return FieldSpec.from_dict(field)
    except SchemaError as exc:
        raise DatasetError(str(exc)) from None


def manifest_value(spec: FieldSpec, raw: Any) -> str:
    """The manifest text of ``raw`` for ``spec`` (``""`` when unknown); ``ValueError`` saying what is
    wrong when it does not fit."""
    try:
        value = parse_value(spec, raw)
    except ClinicalValueError as exc:
        raise ValueError(exc.problem) from None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format_number(value)
    return str(value)
