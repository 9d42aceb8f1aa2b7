"""Manifest: the CSV that lists a cohort, one row per image, with full validation.

Columns (header names exact; any order):

==============  ==========  ==============================================================================
column          required    meaning
==============  ==========  ==============================================================================
``patient_id``  yes         patient identifier (splits are grouped by it)
``image``       yes         image file or DICOM series folder, relative to the manifest's folder
``label``       yes         class: a name (``benign``) or a whole number (``0``, ``1``)
``mask``        no          lesion ROI mask image, same grid as the image; empty = no mask
``dataset``     no          source dataset name (free text)
``split``       no          predefined split: ``train``, ``val`` (or ``validation``), ``test``; empty = none
``case_id``     no          case identifier; must be unique where given
(schema names)  no          clinical fields as named in the schema; empty / ``unknown`` / ``NA`` / ``?`` =
                            unknown; a field without a column is unknown for every row
==============  ==========  ==============================================================================

:func:`load_manifest` reports every problem of the file at once in one
:class:`~mmxai_core.errors.ManifestError`, each with its row (spreadsheet numbering: the header is row 1,
the first data row is row 2) and column.

Paths may not leave the manifest's folder (``../``, absolute paths elsewhere) unless allowed:
``load_manifest(..., allow_outside=True)``, or, for code that calls :func:`load_manifest` deeper down (the
CLIs' ``--allow-outside-paths``), within ``with outside_paths_allowed():``.

Class names are the schema's ``classes`` when it declares them (labels are matched ignoring case), else
the sorted unique labels (whole-number labels as ``"0"``, ``"1"``, ... sorted by value).
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import dataclasses
import difflib
import io
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from mmxai_core.data.schema import (RESERVED_COLUMNS, ClinicalSchema, ClinicalValueError, is_unknown,
                                    _NUMBER_RE)
from mmxai_core.errors import ManifestError, MMXAIError

REQUIRED_COLUMNS = ("patient_id", "image", "label")
SPLIT_NAMES = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "test": "test", "testing": "test"}

Problem = tuple[int | None, str | None, str]


@dataclasses.dataclass
class Manifest:
    """A validated manifest.

    Attributes:
        path: the manifest file (absolute).
        root: its folder; relative image / mask paths were resolved against it.
        table: one row per image, columns ``row`` (spreadsheet row number), ``patient_id``, ``image``
            (absolute path), ``mask`` (absolute path or None), ``label`` (class name), ``label_index``
            (0..C-1 into ``classes``), ``dataset``, ``split`` (``train`` / ``val`` / ``test`` or None),
            ``case_id`` (or None), then the clinical columns as raw text. Text columns are object dtype.
        classes: class names in order (label_index order).
        schema: the clinical schema the manifest was checked against.
        records: parsed clinical values per row, ``{field: value or None}`` for every schema field
            (feed them to :class:`~mmxai_core.data.clinical.ClinicalPreprocessor`).
    """

    path: Path
    root: Path
    table: pd.DataFrame
    classes: list[str]
    schema: ClinicalSchema
    records: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.table)

    @property
    def labels(self) -> np.ndarray:
        """Class index per row, int64 (N,)."""
        return self.table["label_index"].to_numpy(dtype=np.int64)

    @property
    def patients(self) -> np.ndarray:
        """Patient id per row, object (N,)."""
        return self.table["patient_id"].to_numpy(dtype=object)

    @property
    def rows(self) -> np.ndarray:
        """Spreadsheet row number per row, int64 (N,)."""
        return self.table["row"].to_numpy(dtype=np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Manifest":
        """The manifest restricted to the given row positions (0-based, in that order)."""
        idx = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        return Manifest(self.path, self.root, self.table.iloc[idx].reset_index(drop=True), list(self.classes),
                        self.schema, [self.records[i] for i in idx])


# ------------------------------------------------------------------------------------------ reading
def _read_rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(path, [(None, None, "manifest file not found")]) from None
    except IsADirectoryError:
        raise ManifestError(path, [(None, None, "is a folder, not a CSV file")]) from None
    except UnicodeDecodeError as e:
        raise ManifestError(path, [(None, None, f"not UTF-8 text ({e.reason} at byte {e.start}); "
                                                f"save the CSV as UTF-8")]) from None
    except OSError as e:
        raise ManifestError(path, [(None, None, f"cannot read ({e.strerror or e})")]) from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise ManifestError(path, [(None, None, f"not a valid CSV file ({e})")]) from None
    if not rows or not any(c.strip() for c in rows[0]):
        raise ManifestError(path, [(1, None, "no header row (the file is empty or starts with a blank line)")])
    return rows


def _resolve(root: str, value: str, allow_outside: bool) -> tuple[str, str | None]:
    """Absolute normalised path of ``value`` (relative to ``root``) and a problem or None.

    The containment check is lexical (``..`` removed), so a symlink the user placed inside the folder
    still works, while ``../../etc/passwd`` or ``/etc/passwd`` is refused.
    """
    p = os.path.normpath(value if os.path.isabs(value) else os.path.join(root, value))
    if not allow_outside:
        try:
            inside = os.path.commonpath([root, p]) == root
        except ValueError:  # different drives on Windows
            inside = False
        if not inside:
            return p, (f"path '{value}' leaves the manifest's folder {root} "
                       f"(refused; allow it with --allow-outside-paths, or allow_outside=True)")
    return p, None


def _exists(path: str) -> bool:
    try:
        return os.path.exists(path)
    except (ValueError, OSError):  # e.g. an embedded NUL character
        return False


def _check_header(header: list[str], schema: ClinicalSchema) -> tuple[dict[str, int], list[Problem]]:
    """Column name -> cell index, and the header's problems (row 1)."""
    problems: list[Problem] = []
    columns: dict[str, int] = {}
    for i, name in enumerate(header):
        if not name:
            problems.append((1, None, f"column {i + 1} has no name"))
        elif name in columns:
            problems.append((1, name, "duplicate column"))
        else:
            columns[name] = i
    for name in REQUIRED_COLUMNS:
        if name not in columns:
            problems.append((1, name, "required column is missing"))
    for name in columns:
        if name not in RESERVED_COLUMNS and name not in schema:
            close = difflib.get_close_matches(name, list(RESERVED_COLUMNS) + schema.names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append((1, name, f"unknown column: neither a reserved column ({', '.join(RESERVED_COLUMNS)}) "
                                      f"nor a field of the schema{hint}"))
    return columns, problems


#: Default of ``load_manifest(allow_outside=None)``; set by :func:`outside_paths_allowed`.
_ALLOW_OUTSIDE: contextvars.ContextVar[bool] = contextvars.ContextVar("mmxai_allow_outside_paths", default=False)


@contextlib.contextmanager
def outside_paths_allowed(allowed: bool = True) -> Iterator[None]:
    """Within the block, :func:`load_manifest` calls that do not say ``allow_outside`` use ``allowed``.

    For a CLI flag (``--allow-outside-paths``) that must reach a ``load_manifest`` call inside library code
    (evaluation, batch explanation). Per thread / task (a context variable); processes started inside the
    block do not inherit it.
    """
    token = _ALLOW_OUTSIDE.set(bool(allowed))
    try:
        yield
    finally:
        _ALLOW_OUTSIDE.reset(token)


def load_manifest(path: str | os.PathLike, schema: ClinicalSchema, check_files: bool = True,
                  check_masks: bool = True, allow_outside: bool | None = None,
                  min_cases_per_class: int = 2) -> Manifest:
    """Read and validate a manifest CSV (UTF-8, a byte-order mark is fine).

    Args:
        path: the manifest CSV.
        schema: clinical schema naming the clinical columns (and optionally the classes).
        check_files: check that every image and mask exists.
        check_masks: with ``check_files``, check that each mask has its image's size, spacing, origin and
            direction (headers only; voxels are not read).
        allow_outside: allow paths that leave the manifest's folder (None: False, or what an enclosing
            :func:`outside_paths_allowed` says).
        min_cases_per_class: each class needs at least this many *patients* (default 2: a training
            manifest, where a class with a single patient cannot be split nor learned); with a value > 0
            there must also be at least two classes. Use 0 or 1 for an evaluation-only manifest.

    Returns:
        a :class:`Manifest`.

    Raises:
        ManifestError: listing every problem found, each with row and column.
    """
    if allow_outside is None:
        allow_outside = _ALLOW_OUTSIDE.get()
    path = Path(os.path.abspath(path))
    root = str(path.parent)
    rows = _read_rows(path)
    header = [h.strip() for h in rows[0]]
    columns, problems = _check_header(header, schema)
    clinical_cols = [f.name for f in schema.fields if f.name in columns]

    # ----- rows
    out_rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    raw_labels: list[tuple[int, str]] = []      # (position in out_rows, raw label)
    seen_case: dict[tuple[str, str], int] = {}
    seen_case_id: dict[str, int] = {}
    mask_pairs: list[tuple[int, str, str]] = []  # (row, image, mask) to check geometry
    ncols = len(header)
    for k, cells in enumerate(rows[1:]):
        r = k + 2
        if not any(c.strip() for c in cells):
            continue  # blank line
        if len(cells) < ncols or any(c.strip() for c in cells[ncols:]):
            problems.append((r, None, f"has {len(cells)} cells but the header has {ncols}"))
            continue
        cell = lambda name: cells[columns[name]].strip() if name in columns else ""  # noqa: E731
        row: dict[str, Any] = {"row": r}

        pid = cell("patient_id")
        if "patient_id" in columns and is_unknown(pid):
            problems.append((r, "patient_id", "missing patient id"))
        row["patient_id"] = pid

        for col in ("image", "mask"):
            value = cell(col)
            row[col] = None
            if is_unknown(value):
                if col == "image" and "image" in columns:
                    problems.append((r, "image", "missing image path"))
                continue
            resolved, bad = _resolve(root, value, allow_outside)
            row[col] = resolved
            if bad:
                problems.append((r, col, bad))
                row[col] = None
            elif check_files and not _exists(resolved):
                problems.append((r, col, f"file not found: {value}"))
                row[col] = None
        if check_files and check_masks and row["image"] and row["mask"]:
            mask_pairs.append((r, row["image"], row["mask"]))

        label = cell("label")
        if "label" in columns and is_unknown(label):
            problems.append((r, "label", "missing label"))
        elif label:
            raw_labels.append((len(out_rows), label))

        split = cell("split")
        row["split"] = None
        if not is_unknown(split):
            row["split"] = _SPLIT_ALIASES.get(split.casefold())
            if row["split"] is None:
                problems.append((r, "split", f"split '{split}' is not one of {', '.join(SPLIT_NAMES)} "
                                             f"(or empty)"))
        row["dataset"] = None if is_unknown(cell("dataset")) else cell("dataset")
        case_id = cell("case_id")
        row["case_id"] = None if is_unknown(case_id) else case_id

        if row["case_id"] is not None:
            if row["case_id"] in seen_case_id:
                problems.append((r, "case_id", f"duplicate case_id '{case_id}' (also row "
                                               f"{seen_case_id[row['case_id']]})"))
            else:
                seen_case_id[row["case_id"]] = r
        if pid and row["image"]:
            key = (pid, row["image"])
            if key in seen_case:
                problems.append((r, "image", f"duplicate case: same patient_id and image as row {seen_case[key]}"))
            else:
                seen_case[key] = r

        record: dict[str, Any] = {}
        for name in schema.names:
            raw = cell(name)
            row[name] = raw if name in columns else None
            try:
                record[name] = schema.parse(name, raw)
            except ClinicalValueError as e:
                problems.append((r, name, e.problem))
                record[name] = None
        out_rows.append(row)
        records.append(record)

    if not out_rows and not problems:
        problems.append((None, None, "no data rows"))

    classes, label_names, label_problems = _resolve_labels(raw_labels, out_rows, schema)
    problems += label_problems
    for pos, name in label_names.items():
        out_rows[pos]["label"] = name
    if min_cases_per_class > 0 and classes and not label_problems:
        problems += _class_count_problems(out_rows, classes, min_cases_per_class)
    for r, image, mask in mask_pairs:
        problem = _mask_problem(image, mask)
        if problem:
            problems.append((r, "mask", problem))

    if problems:
        order = {c: i for i, c in enumerate(header)}
        problems.sort(key=lambda p: (p[0] or 0, order.get(p[1], len(order)) if p[1] else -1))
        raise ManifestError(path, problems)

    base = ["row", "patient_id", "image", "mask", "label", "label_index", "dataset", "split", "case_id"]
    for row in out_rows:
        row["label_index"] = classes.index(row["label"])
    table = pd.DataFrame({c: pd.Series([row[c] for row in out_rows], dtype=object)
                          for c in base + [n for n in clinical_cols]})
    table["row"] = table["row"].astype(np.int64)
    table["label_index"] = table["label_index"].astype(np.int64)
    return Manifest(path=path, root=Path(root), table=table, classes=classes, schema=schema, records=records)


# ------------------------------------------------------------------------------------------- labels
def _canonical_number(label: str) -> str | None:
    """Whole-number labels in canonical form ('1', '1.0', ' 1 ' -> '1'); other numbers as written
    (the caller reports them); None for a label that is not a number."""
    t = label.strip()
    if not _NUMBER_RE.fullmatch(t):
        return None
    x = float(t)
    return str(int(x)) if x == int(x) else t


def _resolve_labels(raw_labels: list[tuple[int, str]], out_rows: list[dict[str, Any]],
                    schema: ClinicalSchema) -> tuple[list[str], dict[int, str], list[Problem]]:
    """Class names, the class name per row position, and label problems."""
    problems: list[Problem] = []
    names: dict[int, str] = {}
    if schema.classes is not None:
        classes = list(schema.classes)
        folded = {c.casefold(): c for c in classes}
        for pos, raw in raw_labels:
            t = raw.strip()
            hit = folded.get(t.casefold())
            if hit is None:
                num = _canonical_number(t)
                hit = folded.get(num) if num is not None else None
            if hit is None:
                problems.append((out_rows[pos]["row"], "label", f"label '{raw}' is not one of the schema's "
                                                                f"classes: {', '.join(classes)}"))
            else:
                names[pos] = hit
        return classes, names, problems

    numeric = [(pos, raw) for pos, raw in raw_labels if _canonical_number(raw) is not None]
    named = [(pos, raw) for pos, raw in raw_labels if _canonical_number(raw) is None]
    if numeric and named:
        minority, what, other = (numeric, "a number", "names") if len(numeric) <= len(named) \
            else (named, "a name", "numbers")
        for pos, raw in minority:
            problems.append((out_rows[pos]["row"], "label", f"label '{raw}' is {what} but the other labels "
                                                            f"are {other} (mixed label types)"))
        return [], names, problems
    if numeric:
        for pos, raw in numeric:
            c = _canonical_number(raw)
            if "." in c or "e" in c.lower():  # type: ignore[operator]
                problems.append((out_rows[pos]["row"], "label", f"numeric label '{raw}' is not a whole number"))
            else:
                names[pos] = c  # type: ignore[assignment]
        classes = sorted(set(names.values()), key=int)
        return classes, names, problems
    first: dict[str, tuple[str, int]] = {}
    for pos, raw in named:
        t = raw.strip()
        prev = first.setdefault(t.casefold(), (t, out_rows[pos]["row"]))
        if prev[0] != t:
            problems.append((out_rows[pos]["row"], "label", f"label '{t}' differs only in case from "
                                                            f"'{prev[0]}' (row {prev[1]}); spell classes "
                                                            f"consistently or declare classes in the schema"))
        names[pos] = prev[0]
    return sorted(set(names.values())), names, problems


def _class_count_problems(out_rows: list[dict[str, Any]], classes: list[str], min_cases: int) -> list[Problem]:
    problems: list[Problem] = []
    patients: dict[str, set[str]] = {c: set() for c in classes}
    first_rows: dict[str, list[int]] = {c: [] for c in classes}
    for row in out_rows:
        if row.get("label") in patients:
            patients[row["label"]].add(row["patient_id"])
            first_rows[row["label"]].append(row["row"])
    if len(classes) < 2:
        problems.append((None, "label", f"only one class ({', '.join(classes)}); a classifier needs at least "
                                        f"two (or declare classes in the schema)"))
    for c in classes:
        n = len(patients[c])
        if n < min_cases:
            where = "" if not first_rows[c] else \
                " (row " + ", ".join(map(str, first_rows[c][:5])) + (", ..." if len(first_rows[c]) > 5 else "") + ")"
            have = "no case" if n == 0 else f"only {n} patient{'s' if n > 1 else ''}"
            problems.append((None, "label", f"class '{c}' has {have}{where}; training needs at least "
                                            f"{min_cases} patients per class (pass min_cases_per_class=1 or "
                                            f"0 for an evaluation-only manifest)"))
    return problems


# ---------------------------------------------------------------------------------------- geometry
def _geometry(g: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(size (X, Y, Z), spacing, origin, direction 3x3) of an :class:`~mmxai_core.io.ImageGeometry`."""
    return (np.array(g.size_xyz, dtype=np.int64), np.asarray(g.spacing, dtype=np.float64),
            np.asarray(g.origin, dtype=np.float64), np.asarray(g.direction, dtype=np.float64).reshape(3, 3))


def _mask_problem(image: str, mask: str) -> str | None:
    """None when the mask has the image's grid, else what differs (or why it could not be read)."""
    from mmxai_core.io import read_geometry

    try:
        gi = _geometry(read_geometry(image))
    except (MMXAIError, OSError, RuntimeError) as e:
        return f"cannot check the mask: its image cannot be read ({e})"
    try:
        gm = _geometry(read_geometry(mask))
    except (MMXAIError, OSError, RuntimeError) as e:
        return f"cannot read the mask ({e})"
    (si, pi, oi, di), (sm, pm, om, dm) = gi, gm
    fmt = lambda a: "(" + ", ".join(f"{v:g}" for v in np.ravel(a)) + ")"  # noqa: E731
    if not np.array_equal(si, sm):
        return f"mask size {fmt(sm)} does not match the image size {fmt(si)}"
    if not np.allclose(pi, pm, rtol=1e-3, atol=1e-6):
        return f"mask spacing {fmt(pm)} mm does not match the image spacing {fmt(pi)} mm"
    if not np.allclose(oi, om, rtol=0, atol=0.01 * float(min(pi))):
        return f"mask origin {fmt(om)} mm does not match the image origin {fmt(oi)} mm"
    if not np.allclose(di, dm, rtol=0, atol=1e-3):
        return f"mask direction {fmt(dm)} does not match the image direction {fmt(di)}"
    return None
