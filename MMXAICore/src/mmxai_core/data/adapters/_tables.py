"""Read a clinical table (CSV or .xlsx, one or several header rows) as text cells, and find columns.

Every cell is read as text (numbers from a spreadsheet become ``"57"`` or ``"1.5"``; an empty cell becomes
``""``), so adapters decide themselves what a value means. Row numbers follow the spreadsheet
convention of :func:`mmxai_core.errors.format_problem`: the first header row is row 1.

With several header rows (the Duke clinical spreadsheet has a group row above the column names), a
column's name is its non-empty header cells joined by ``" / "``; a column can be asked for by that full
name or by any one of its header cells when that cell names a single column (so ``"ER"`` finds
``"Tumor Characteristics / ER"``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

from mmxai_core.data.schema import is_unknown
from mmxai_core.errors import DatasetError, format_problem

NAME_SEPARATOR = " / "


def is_missing(value: Any) -> bool:
    """True when a cell means "unknown", by the schema's rule (:func:`mmxai_core.data.schema.is_unknown`:
    empty, ``unknown``, ``NA``, ``N/A``, ``NaN``, ``?``; CBIS-DDSM writes N/A for a descriptor that does
    not apply). ``none`` is a real category there, and here."""
    return is_unknown(value)


def cell_text(value: Any) -> str:
    """A cell as stripped text: None/NaN -> ``""``; an integral float (``57.0``) -> ``"57"``."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
        return repr(value)
    if hasattr(value, "isoformat") and not isinstance(value, str):  # dates from a spreadsheet
        return value.isoformat()
    return str(value).strip()


def canonical(name: str) -> str:
    """Compare column names loosely: lower case, runs of blanks/underscores as one space
    (``"breast_density"`` == ``"Breast Density"``)."""
    return " ".join(re.split(r"[\s_]+", str(name).strip().lower())).strip()


@dataclasses.dataclass
class Table:
    """A table of text cells.

    Attributes:
        path: the file it came from (named in every error).
        names: column names (header rows joined, see the module docstring).
        parts: for each column, its non-empty header cells.
        rows: data rows, each a list of text cells, as long as ``names``.
        header_rows: how many header rows the file has (data row ``i`` is spreadsheet row
            ``header_rows + i + 1``).
    """

    path: Path
    names: list[str]
    parts: list[list[str]]
    rows: list[list[str]]
    header_rows: int = 1

    def row_number(self, index: int) -> int:
        """Spreadsheet row number (header = row 1) of data row ``index`` (0-based)."""
        return self.header_rows + index + 1

    def where(self, index: int | None, column: int | str | None, message: str) -> str:
        """``"<file>: row R, column 'C': message"`` for an error."""
        col = self.names[column] if isinstance(column, int) else column
        row = None if index is None else self.row_number(index)
        return f"{self.path}: {format_problem(row, col, message)}"

    def error(self, index: int | None, column: int | str | None, message: str) -> DatasetError:
        """A :class:`DatasetError` naming this file, the row and the column."""
        return DatasetError(self.where(index, column, message))

    def find(self, name: str) -> int:
        """Index of the column called ``name``: by its full name, else by one header cell that names a
        single column. A :class:`DatasetError` naming the file when it is missing or ambiguous."""
        want = str(name).strip()
        hits = [i for i, n in enumerate(self.names) if n == want]
        if not hits:
            hits = [i for i, ps in enumerate(self.parts) if want in ps]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            listed = ", ".join(repr(self.names[i]) for i in hits)
            raise DatasetError(f"{self.path}: column '{name}' is ambiguous: it matches {listed}; "
                               f"give the full name")
        shown = ", ".join(repr(n) for n in self.names[:40])
        more = f" (+{len(self.names) - 40} more)" if len(self.names) > 40 else ""
        raise DatasetError(f"{self.path}: missing required column '{name}' (columns: {shown}{more})")


def read_table(path: str | os.PathLike, *, header_rows: int = 1, sheet: str | int | None = None) -> Table:
    """Read a ``.csv``/``.tsv``/``.txt`` (comma or tab) or ``.xlsx``/``.xlsm`` file as a :class:`Table`.

    ``header_rows`` rows at the top form the column names; ``sheet`` picks a workbook sheet (name or
    0-based index; default the first). Fully empty rows are skipped.
    """
    import pandas as pd

    path = Path(path)
    if header_rows < 1:
        raise DatasetError(f"{path}: header_rows must be at least 1, got {header_rows}")
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".xlsx", ".xlsm"):
            frame = pd.read_excel(path, header=None, dtype=object, sheet_name=0 if sheet is None else sheet,
                                  engine="openpyxl")
        elif suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, sep=sep,
                                encoding="utf-8-sig", skip_blank_lines=False)
        else:
            raise DatasetError(f"{path}: unsupported table format '{suffix}' (use .csv, .tsv or .xlsx)")
    except DatasetError:
        raise
    except (ValueError, KeyError, OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the table: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # pandas/openpyxl parser errors have many types
        raise DatasetError(f"{path}: cannot read the table: {type(exc).__name__}: {exc}") from None

    cells = [[cell_text(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    if len(cells) < header_rows:
        raise DatasetError(f"{path}: expected {header_rows} header row(s), the file has {len(cells)} row(s)")
    header, body = cells[:header_rows], cells[header_rows:]
    width = len(header[0]) if header else 0
    parts = [[h[c] for h in header if c < len(h) and h[c] and not h[c].startswith("Unnamed:")]
             for c in range(width)]
    names = [NAME_SEPARATOR.join(p) if p else f"column {c + 1}" for c, p in enumerate(parts)]
    # Blank rows are kept (callers skip them with is_blank) so that row numbers stay those of the file;
    # trailing blank rows are dropped.
    rows = [(list(r) + [""] * width)[:width] for r in body]
    while rows and not any(rows[-1]):
        rows.pop()
    return Table(path=path, names=names, parts=parts, rows=rows, header_rows=header_rows)


def is_blank(row: list[str]) -> bool:
    """True for a row whose cells are all empty."""
    return not any(c.strip() for c in row)
