"""Chosen table columns -> clinical fields and manifest values (shared by the Duke and generic adapters).

``fields`` is a list of column names (types drafted from the values) or a mapping column name ->
spec (a type name such as ``"ordinal"``, or a partial field dict with ``type``, ``categories``,
``unit``, ``range``, ``help``, ...; ``None`` = draft). A field's name in the manifest and schema is
``column_map[column]`` when given, else the column name in snake case (``"Mol Subtype"`` ->
``mol_subtype``); its label is the column's name in the file. Drafting uses
:func:`mmxai_core.data.schema.draft_schema_from_csv` (see :func:`~mmxai_core.data.adapters._fields.draft_fields`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

from mmxai_core.data.adapters._fields import (category_text, draft_fields, field_from_spec, field_name,
                                              manifest_value)
from mmxai_core.data.schema import FieldSpec
from mmxai_core.data.adapters._tables import Table, is_missing
from mmxai_core.errors import DatasetError

FieldsArg = Sequence[str] | Mapping[str, Any] | None


@dataclasses.dataclass
class ColumnField:
    """One chosen column: its index in the table, its manifest/schema name and the user's spec."""

    index: int
    name: str
    source: str
    spec: Any = None


def select_columns(table: Table, fields: FieldsArg, column_map: Mapping[str, str] | None,
                   reserved: Mapping[int, str]) -> list[ColumnField]:
    """Find the chosen columns in ``table`` (errors name the file and the column).

    ``reserved`` maps column indices already used (id, target, image ...) to their role; choosing one
    of them as a clinical field is an error (the target as a field would leak the label).
    """
    column_map = dict(column_map or {})
    specs = dict(fields) if isinstance(fields, Mapping) else {name: None for name in (fields or [])}
    out = []
    for asked, spec in specs.items():
        idx = table.find(asked)
        if idx in reserved:
            raise DatasetError(f"{table.path}: column '{asked}' is the {reserved[idx]} column and cannot also "
                               f"be a clinical field")
        full = table.names[idx]
        name = column_map.get(asked) or column_map.get(full) or field_name(asked)
        out.append(ColumnField(idx, name, full, spec))
    return out


def build_fields(table: Table, chosen: Sequence[ColumnField], rows: Sequence[int]) -> tuple[list[dict], list[str]]:
    """Field dicts of the chosen columns, from the values of the kept ``rows``, and notes on drafted
    columns left out (no known value, free text).

    Columns without a spec, or with a partial dict without ``type``, are drafted with the schema
    module's drafter; the spec's keys then override the draft. The label is the column's name."""
    values = {c.name: [table.rows[i][c.index] for i in rows] for c in chosen}
    to_draft = [c for c in chosen if c.spec is None or (isinstance(c.spec, Mapping) and "type" not in c.spec)]
    drafted, notes = draft_fields({c.name: values[c.name] for c in to_draft})
    fields = []
    for c in chosen:
        if c in to_draft:
            if c.name not in drafted:
                continue
            fields.append({**drafted[c.name], "label": c.source, **dict(c.spec or {})})
        else:
            fields.append(field_from_spec(c.name, c.spec, values[c.name], label=c.source))
    return fields, notes


def row_values(table: Table, chosen: Sequence[ColumnField], specs: Sequence[FieldSpec], i: int) -> dict[str, str]:
    """Manifest values of data row ``i`` for the fields ``specs``; a bad value is a :class:`DatasetError`
    naming file, row and column."""
    by_name = {c.name: c for c in chosen}
    out = {}
    for f in specs:
        c = by_name[f.name]
        try:
            out[f.name] = manifest_value(f, table.rows[i][c.index])
        except ValueError as exc:
            raise table.error(i, c.index, str(exc)) from None
    return out


def label_of(table: Table, i: int, col: int, label_map: Mapping[Any, str] | None) -> str | None:
    """The class label of row ``i`` (None when the cell is unknown): the cell's text (``1.0`` ->
    ``1``), or ``label_map[text]``; a value missing from a given ``label_map`` is an error."""
    raw = table.rows[i][col]
    if is_missing(raw):
        return None
    text = category_text(raw)
    if label_map is None:
        return text
    mapping = {category_text(k): str(v) for k, v in label_map.items()}
    if text not in mapping:
        raise table.error(i, col, f"value '{raw}' is not in the label map ({', '.join(mapping)})")
    return mapping[text]


def class_order(labels: Sequence[str], label_map: Mapping[Any, str] | None) -> list[str]:
    """Class names in schema order: the order of ``label_map``'s values when given, else whole-number
    labels by value and names alphabetically (for two classes the second is the positive class)."""
    present = set(labels)
    if label_map:
        return [c for c in dict.fromkeys(str(v) for v in label_map.values()) if c in present]
    if all(re.fullmatch(r"[-+]?\d+", c) for c in present):
        return sorted(present, key=int)
    return sorted(present)
