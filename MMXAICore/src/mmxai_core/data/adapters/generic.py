"""A generic clinical table + image folder -> MMXAI ``manifest.csv`` + ``schema.yaml``.

The table (.csv or .xlsx) has an ID column, a label column and the clinical columns you choose. Each
row's image is found either from an image column (a path relative to ``image_root``; a file, or a
folder holding one DICOM series) or from a pattern such as ``"{id}.png"`` or ``"{id}/{view}.dcm"``:
``{id}`` is the row's ID and ``{name}`` any column by its name as written in the file or in snake case.
An optional mask column works like the image column (empty = no mask); an optional split column holds
``train`` / ``val`` / ``test`` (empty = unassigned).

Rows without a label are dropped and listed. An image (or mask) that does not exist is an error
naming file, row and column, unless ``drop_unresolved=True`` (then the row is dropped and listed).
Field types are drafted from the values unless given (see :mod:`mmxai_core.data.adapters._columns`).
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any, Mapping

from mmxai_core.data.adapters._columns import (FieldsArg, build_fields, class_order, label_of, row_values,
                                               select_columns)
from mmxai_core.data.adapters._fields import field_name, field_spec
from mmxai_core.data.adapters._output import AdapterSummary, drop, new_summary, relative_to, write_outputs
from mmxai_core.data.adapters._tables import Table, is_blank, is_missing, read_table
from mmxai_core.errors import DatasetError

DATASET = "generic"
SPLITS = ("train", "val", "test")


def adapt_generic(table_path: str | os.PathLike, image_root: str | os.PathLike, out_dir: str | os.PathLike, *,
                  id_column: str, label_column: str, image_column: str | None = None,
                  image_pattern: str | None = None, fields: FieldsArg = None,
                  column_map: Mapping[str, str] | None = None, mask_column: str | None = None,
                  split_column: str | None = None, label_map: Mapping[Any, str] | None = None,
                  header_rows: int = 1, sheet: str | int | None = None, drop_unresolved: bool = False,
                  dataset: str = DATASET) -> AdapterSummary:
    """Convert a table + image folder to ``out_dir/manifest.csv`` + ``out_dir/schema.yaml``.

    Args:
        table_path: the clinical table (.csv or .xlsx).
        image_root: folder the image (and mask) paths are relative to.
        out_dir: output folder (created).
        id_column, label_column: the patient-ID and class columns.
        image_column / image_pattern: exactly one: a column of relative paths, or a pattern.
        fields: clinical columns (list, types drafted; or mapping column -> type/spec).
        column_map: column -> manifest/schema field name.
        mask_column: optional column of relative mask paths.
        split_column: optional column of train/val/test.
        label_map: label value -> class name.
        header_rows, sheet: as in :func:`mmxai_core.data.adapters._tables.read_table`.
        drop_unresolved: drop rows whose image or mask is missing instead of failing.
        dataset: value of the manifest's ``dataset`` column.
    """
    if (image_column is None) == (image_pattern is None):
        raise DatasetError("give exactly one of image_column (a column of paths) and image_pattern "
                           "(e.g. '{id}.png')")
    table = read_table(table_path, header_rows=header_rows, sheet=sheet)
    root = Path(image_root)
    if not root.is_dir():
        raise DatasetError(f"{root}: image folder not found")
    cols = {"patient-ID": table.find(id_column), "label": table.find(label_column)}
    for role, name in (("image", image_column), ("mask", mask_column), ("split", split_column)):
        if name is not None:
            cols[role] = table.find(name)
    if image_pattern is not None:
        _check_pattern(table, image_pattern)
    chosen = select_columns(table, fields, column_map, {v: k for k, v in cols.items()})
    summary = new_summary(dataset, out_dir)

    kept, unresolved = [], []
    for i, cells in enumerate(table.rows):
        if is_blank(cells):
            continue
        pid = cells[cols["patient-ID"]].strip()
        if is_missing(pid):
            raise table.error(i, cols["patient-ID"], "empty patient ID")
        label = label_of(table, i, cols["label"], label_map)
        if label is None:
            drop(summary, "no label", f"{pid} (row {table.row_number(i)})")
            continue
        image, problem = _image_path(table, i, root, image_column, image_pattern, cols, pid)
        mask = None
        if problem is None and "mask" in cols and not is_missing(cells[cols["mask"]]):
            mask = root / cells[cols["mask"]].strip()
            if not mask.exists():
                problem = table.where(i, cols["mask"], f"mask '{mask}' not found")
        if problem is not None:
            unresolved.append(problem)
            drop(summary, "image or mask not found", problem)
            continue
        kept.append((i, pid, label, image, mask, _split(table, i, cols.get("split"))))
    if unresolved and not drop_unresolved:
        raise DatasetError("\n".join([f"{unresolved[0]} ({len(unresolved)} unresolved row(s) in all; "
                                      f"drop_unresolved=True / --drop-unresolved leaves them out)",
                                      *unresolved[1:50]]))

    fields_out, draft_notes = build_fields(table, chosen, [k[0] for k in kept])
    specs = [field_spec(f) for f in fields_out]
    rows = []
    for i, pid, label, image, mask, split in kept:
        row = {"patient_id": pid, "image": relative_to(image, summary.out_dir), "label": label,
               "mask": relative_to(mask, summary.out_dir) if mask is not None else "",
               "dataset": dataset, "split": split}
        row.update(row_values(table, chosen, specs, i))
        rows.append(row)
    summary.notes.extend(f"draft: {n}" for n in draft_notes)
    if any(c.spec is None for c in chosen):
        summary.notes.append("field types drafted with mmxai_core.data.schema.draft_schema_from_csv where not "
                             "given: check schema.yaml before training")
    description = (f"Written by mmxai_core.data.adapters.generic from {table.path.name}; label = column "
                   f"'{table.names[cols['label']]}'. Drafted field types: check them.")
    return write_outputs(summary, rows, specs, classes=class_order([r["label"] for r in rows], label_map),
                         with_mask="mask" in cols, description=description)


def _pattern_keys(pattern: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise DatasetError(f"image pattern '{pattern}': {exc}") from None


def _check_pattern(table: Table, pattern: str) -> None:
    known = {"id"} | set(table.names) | {field_name(n) for n in table.names}
    for key in _pattern_keys(pattern):
        if key == "" or key not in known:
            raise DatasetError(f"image pattern '{pattern}': '{{{key}}}' names no column of {table.path} "
                               f"(use {{id}} or a column name)")


def _image_path(table: Table, i: int, root: Path, image_column, image_pattern, cols, pid):
    """(path, None) or (None, problem text naming file, row and column)."""
    cells = table.rows[i]
    if image_column is not None:
        cell = cells[cols["image"]].strip()
        if is_missing(cell):
            return None, table.where(i, cols["image"], "empty image path")
        path, where_col = root / cell, cols["image"]
    else:
        values = {}
        for c, name in enumerate(table.names):
            values[name] = cells[c].strip()
            values.setdefault(field_name(name), cells[c].strip())
        values["id"] = pid
        path, where_col = root / image_pattern.format(**values), f"image pattern {image_pattern}"
    if not path.exists():
        return None, table.where(i, where_col, f"image '{path}' not found")
    return path, None


def _split(table: Table, i: int, col: int | None) -> str:
    if col is None:
        return ""
    value = table.rows[i][col].strip().lower()
    if is_missing(value):
        return ""
    if value not in SPLITS:
        raise table.error(i, col, f"split '{table.rows[i][col]}' is not one of {', '.join(SPLITS)}")
    return value
