"""Clinical schema: which clinical fields exist, their types, units, valid values and help text.

A schema file is YAML (``.yaml`` / ``.yml``) or JSON (``.json``)::

    name: breast-lesions                 # optional
    classes: [benign, malignant]         # optional; class order (binary: the second is the positive class)
    fields:
      - name: age                        # the manifest column / record key
        label: Age                       # shown in the panel (default: the name)
        type: numeric                    # numeric | ordinal | categorical | boolean
        unit: years                      # optional
        range: [18, 100]                 # numeric only, optional; inclusive; either bound may be null
        help: Age at imaging.            # optional
        dicom: PatientAge                # optional: DICOM keyword to prefill from
      - name: density
        type: ordinal
        categories: [1, 2, 3, 4]         # ordinal: in order (lowest first); categorical: any order
      - name: family_history
        type: boolean                    # false / true (also no / yes, 0 / 1)

Unknown is always allowed for every field: Python ``None``, a float NaN, an empty or blank string, or the
strings ``unknown``, ``NA``, ``N/A``, ``NaN``, ``?`` (any case). The string ``none`` is *not* unknown (it is
a real category in many tables, e.g. "calcifications: none"). No category may be spelled like unknown.

:func:`parse_value` turns one raw value (a CSV cell, a panel entry, a DICOM header value) into the parsed
value (``float`` for numeric, the declared category for ordinal / categorical, ``bool`` for boolean) or
``None`` for unknown; a value that does not fit raises :class:`ClinicalValueError` (a
:class:`~mmxai_core.errors.SchemaError`) naming the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from mmxai_core.errors import SchemaError
from mmxai_core.utils.atomic import write_text_atomic

FIELD_TYPES = ("numeric", "ordinal", "categorical", "boolean")
#: Raw strings (compared after ``strip().casefold()``) that mean "unknown".
UNKNOWN_STRINGS = frozenset({"", "unknown", "na", "n/a", "nan", "?"})
#: Manifest columns that are not clinical fields; no field may take one of these names.
RESERVED_COLUMNS = ("patient_id", "image", "label", "mask", "dataset", "split", "case_id")
BOOLEAN_CATEGORIES = (False, True)

_TRUE = frozenset({"true", "yes", "1", "1.0"})
_FALSE = frozenset({"false", "no", "0", "0.0"})
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_DICOM_KEYWORD_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*", re.ASCII)
_DICOM_AGE_RE = re.compile(r"(\d{1,3})\s*([DWMY])", re.ASCII | re.IGNORECASE)
_FIELD_KEYS = ("name", "label", "type", "unit", "range", "categories", "help", "dicom")
_TOP_KEYS = ("name", "description", "classes", "fields")


class ClinicalValueError(SchemaError):
    """A clinical value does not fit its field. ``field`` is the field name, ``problem`` the message
    without the field name (the manifest uses it with a row and column)."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"field '{field}': {problem}")


# ------------------------------------------------------------------------------------------ helpers
def is_unknown(raw: Any) -> bool:
    """True when ``raw`` means "unknown": None, a float NaN (also numpy / pandas NA), or a string that is
    blank or one of :data:`UNKNOWN_STRINGS` (any case)."""
    if raw is None:
        return True
    if isinstance(raw, str):
        return raw.strip().casefold() in UNKNOWN_STRINGS
    if isinstance(raw, (float, np.floating)):
        return bool(np.isnan(raw))
    return type(raw).__name__ in ("NAType", "NaTType")  # pandas.NA, pandas.NaT (without importing pandas)


def _is_number(x: Any) -> bool:
    return isinstance(x, (numbers.Real, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _fmt(x: Any) -> str:
    """Short display of a number or category (2.0 -> '2', 0.1 -> '0.1')."""
    if _is_number(x):
        xf = float(x)
        if math.isfinite(xf) and xf == int(xf) and abs(xf) < 1e15:
            return str(int(xf))
        return f"{xf:.6g}"
    return str(x)


def _number_key(x: Any) -> float | None:
    """The numeric value of a number or a number-like string, else None."""
    if _is_number(x):
        return float(x)
    if isinstance(x, str) and _NUMBER_RE.fullmatch(x.strip()):
        return float(x.strip())
    return None


def dicom_age_to_years(value: Any) -> float | None:
    """Convert a DICOM age string (VR ``AS``) to years: ``'052Y'`` -> 52.0, ``'006M'`` -> 0.5,
    ``'010W'`` -> 10 * 7 / 365.25, ``'020D'`` -> 20 / 365.25. A plain number is taken as years; unknown
    (see :func:`is_unknown`) gives None; anything else raises SchemaError."""
    if is_unknown(value):
        return None
    if _is_number(value):
        return float(value)
    text = str(value).strip()
    m = _DICOM_AGE_RE.fullmatch(text)
    if m is None:
        if _NUMBER_RE.fullmatch(text):
            return float(text)
        raise SchemaError(f"DICOM age {value!r} is not of the form nnnD, nnnW, nnnM or nnnY (e.g. '052Y')")
    n, unit = int(m.group(1)), m.group(2).upper()
    return {"Y": float(n), "M": n / 12.0, "W": n * 7 / 365.25, "D": n / 365.25}[unit]


# ------------------------------------------------------------------------------------------- fields
@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One clinical field.

    Attributes:
        name: key in records and column name in manifests (not one of :data:`RESERVED_COLUMNS`).
        type: ``numeric`` | ``ordinal`` | ``categorical`` | ``boolean``.
        label: display label (default: ``name``).
        unit: unit of a numeric field (e.g. ``years``, ``mm``), display only.
        range: ``(lo, hi)`` inclusive valid range of a numeric field; a bound may be None (unbounded).
        categories: ordinal (in order, lowest first) or categorical values (str or int); boolean fields
            have the fixed categories ``(False, True)`` and declare none.
        help: help text for the panel.
        dicom: DICOM header keyword the field can be prefilled from (e.g. ``PatientAge``).
    """

    name: str
    type: str
    label: str = ""
    unit: str | None = None
    range: tuple[float | None, float | None] | None = None
    categories: tuple[Any, ...] | None = None
    help: str = ""
    dicom: str | None = None
    _lookup: dict = dataclasses.field(default=None, init=False, repr=False, compare=False)  # type: ignore

    def __post_init__(self) -> None:
        _normalise_field(self)

    # -------------------------------------------------------------------------------- properties
    @property
    def is_numeric(self) -> bool:
        return self.type == "numeric"

    @property
    def levels(self) -> tuple[Any, ...]:
        """The categories in code order (boolean: ``(False, True)``); empty for numeric fields."""
        if self.type == "boolean":
            return BOOLEAN_CATEGORIES
        return tuple(self.categories or ())

    @property
    def cardinality(self) -> int:
        """Number of categories K (codes 0..K-1); 0 for a numeric field."""
        return len(self.levels)

    def code(self, value: Any) -> int:
        """Category code 0..K-1 of a *parsed* value (ordinal / categorical / boolean)."""
        if self.type == "boolean":
            return int(bool(value))
        return self.levels.index(value)

    def allowed(self) -> str:
        """What this field accepts, in words (for error messages and help)."""
        unit = f" {self.unit}" if self.unit else ""
        if self.type == "numeric":
            lo, hi = self.range if self.range is not None else (None, None)
            if lo is None and hi is None:
                return f"a number{unit}, or unknown"
            if lo is None:
                return f"a number <= {_fmt(hi)}{unit}, or unknown"
            if hi is None:
                return f"a number >= {_fmt(lo)}{unit}, or unknown"
            return f"a number in [{_fmt(lo)}, {_fmt(hi)}]{unit}, or unknown"
        if self.type == "boolean":
            return "true/false, yes/no or 1/0, or unknown"
        return "one of " + ", ".join(_fmt(c) for c in self.levels) + ", or unknown"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for YAML / JSON (optional keys left out when empty)."""
        d: dict[str, Any] = {"name": self.name, "label": self.label, "type": self.type}
        if self.unit:
            d["unit"] = self.unit
        if self.range is not None:
            d["range"] = [None if b is None else _plain_number(b) for b in self.range]
        if self.categories is not None:
            d["categories"] = list(self.categories)
        if self.help:
            d["help"] = self.help
        if self.dicom:
            d["dicom"] = self.dicom
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FieldSpec":
        """Build from a dict as in a schema file; unknown keys raise SchemaError."""
        if not isinstance(d, Mapping):
            raise SchemaError(f"a field entry must be a mapping with name and type, got {d!r}")
        name = d.get("name")
        who = f"field '{name}'" if isinstance(name, str) and name else "a field without a name"
        extra = [k for k in d if k not in _FIELD_KEYS]
        if extra:
            raise SchemaError(f"{who}: unknown key(s) {', '.join(map(repr, extra))}; "
                              f"allowed: {', '.join(_FIELD_KEYS)}")
        if "type" not in d:
            raise SchemaError(f"{who}: missing 'type' (one of {', '.join(FIELD_TYPES)})")
        return cls(name=name, type=d["type"], label=d.get("label") or "", unit=d.get("unit"),  # type: ignore[arg-type]
                   range=d.get("range"), categories=d.get("categories"), help=d.get("help") or "",
                   dicom=d.get("dicom"))


def _plain_number(x: float) -> int | float:
    x = float(x)
    return int(x) if x == int(x) and abs(x) < 1e15 else x


def _normalise_field(f: FieldSpec) -> None:
    """Validate and normalise a FieldSpec in place (frozen: via object.__setattr__)."""
    set_ = lambda k, v: object.__setattr__(f, k, v)  # noqa: E731
    if not isinstance(f.name, str) or not f.name.strip():
        raise SchemaError(f"a field has no name (got {f.name!r})")
    name = f.name
    who = f"field '{name}'"
    if name != name.strip():
        raise SchemaError(f"{who}: the name has leading or trailing spaces")
    if name in RESERVED_COLUMNS:
        raise SchemaError(f"{who}: the name is reserved for a manifest column "
                          f"({', '.join(RESERVED_COLUMNS)}); rename the field")
    ftype = f.type.strip().lower() if isinstance(f.type, str) else f.type
    if ftype not in FIELD_TYPES:
        raise SchemaError(f"{who}: unknown type {f.type!r}; use one of {', '.join(FIELD_TYPES)}")
    set_("type", ftype)
    if not isinstance(f.label, str):
        raise SchemaError(f"{who}: label must be text, got {f.label!r}")
    set_("label", f.label.strip() or name)
    if not isinstance(f.help, str):
        raise SchemaError(f"{who}: help must be text, got {f.help!r}")
    if f.unit is not None and not isinstance(f.unit, str):
        raise SchemaError(f"{who}: unit must be text, got {f.unit!r}")
    set_("unit", (f.unit or "").strip() or None)
    if f.dicom is not None:
        if not isinstance(f.dicom, str) or not _DICOM_KEYWORD_RE.fullmatch(f.dicom.strip()):
            raise SchemaError(f"{who}: dicom must be a DICOM keyword such as 'PatientAge', got {f.dicom!r}")
        set_("dicom", f.dicom.strip())

    # range
    if f.range is not None:
        if ftype != "numeric":
            raise SchemaError(f"{who}: a {ftype} field cannot have a range (only numeric fields do)")
        rng = f.range
        if isinstance(rng, (str, bytes)) or not isinstance(rng, Sequence) or len(rng) != 2:
            raise SchemaError(f"{who}: range must be [lo, hi], got {rng!r}")
        bounds = []
        for b in rng:
            if b is None:
                bounds.append(None)
            elif _is_number(b) and math.isfinite(float(b)):
                bounds.append(float(b))
            else:
                raise SchemaError(f"{who}: range bound {b!r} is not a finite number (use null for no bound)")
        lo, hi = bounds
        if lo is not None and hi is not None and lo > hi:
            raise SchemaError(f"{who}: range [{_fmt(lo)}, {_fmt(hi)}] has lo > hi")
        set_("range", (lo, hi))

    # categories
    if ftype == "numeric":
        if f.categories is not None:
            raise SchemaError(f"{who}: a numeric field cannot have categories (use type ordinal or "
                              f"categorical, or remove the categories)")
    elif ftype == "boolean":
        if f.categories is not None:
            raise SchemaError(f"{who}: a boolean field has the fixed categories false/true; remove "
                              f"'categories' (or use type categorical)")
    else:
        cats = f.categories
        if cats is None:
            raise SchemaError(f"{who}: a {ftype} field needs 'categories'")
        if isinstance(cats, (str, bytes)) or not isinstance(cats, Iterable):
            raise SchemaError(f"{who}: categories must be a list, got {cats!r}")
        cats = list(cats)
        if not cats:
            raise SchemaError(f"{who}: categories is empty")
        clean: list[Any] = []
        for c in cats:
            if isinstance(c, (bool, np.bool_)):
                raise SchemaError(f"{who}: category {c!r} is a boolean (in YAML, quote yes/no/true/false: "
                                  f"'yes'), or use type boolean")
            if isinstance(c, str):
                if is_unknown(c):
                    raise SchemaError(f"{who}: category {c!r} is spelled like 'unknown', which is always "
                                      f"allowed and means missing; remove or rename it")
                clean.append(c.strip())
            elif _is_number(c) and math.isfinite(float(c)):
                clean.append(int(c) if float(c) == int(c) else float(c))
            else:
                raise SchemaError(f"{who}: category {c!r} must be text or a number")
        set_("categories", tuple(clean))
    set_("_lookup", _build_lookup(f, who))


def _build_lookup(f: FieldSpec, who: str) -> dict:
    """Map case-folded text and numeric values of the categories to the declared categories."""
    text: dict[str, Any] = {}
    num: dict[float, Any] = {}
    for c in f.levels if f.type != "boolean" else ():
        t = str(c).strip().casefold()
        if t in text:
            raise SchemaError(f"{who}: categories {text[t]!r} and {c!r} are duplicates "
                              f"(categories are matched ignoring case)")
        text[t] = c
        k = _number_key(c)
        if k is not None:
            if k in num:
                raise SchemaError(f"{who}: categories {num[k]!r} and {c!r} are the same number")
            num[k] = c
    return {"text": text, "num": num}


# ------------------------------------------------------------------------------------------ parsing
def parse_value(field: FieldSpec, raw: Any) -> Any:
    """Parse one raw value of ``field``.

    Returns ``None`` for unknown (see :func:`is_unknown`); a ``float`` for numeric fields (within the
    range); the declared category for ordinal / categorical fields (text matched ignoring case and
    surrounding spaces; numbers matched by value, so ``2``, ``2.0`` and ``"2"`` all match category 2);
    ``True`` / ``False`` for boolean fields (true/false, yes/no, 1/0, any case).

    Raises:
        ClinicalValueError: the value does not fit; the message names the field, the value and what is
            allowed.
    """
    if is_unknown(raw):
        return None
    try:
        if field.type == "numeric":
            return _parse_numeric(field, raw)
        if field.type == "boolean":
            return _parse_boolean(field, raw)
        return _parse_category(field, raw)
    except _Bad as bad:
        raise ClinicalValueError(field.name, f"{bad}") from None


class _Bad(Exception):
    pass


def _show(raw: Any) -> str:
    text = repr(raw) if isinstance(raw, str) else _fmt(raw) if _is_number(raw) else repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_numeric(field: FieldSpec, raw: Any) -> float:
    if isinstance(raw, (bool, np.bool_)):
        raise _Bad(f"value {raw!r} is a boolean, expected {field.allowed()}")
    if _is_number(raw):
        x = float(raw)
    elif isinstance(raw, str) and _NUMBER_RE.fullmatch(raw.strip()):
        x = float(raw.strip())
    else:
        raise _Bad(f"value {_show(raw)} is not a number, expected {field.allowed()}")
    if not math.isfinite(x):
        raise _Bad(f"value {_show(raw)} is not a finite number, expected {field.allowed()}")
    if field.range is not None:
        lo, hi = field.range
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise _Bad(f"value {_fmt(x)} is out of range, expected {field.allowed()}")
    return x


def _parse_boolean(field: FieldSpec, raw: Any) -> bool:
    if isinstance(raw, (bool, np.bool_)):
        return bool(raw)
    if _is_number(raw):
        if float(raw) in (0.0, 1.0):
            return bool(float(raw))
    elif isinstance(raw, str):
        t = raw.strip().casefold()
        if t in _TRUE:
            return True
        if t in _FALSE:
            return False
    raise _Bad(f"value {_show(raw)} is not a boolean, expected {field.allowed()}")


def _parse_category(field: FieldSpec, raw: Any) -> Any:
    lookup = field._lookup
    if isinstance(raw, str):
        hit = lookup["text"].get(raw.strip().casefold())
        if hit is not None:
            return hit
    if isinstance(raw, (bool, np.bool_)):
        hit = lookup["text"].get(str(bool(raw)).casefold())
        if hit is not None:
            return hit
    else:
        k = _number_key(raw)
        if k is not None and k in lookup["num"]:
            return lookup["num"][k]
    raise _Bad(f"value {_show(raw)} is not a known category, expected {field.allowed()}")


# ------------------------------------------------------------------------------------------- schema
@dataclasses.dataclass
class ClinicalSchema:
    """An ordered list of clinical fields plus the class names.

    Attributes:
        fields: the fields in model order (the column order of the preprocessed (N, F) arrays).
        name: optional schema name.
        classes: optional class names in order; for two classes the second is the positive class.
        description: optional free text.
    """

    fields: list[FieldSpec]
    name: str | None = None
    classes: list[str] | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        self.fields = list(self.fields)
        for f in self.fields:
            if not isinstance(f, FieldSpec):
                raise SchemaError(f"schema fields must be FieldSpec objects, got {f!r}")
        seen: set[str] = set()
        for f in self.fields:
            if f.name in seen:
                raise SchemaError(f"field '{f.name}': duplicate field name")
            seen.add(f.name)
        if self.classes is not None:
            self.classes = _normalise_classes(self.classes)
        if self.name is not None and not isinstance(self.name, str):
            raise SchemaError(f"schema name must be text, got {self.name!r}")

    # ---------------------------------------------------------------------------------- access
    @property
    def names(self) -> list[str]:
        """Field names in schema order."""
        return [f.name for f in self.fields]

    def __len__(self) -> int:
        return len(self.fields)

    def __iter__(self) -> Iterator[FieldSpec]:
        return iter(self.fields)

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.fields)

    def field(self, name: str) -> FieldSpec:
        """The field called ``name``; SchemaError naming the known fields if there is none."""
        for f in self.fields:
            if f.name == name:
                return f
        raise SchemaError(f"unknown field {name!r}; the schema has: {', '.join(self.names) or '(none)'}")

    def parse(self, name: str, raw: Any) -> Any:
        """:func:`parse_value` for the field called ``name``."""
        return parse_value(self.field(name), raw)

    def parse_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Parse a whole record ``{field name: raw value}`` into ``{field name: value or None}`` for
        every field of the schema (absent fields are unknown).

        Raises:
            SchemaError: unknown field names (all named), or values that do not fit (all named, one
                message joined by ``; ``).
        """
        if not isinstance(record, Mapping):
            raise SchemaError(f"a clinical record must be a mapping of field name to value, got {type(record).__name__}")
        unknown = [k for k in record if k not in self]
        if unknown:
            raise SchemaError(f"unknown field(s) {', '.join(map(repr, unknown))}; "
                              f"the schema has: {', '.join(self.names) or '(none)'}")
        out: dict[str, Any] = {}
        problems: list[str] = []
        for f in self.fields:
            try:
                out[f.name] = parse_value(f, record.get(f.name))
            except ClinicalValueError as e:
                problems.append(str(e))
        if problems:
            raise SchemaError("; ".join(problems))
        return out

    def prefill_from_dicom(self, header: Mapping[str, Any]) -> dict[str, Any]:
        """Values for the fields that declare a ``dicom`` keyword present in ``header`` (a mapping of DICOM
        keyword to value, e.g. :attr:`Image.meta`). ``PatientAge`` strings are converted to years;
        ``PatientSex`` M/F/O also matches categories male/female/other. Header values that do not fit
        the field are left out (the user enters them), as are unknown values."""
        out: dict[str, Any] = {}
        for f in self.fields:
            if not f.dicom or f.dicom not in header:
                continue
            raw = header[f.dicom]
            try:
                if f.dicom == "PatientAge" and f.type == "numeric":
                    raw = dicom_age_to_years(raw)
                value = parse_value(f, raw)
            except SchemaError:
                value = None
                if f.dicom == "PatientSex" and isinstance(raw, str) and f.type != "numeric":
                    alias = {"m": "male", "f": "female", "o": "other"}.get(raw.strip().casefold())
                    try:
                        value = parse_value(f, alias) if alias else None
                    except SchemaError:
                        value = None
            if value is not None:
                out[f.name] = value
        return out

    # ------------------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the schema-file format."""
        d: dict[str, Any] = {}
        if self.name:
            d["name"] = self.name
        if self.description:
            d["description"] = self.description
        if self.classes is not None:
            d["classes"] = list(self.classes)
        d["fields"] = [f.to_dict() for f in self.fields]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<schema>") -> "ClinicalSchema":
        """Build and validate; every SchemaError message starts with ``source`` (the file name)."""
        try:
            if not isinstance(d, Mapping):
                raise SchemaError(f"a schema must be a mapping with 'fields', got {type(d).__name__}")
            extra = [k for k in d if k not in _TOP_KEYS]
            if extra:
                raise SchemaError(f"unknown top-level key(s) {', '.join(map(repr, extra))}; "
                                  f"allowed: {', '.join(_TOP_KEYS)}")
            fields = d.get("fields")
            if not isinstance(fields, list) or not fields:
                raise SchemaError("'fields' must be a non-empty list of field entries")
            return cls(fields=[FieldSpec.from_dict(f) for f in fields], name=d.get("name"),
                       classes=d.get("classes"), description=d.get("description"))
        except SchemaError as e:
            raise SchemaError(f"{source}: {e}") from None


def _normalise_classes(classes: Any) -> list[str]:
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
        raise SchemaError(f"classes must be a list of class names, got {classes!r}")
    out: list[str] = []
    for c in classes:
        if isinstance(c, (bool, np.bool_)) or not (isinstance(c, str) or _is_number(c)):
            raise SchemaError(f"class {c!r} must be a name (text) or a whole number")
        if _is_number(c):
            if float(c) != int(c):
                raise SchemaError(f"class {c!r} must be a name or a whole number")
            c = str(int(c))
        c = c.strip()
        if is_unknown(c):
            raise SchemaError(f"class {c!r} is empty or spelled like 'unknown'")
        out.append(c)
    folded = [c.casefold() for c in out]
    dups = sorted({c for c in out if folded.count(c.casefold()) > 1})
    if dups:
        raise SchemaError(f"duplicate class name(s) {', '.join(map(repr, dups))} (compared ignoring case)")
    if len(out) < 2:
        raise SchemaError(f"classes must name at least two classes, got {out}")
    return out


# ----------------------------------------------------------------------------------------- file I/O
def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    raise SchemaError(f"{path}: a schema file must end in .yaml, .yml or .json")


def load_schema(path: str | os.PathLike) -> ClinicalSchema:
    """Read and validate a schema file (YAML or JSON, chosen by the suffix).

    Raises:
        SchemaError: unreadable file, bad syntax, or an invalid schema; the message names the file and
            the field.
    """
    path = Path(path)
    fmt = _format_of(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SchemaError(f"{path}: schema file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError(f"{path}: cannot read the schema file ({e})") from None
    try:
        if fmt == "yaml":
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError
        first = str(e).strip().splitlines()
        raise SchemaError(f"{path}: not valid {fmt.upper()}: {' '.join(first)[:200]}") from None
    return ClinicalSchema.from_dict(data, source=str(path))


def schema_to_text(schema: ClinicalSchema, fmt: str = "yaml") -> str:
    """The schema as YAML (``fmt='yaml'``) or JSON text."""
    d = schema.to_dict()
    if fmt == "json":
        return json.dumps(d, indent=2, ensure_ascii=False) + "\n"
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _list(dumper: yaml.SafeDumper, data: list) -> Any:
        flat = all(not isinstance(x, (list, dict)) for x in data)  # short lists of scalars on one line
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)

    _Dumper.add_representer(list, _list)
    return yaml.dump(d, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False,
                     width=100)


def save_schema(schema: ClinicalSchema, path: str | os.PathLike) -> Path:
    """Write ``schema`` atomically as YAML or JSON (by the suffix of ``path``); returns the path."""
    path = Path(path)
    return write_text_atomic(path, schema_to_text(schema, _format_of(path)))


# ------------------------------------------------------------------------------------------ drafting
#: Column names (case-folded) that get a ``dicom`` keyword in a drafted schema.


def draft_schema_from_csv(*args, **kwargs) -> "ClinicalSchema":
    """Draft a schema from a CSV; see :func:`mmxai_core.data.schema_draft.draft_schema_from_csv`."""
    from mmxai_core.data.schema_draft import draft_schema_from_csv as _draft

    return _draft(*args, **kwargs)

