"""Read the CBIS-DDSM case-description CSVs into one :class:`Abnormality` per row.

The four TCIA files are ``{mass,calc}_case_description_{train,test}_set.csv``; the file name gives the
lesion kind and the official split. Column names are compared loosely (case, blanks and underscores
ignored), which absorbs the real files' spelling difference (``breast_density`` in the mass CSVs,
``breast density`` in the calc CSVs).

Values: ``pathology`` MALIGNANT -> malignant, BENIGN and BENIGN_WITHOUT_CALLBACK -> benign, anything
else is an error naming file, row and column. Breast density outside 1-4 (the calc CSVs hold a few 0s),
subtlety outside 1-5 and assessment outside 0-5 are read as unknown and counted.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from pathlib import Path

from mmxai_core.data.adapters._tables import Table, canonical, is_missing, is_blank, read_table
from mmxai_core.errors import DatasetError

CSV_NAME = re.compile(r"^(mass|calc)_case_description_(train|test)_set\b", re.IGNORECASE)

PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}

COMMON_COLUMNS = ("patient id", "breast density", "left or right breast", "image view", "abnormality id",
                  "abnormality type", "assessment", "pathology", "subtlety", "image file path")
KIND_COLUMNS = {"mass": ("mass shape", "mass margins"), "calc": ("calc type", "calc distribution")}
MASK_COLUMN = "roi mask file path"
DESCRIPTORS = ("mass shape", "mass margins", "calc type", "calc distribution")

DENSITY_LEVELS = (1, 2, 3, 4)
SUBTLETY_LEVELS = (1, 2, 3, 4, 5)
ASSESSMENT_LEVELS = (0, 1, 2, 3, 4, 5)


@dataclasses.dataclass(frozen=True)
class Abnormality:
    """One row of a case-description CSV (one annotated finding on one mammogram)."""

    source: Path
    row: int                      # spreadsheet row number (header = 1)
    kind: str                     # "mass" | "calc" (from the file name)
    split: str                    # "train" | "test" (from the file name)
    patient_id: str
    side: str                     # LEFT | RIGHT
    view: str                     # CC | MLO
    abnormality_id: int
    abnormality_type: str         # "mass" | "calcification"
    pathology: str                # "malignant" | "benign"
    density: int | None
    subtlety: int | None
    assessment: int | None
    descriptors: dict[str, str | None]   # keys: DESCRIPTORS present in this kind's CSV
    image_path: str
    mask_path: str | None

    @property
    def image_key(self) -> tuple[str, str, str]:
        """(patient, side, view): the rows of one mammogram share it."""
        return (self.patient_id, self.side, self.view)

    def where(self, column: str) -> str:
        """``file: row R, column 'C'`` for messages."""
        return f"{self.source}: row {self.row}, column '{column}'"


def csv_kind_split(path: str | os.PathLike) -> tuple[str, str]:
    """("mass"|"calc", "train"|"test") from a CBIS-DDSM CSV file name; error if the name does not say."""
    m = CSV_NAME.match(Path(path).name)
    if not m:
        raise DatasetError(f"{path}: not a CBIS-DDSM case-description file name (expected "
                           f"mass_case_description_train_set.csv, calc_case_description_test_set.csv, ...); "
                           f"the name gives the lesion kind and the official split")
    return m.group(1).lower(), m.group(2).lower()


def find_csvs(folder: str | os.PathLike) -> list[Path]:
    """The case-description CSVs in ``folder`` (error when there are none)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: CSV folder not found")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".csv" and CSV_NAME.match(p.name))
    if not found:
        raise DatasetError(f"{folder}: no CBIS-DDSM case-description CSV "
                           f"({{mass,calc}}_case_description_{{train,test}}_set.csv) in this folder")
    return found


def _int_level(text: str, levels: tuple[int, ...]) -> tuple[int | None, bool]:
    """(level, was_out_of_range): None for unknown text or a number outside ``levels``."""
    if is_missing(text):
        return None, False
    try:
        value = float(text)
    except ValueError:
        return None, True
    if not value.is_integer() or int(value) not in levels:
        return None, True
    return int(value), False


def read_cbis_csv(path: str | os.PathLike, *, need_masks: bool,
                  unusual: collections.Counter | None = None) -> list[Abnormality]:
    """All abnormality rows of one CSV. ``unusual`` (if given) counts values read as unknown,
    keyed ``"<column> <value>"``."""
    kind, split = csv_kind_split(path)
    table = read_table(path)
    canon = [canonical(n) for n in table.names]
    wanted = list(COMMON_COLUMNS) + list(KIND_COLUMNS[kind]) + ([MASK_COLUMN] if need_masks else [])
    col: dict[str, int] = {}
    for name in wanted:
        if name not in canon:
            raise DatasetError(f"{table.path}: missing required column '{name}' of a CBIS-DDSM {kind} CSV "
                               f"(columns: {', '.join(repr(n) for n in table.names)})")
        col[name] = canon.index(name)
    unusual = collections.Counter() if unusual is None else unusual
    out = []
    for i, cells in enumerate(table.rows):
        if is_blank(cells):
            continue
        out.append(_parse_row(table, i, cells, col, kind, split, unusual))
    return out


def _parse_row(table: Table, i: int, cells: list[str], col: dict[str, int], kind: str, split: str,
               unusual: collections.Counter) -> Abnormality:
    def get(name: str) -> str:
        return cells[col[name]].strip()

    def required(name: str) -> str:
        value = get(name)
        if is_missing(value):
            raise table.error(i, col[name], "empty value")
        return value

    patho_raw = required("pathology")
    pathology = PATHOLOGY.get(patho_raw.upper())
    if pathology is None:
        raise table.error(i, col["pathology"], f"unknown pathology '{patho_raw}' "
                                              f"(expected {', '.join(PATHOLOGY)})")
    try:
        abn_id = int(float(required("abnormality id")))
    except ValueError:
        raise table.error(i, col["abnormality id"], f"'{get('abnormality id')}' is not a number") from None
    levels = {}
    for name, allowed in (("breast density", DENSITY_LEVELS), ("subtlety", SUBTLETY_LEVELS),
                          ("assessment", ASSESSMENT_LEVELS)):
        levels[name], odd = _int_level(get(name), allowed)
        if odd:
            unusual[f"{name} '{get(name)}'"] += 1
    abn_type = get("abnormality type").lower()
    abn_type = {"calc": "calcification"}.get(abn_type, abn_type) or ("mass" if kind == "mass" else "calcification")
    descriptors = {name: (None if is_missing(get(name)) else get(name)) for name in KIND_COLUMNS[kind]}
    mask = get(MASK_COLUMN) if MASK_COLUMN in col else ""
    return Abnormality(
        source=table.path, row=table.row_number(i), kind=kind, split=split,
        patient_id=required("patient id"), side=required("left or right breast").upper(),
        view=required("image view").upper(), abnormality_id=abn_id, abnormality_type=abn_type,
        pathology=pathology, density=levels["breast density"], subtlety=levels["subtlety"],
        assessment=levels["assessment"], descriptors=descriptors,
        image_path=required("image file path"), mask_path=None if is_missing(mask) else mask)
