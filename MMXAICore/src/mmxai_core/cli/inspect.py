"""``mmxai-inspect PATH [--series-uid UID] [--json] [--header-only] [--identifiers]``: show what the reader
makes of an image.

Prints the array shape (Z, Y, X), dtype and value range, spacing (x, y, z) mm, origin (LPS mm), direction
(columns = LPS directions of the i, j, k axes), the IJK-to-RAS matrix (as 3D Slicer uses) and the safe
header fields (UIDs only hashed). ``--header-only`` uses :func:`~mmxai_core.io.read_geometry` (no voxels
read). ``--identifiers`` also shows a DICOM's identifying fields (patient name, IDs, birth date, dates,
institution, raw UIDs) on stdout; this command writes no file, and no other command outputs them.

Exit codes: 0 success, 2 bad input (one line on stderr naming the file and the problem), 3 internal error.
Research use, not for diagnosis.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import warnings
from typing import Any
from collections.abc import Iterator, Sequence

import numpy as np

from mmxai_core.cli._common import notice, run_cli

PROG = "mmxai-inspect"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Show shape, geometry (LPS, IJK-to-RAS) and safe header fields of an image "
                               "file or DICOM series folder. Research use only - not for diagnosis.")
    parser.add_argument("path", help="DICOM file or series folder, NIfTI, NRRD, MetaImage, PNG, JPEG, TIFF")
    parser.add_argument("--series-uid", default=None, help="series to read from a folder holding several "
                                                           "series: its SeriesInstanceUID or the hash listed "
                                                           "in the error message")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--header-only", action="store_true", help="read headers only (no voxels, no value "
                                                                   "range)")
    parser.add_argument("--color-to-luminance", action="store_true", help="convert colour images to "
                                                                          "luminance instead of refusing them")
    parser.add_argument("--allow-nonfinite", action="store_true", help="accept NaN/inf voxels")
    parser.add_argument("--identifiers", action="store_true", help="also show identifying DICOM fields "
                        "(patient name, IDs, birth date, dates, institution) and the raw UIDs; on the terminal "
                        "only, nothing is written to a file")
    return parser


def describe(path: str, series_uid: str | None = None, header_only: bool = False,
             color_to_luminance: bool = False, allow_nonfinite: bool = False,
             identifiers: bool = False) -> dict[str, Any]:
    """A plain-JSON summary of the image at ``path`` (raises ImageReadError on bad input).

    ``identifiers=True`` adds ``"identifiers"``: a DICOM's identifying fields and raw UIDs (an empty dict
    for other formats), for display only.
    """
    from mmxai_core.io import read_geometry, read_image
    from mmxai_core.io.geometry import ImageGeometry

    if header_only:
        geometry = read_geometry(path, series_uid, identifying=identifiers)
        info: dict[str, Any] = {"path": str(path)}
    else:
        image = read_image(path, series_uid, color_to_luminance=color_to_luminance,
                           allow_nonfinite=allow_nonfinite, identifying=identifiers)
        geometry = ImageGeometry.from_image(image)
        finite = image.array[np.isfinite(image.array)] if np.issubdtype(image.array.dtype, np.floating) \
            else image.array
        info = {"path": str(path), "dtype": str(image.array.dtype),
                "min": float(finite.min()) if finite.size else None,
                "max": float(finite.max()) if finite.size else None}
    info.update(geometry.to_dict())
    found = info["meta"].pop("identifiers", {})
    if identifiers:
        info["identifiers"] = found
    return info


def _fmt_row(values: Sequence[float]) -> str:
    return "  ".join(f"{v: .6g}" for v in values)


def _text(info: dict[str, Any]) -> str:
    lines = [f"path: {info['path']}",
             f"format: {info['meta'].get('source_format', '?')}",
             f"shape (Z, Y, X): {tuple(info['shape'])}"]
    if "dtype" in info:
        lines.append(f"dtype: {info['dtype']}   range: {info['min']:.6g} .. {info['max']:.6g}"
                     if info["min"] is not None else f"dtype: {info['dtype']}   range: (no finite voxels)")
    lines += [f"spacing (x, y, z) mm: {_fmt_row(info['spacing'])}",
              f"origin (LPS) mm: {_fmt_row(info['origin'])}",
              "direction (columns = i, j, k axes, LPS):"]
    lines += [f"  {_fmt_row(row)}" for row in info["direction"]]
    lines.append("IJK-to-RAS:")
    lines += [f"  {_fmt_row(row)}" for row in info["ijk_to_ras"]]
    lines.append("meta:")
    lines += [f"  {key}: {value}" for key, value in sorted(info["meta"].items())]
    if "identifiers" in info:
        shown = info["identifiers"]
        lines.append("identifiers (shown on request; no command writes them to a file):"
                     if shown else "identifiers: none (not a DICOM image, or no identifying fields)")
        lines += [f"  {key}: {value}" for key, value in sorted(shown.items())]
    return "\n".join(lines)


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[list[str]]:
    """Collect what C/C++ libraries (GDCM, OpenJPEG, libjpeg) print straight to file descriptor 2.

    The lines are available after the block; with ``MMXAI_DEBUG`` set they are also echoed at once, so a
    failing read still prints exactly one error line by default.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreter): capture nothing
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())
            if os.environ.get("MMXAI_DEBUG"):
                for line in lines:
                    print(f"{PROG}: native: {line}", file=sys.stderr)


def _body(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    with _native_stderr_captured() as native, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = describe(args.path, args.series_uid, args.header_only, args.color_to_luminance,
                        args.allow_nonfinite, args.identifiers)
    print(json.dumps(info, indent=2, default=str) if args.json else _text(info))
    messages = [str(w.message).splitlines()[0] for w in caught if str(w.message).strip()]
    if not os.environ.get("MMXAI_DEBUG"):
        messages += native
    for message in dict.fromkeys(messages):
        print(f"{PROG}: warning: {message}", file=sys.stderr)
    notice(PROG)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: exits with 0, 2 (bad input) or 3 (internal error)."""
    raise SystemExit(run_cli(PROG, _body, argv))


if __name__ == "__main__":
    main()
