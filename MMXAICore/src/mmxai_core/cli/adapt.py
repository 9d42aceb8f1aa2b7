"""``mmxai-adapt``: turn a public dataset into an MMXAI ``manifest.csv`` + ``schema.yaml``.

Subcommands::

    mmxai-adapt cbis-ddsm --csv CSV_DIR --image-root DOWNLOAD --out DOWNLOAD [--include-assessment]
    mmxai-adapt duke-mri --clinical Clinical_and_Other_Features.xlsx --header-rows 2 --dicom-root DOWNLOAD \\
        --out DOWNLOAD --target "Mol Subtype" --field "Age at diagnosis:numeric" --field ER \\
        --series-pattern pre
    mmxai-adapt duke-mri --dicom-root DOWNLOAD --list-series
    mmxai-adapt generic --table clinical.csv --image-root images --out images --id-column id \\
        --label-column diagnosis --image-pattern "{id}.png" --field age --field "stage:ordinal"

Each writes ``manifest.csv``, ``schema.yaml`` and ``adapter_summary.json`` into ``--out`` and prints a
summary (``--json``: as JSON). Manifest paths are relative to ``--out``: best use the data root itself
(a folder beside it gives ``../`` paths, loadable with ``load_manifest(..., allow_outside=True)``).
Bad input: one line ``mmxai-adapt: error: ...`` on stderr and exit code 2 (no traceback).
Research use, not for diagnosis.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from mmxai_core.cli._common import notice, run_cli

PROG = "mmxai-adapt"
FIELD_TYPES = ("numeric", "ordinal", "categorical", "boolean")


def _field_arg(text: str) -> tuple[str, str | None]:
    """``COLUMN`` or ``COLUMN:TYPE`` (the type must be a schema type, else the colon is part of the name)."""
    name, sep, kind = text.rpartition(":")
    if sep and kind.strip().lower() in FIELD_TYPES and name.strip():
        return name.strip(), kind.strip().lower()
    return text.strip(), None


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"{what} '{item}': expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _sheet(text: str | None) -> str | int | None:
    return int(text) if text is not None and text.isdigit() else text


def _fields(items: Sequence[str] | None) -> dict[str, str | None]:
    return dict(_field_arg(t) for t in items or [])


def _add_table_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--field", action="append", metavar="COLUMN[:TYPE]",
                   help="clinical column (repeat); TYPE numeric|ordinal|categorical|boolean, drafted if left out")
    p.add_argument("--rename", action="append", metavar="COLUMN=NAME", help="field name for a column (repeat)")
    p.add_argument("--label-map", action="append", metavar="VALUE=CLASS", help="class name of a label value (repeat)")
    p.add_argument("--header-rows", type=int, default=1, help="number of header rows of the table (default 1)")
    p.add_argument("--sheet", help="workbook sheet name or 0-based index (default: the first)")
    p.add_argument("--dataset", help="value of the manifest's dataset column")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one subparser per dataset)."""
    parser = argparse.ArgumentParser(prog=PROG, description="Public dataset -> MMXAI manifest.csv + schema.yaml "
                                     "(research use, not for diagnosis). Paths in the manifest are relative "
                                     "to --out: best use the data root itself.")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("cbis-ddsm", help="CBIS-DDSM mass/calc case-description CSVs + DICOM download")
    c.add_argument("--csv", action="append", required=True, metavar="PATH",
                   help="folder holding the case-description CSVs, or one CSV (repeat)")
    c.add_argument("--image-root", required=True, help="folder of the DICOM download (case folders below it)")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--include-assessment", action="store_true",
                   help="add the BI-RADS assessment field (near label leak: report with and without)")
    c.add_argument("--no-masks", action="store_true", help="skip the ROI-mask union (faster)")
    c.add_argument("--no-age", action="store_true", help="do not read PatientAge from the DICOM headers")
    c.add_argument("--drop-unresolved", action="store_true",
                   help="leave out images/masks whose files are not found instead of failing")
    c.add_argument("--dataset", help="value of the manifest's dataset column")

    d = sub.add_parser("duke-mri", help="Duke Breast Cancer MRI clinical spreadsheet + DICOM series")
    d.add_argument("--clinical", help="clinical spreadsheet (.xlsx or .csv)")
    d.add_argument("--dicom-root", required=True, help="folder with one folder per patient")
    d.add_argument("--out", help="output folder")
    d.add_argument("--target", help="column giving the class (e.g. 'Mol Subtype', 'ER')")
    d.add_argument("--id-column", default="Patient ID", help="patient-ID column (default 'Patient ID')")
    d.add_argument("--series-pattern", default="pre",
                   help="regex (case-insensitive) or preset (pre, post1) for SeriesDescription (default pre)")
    d.add_argument("--series-exclude", help="regex: matching series are never chosen")
    d.add_argument("--list-series", action="store_true",
                   help="only list the SeriesDescriptions found under --dicom-root, with counts")
    _add_table_options(d)

    g = sub.add_parser("generic", help="any table + image folder")
    g.add_argument("--table", required=True, help="clinical table (.csv or .xlsx)")
    g.add_argument("--image-root", required=True, help="folder the image paths are relative to")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--id-column", required=True)
    g.add_argument("--label-column", required=True)
    img = g.add_mutually_exclusive_group(required=True)
    img.add_argument("--image-column", help="column of image paths relative to --image-root")
    img.add_argument("--image-pattern", help="pattern such as '{id}.png' ({id} or {column name})")
    g.add_argument("--mask-column", help="column of mask paths relative to --image-root")
    g.add_argument("--split-column", help="column of train/val/test")
    g.add_argument("--drop-unresolved", action="store_true", help="drop rows whose image is missing")
    _add_table_options(g)
    return parser


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser):
    from mmxai_core.data import adapters

    extra = {"dataset": args.dataset} if getattr(args, "dataset", None) else {}
    if args.command == "cbis-ddsm":
        csvs = args.csv[0] if len(args.csv) == 1 else args.csv
        return adapters.adapt_cbis_ddsm(csvs, args.image_root, args.out, include_assessment=args.include_assessment,
                                        masks=not args.no_masks, drop_unresolved=args.drop_unresolved,
                                        age_from_dicom=not args.no_age, **extra)
    try:
        renames, label_map = _pairs(args.rename, "--rename"), _pairs(args.label_map, "--label-map") or None
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.command == "duke-mri":
        if args.list_series:
            return adapters.series_descriptions(args.dicom_root)
        missing = [o for o, v in (("--clinical", args.clinical), ("--out", args.out), ("--target", args.target))
                   if not v]
        if missing:
            parser.error(f"duke-mri needs {', '.join(missing)} (unless --list-series)")
        return adapters.adapt_duke_mri(args.clinical, args.dicom_root, args.out, target=args.target,
                                       fields=_fields(args.field), id_column=args.id_column,
                                       header_rows=args.header_rows, sheet=_sheet(args.sheet), column_map=renames,
                                       series_pattern=args.series_pattern, series_exclude=args.series_exclude,
                                       label_map=label_map, **extra)
    return adapters.adapt_generic(args.table, args.image_root, args.out, id_column=args.id_column,
                                  label_column=args.label_column, image_column=args.image_column,
                                  image_pattern=args.image_pattern, fields=_fields(args.field), column_map=renames,
                                  mask_column=args.mask_column, split_column=args.split_column, label_map=label_map,
                                  header_rows=args.header_rows, sheet=_sheet(args.sheet),
                                  drop_unresolved=args.drop_unresolved, **extra)


def _body(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    notice(PROG)
    result = _run(args, parser)
    if isinstance(result, dict):  # --list-series
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            for desc, n in result.items():
                print(f"{n:6d}  {desc or '(no SeriesDescription)'}")
        return 0
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mmxai-adapt``; returns the exit code (0 ok, 2 bad input, 3 internal error)."""
    return run_cli(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
