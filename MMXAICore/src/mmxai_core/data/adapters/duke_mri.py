"""Duke Breast Cancer MRI (TCIA) -> MMXAI ``manifest.csv`` + ``schema.yaml``.

Inputs: the clinical spreadsheet (the real ``Clinical_and_Other_Features.xlsx`` has several header
rows: pass ``header_rows``; a ``.csv`` works too) and the DICOM download, one folder per patient
(``<dicom_root>/Breast_MRI_001/<study folder>/<series folder>/*.dcm``; the patient folders may also lie
one level down, e.g. under ``Duke-Breast-Cancer-MRI/``).

Every patient has cancer, so the class comes from a column you choose (``target``: molecular subtype,
tumour grade, ER status, ...) and the clinical fields are the other columns you choose (``fields``;
types drafted unless given, see :mod:`mmxai_core.data.adapters._columns`). The target can never also be
a field.

Series choice: each series folder's SeriesDescription (from its first file's header) is searched with
``series_pattern`` (a regular expression, case-insensitive, or a preset name from
:data:`SERIES_PRESETS`); ``series_exclude`` removes matches (e.g. ``"sub"`` for subtraction series).
Exactly one series must remain; a patient with none or several, or without a target value, or
without a folder, is dropped and listed in the summary with the descriptions found, so the pattern can
be refined (:func:`series_descriptions` lists all descriptions of a download). The manifest's
``image`` is the chosen series folder (``read_image`` reads a folder as one DICOM series), relative
to ``out_dir``. There is no official split: ``split`` is left empty for the splits module.
"""

from __future__ import annotations

import collections
import os
import re
from pathlib import Path
from typing import Any, Mapping

from mmxai_core.data.adapters._columns import (FieldsArg, build_fields, class_order, label_of, row_values,
                                               select_columns)
from mmxai_core.data.adapters._dicom import SeriesFolder, series_folders
from mmxai_core.data.adapters._fields import field_spec
from mmxai_core.data.adapters._output import AdapterSummary, drop, new_summary, relative_to, write_outputs
from mmxai_core.data.adapters._tables import is_blank, is_missing, read_table
from mmxai_core.errors import DatasetError

DATASET = "duke-breast-mri"

#: Named series patterns. The Duke download's dynamic series are described e.g. "ax dyn pre",
#: "ax dyn 1st pass", "ax 3d dyn" / "Ph1/ax 3d dyn" depending on the scanner: check your data with
#: :func:`series_descriptions` (``mmxai-adapt duke-mri --list-series``) and pass your own regex.
SERIES_PRESETS = {
    "pre": r"\bpre\b|pre[-_ ]?contrast",
    "post1": r"\b1st\b|\bph(ase)?[-_ ]?1\b|\bpost[-_ ]?1\b",
}


def series_pattern_regex(pattern: str) -> re.Pattern:
    """Compile a preset name or a regular expression (case-insensitive)."""
    text = SERIES_PRESETS.get(pattern, pattern)
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise DatasetError(f"series pattern '{pattern}': not a valid regular expression: {exc}") from None


def patient_folder(root: Path, patient_id: str, subfolders: list[Path] | None = None) -> Path | None:
    """``root/<id>`` or ``root/*/<id>`` (a download folder in between), else None.
    ``subfolders`` (the folders of ``root``) may be passed to save listing ``root`` per patient."""
    direct = root / patient_id
    if direct.is_dir():
        return direct
    if subfolders is None:
        subfolders = [p for p in sorted(root.iterdir()) if p.is_dir()]
    below = [p / patient_id for p in subfolders if (p / patient_id).is_dir()]
    return below[0] if len(below) == 1 else None


def choose_series(series: list[SeriesFolder], pattern: re.Pattern,
                  exclude: re.Pattern | None) -> tuple[SeriesFolder | None, str]:
    """(the one matching series, "") or (None, reason listing what was found)."""
    hits = [s for s in series if pattern.search(s.description) and not (exclude and exclude.search(s.description))]
    if len(hits) == 1:
        return hits[0], ""
    found = ", ".join(repr(s.description) for s in series) or "none"
    if not hits:
        return None, f"no series description matches /{pattern.pattern}/ (found: {found})"
    return None, (f"{len(hits)} series match /{pattern.pattern}/: "
                  f"{', '.join(repr(s.description) for s in hits)}; narrow the pattern or use series_exclude")


def series_descriptions(dicom_root: str | os.PathLike) -> dict[str, int]:
    """How many series folders under ``dicom_root`` carry each SeriesDescription (most common first)."""
    root = Path(dicom_root)
    if not root.is_dir():
        raise DatasetError(f"{root}: DICOM root folder not found")
    counts = collections.Counter(s.description for s in series_folders(root))
    return dict(counts.most_common())


def adapt_duke_mri(clinical: str | os.PathLike, dicom_root: str | os.PathLike, out_dir: str | os.PathLike, *,
                   target: str, fields: FieldsArg = None, id_column: str = "Patient ID", header_rows: int = 1,
                   sheet: str | int | None = None, column_map: Mapping[str, str] | None = None,
                   series_pattern: str = "pre", series_exclude: str | None = None,
                   label_map: Mapping[Any, str] | None = None, dataset: str = DATASET) -> AdapterSummary:
    """Convert the Duke Breast Cancer MRI data to ``out_dir/manifest.csv`` + ``out_dir/schema.yaml``.

    Args:
        clinical: the clinical spreadsheet (.xlsx or .csv).
        dicom_root: folder holding one folder per patient, named by the patient ID.
        out_dir: output folder (created).
        target: the column giving the class (e.g. ``"Mol Subtype"``, ``"ER"``); asked for by its full
            name or one of its header cells (see :mod:`mmxai_core.data.adapters._tables`).
        fields: clinical columns (list, types drafted; or mapping column -> type/spec).
        id_column: the patient-ID column (values = patient folder names).
        header_rows: number of header rows of the spreadsheet.
        sheet: workbook sheet (name or 0-based index).
        column_map: column -> manifest/schema field name.
        series_pattern: regex or preset (``"pre"``, ``"post1"``) matched against SeriesDescription.
        series_exclude: regex; matching series are never chosen.
        label_map: target value -> class name (e.g. ``{"0": "luminal", "1": "her2"}``).
        dataset: value of the manifest's ``dataset`` column.
    """
    table = read_table(clinical, header_rows=header_rows, sheet=sheet)
    root = Path(dicom_root)
    if not root.is_dir():
        raise DatasetError(f"{root}: DICOM root folder not found")
    pattern = series_pattern_regex(series_pattern)
    exclude = series_pattern_regex(series_exclude) if series_exclude else None
    id_col, target_col = table.find(id_column), table.find(target)
    if id_col == target_col:
        raise DatasetError(f"{table.path}: the id column and the target column are both '{table.names[id_col]}'")
    chosen = select_columns(table, fields, column_map,
                            {id_col: "patient-ID", target_col: "target"})
    summary = new_summary(dataset, out_dir)
    subfolders = [p for p in sorted(root.iterdir()) if p.is_dir()]

    seen: dict[str, int] = {}
    kept: list[tuple[int, str, str, Path]] = []  # (row index, patient, label, series folder)
    for i, cells in enumerate(table.rows):
        if is_blank(cells):
            continue
        pid = cells[id_col].strip()
        where = f"row {table.row_number(i)}"
        if is_missing(pid):
            drop(summary, "no patient ID", where)
            continue
        if pid in seen:
            raise table.error(i, id_col, f"patient '{pid}' also on row {table.row_number(seen[pid])}")
        seen[pid] = i
        label = label_of(table, i, target_col, label_map)
        if label is None:
            drop(summary, f"no value in the target column '{table.names[target_col]}'", f"{pid} ({where})")
            continue
        folder = patient_folder(root, pid, subfolders)
        if folder is None:
            drop(summary, "no patient folder", f"{pid} (looked for {root / pid})")
            continue
        series, why = choose_series(series_folders(folder), pattern, exclude)
        if series is None:
            drop(summary, "no single matching series", f"{pid}: {why}")
            continue
        kept.append((i, pid, label, series.path))

    fields_out, draft_notes = build_fields(table, chosen, [k[0] for k in kept])
    specs = [field_spec(f) for f in fields_out]
    rows = []
    for i, pid, label, series_path in kept:
        row = {"patient_id": pid, "image": relative_to(series_path, summary.out_dir), "label": label,
               "dataset": dataset, "split": ""}
        row.update(row_values(table, chosen, specs, i))
        rows.append(row)

    _notes(summary, root, seen, draft_notes, table.names[target_col], series_pattern, pattern)
    description = (f"Written by mmxai_core.data.adapters.duke_mri from {table.path.name}; label = column "
                   f"'{table.names[target_col]}'; series chosen by /{pattern.pattern}/ on SeriesDescription. "
                   f"Drafted field types: check them.")
    return write_outputs(summary, rows, specs, classes=class_order([r["label"] for r in rows], label_map),
                         with_mask=False, description=description)


def _notes(summary: AdapterSummary, root: Path, seen: dict[str, int], draft_notes: list[str], target: str,
           series_pattern: str, pattern: re.Pattern) -> None:
    summary.notes.append(f"label = column '{target}'; series chosen by /{pattern.pattern}/"
                         + (f" (preset '{series_pattern}')" if series_pattern in SERIES_PRESETS else ""))
    folders = {p.name for p in root.iterdir() if p.is_dir()}
    extra = sorted(folders - set(seen))
    if extra and len(extra) < len(folders):  # (all unmatched = folders lie one level down; say nothing)
        summary.notes.append(f"{len(extra)} folder(s) under {root} without a spreadsheet row: "
                             f"{', '.join(extra[:10])}{' ...' if len(extra) > 10 else ''}")
    summary.notes.extend(f"draft: {n}" for n in draft_notes)
