"""``mmxai-synth``: write a synthetic multimodal cohort (DICOM images, masks, manifest, schema, ground
truth) that is ready to train on. Research use, not for diagnosis."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mmxai_core.cli._common import notice, run_cli

PROG = "mmxai-synth"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used for ``--help``)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Write a synthetic breast-imaging cohort: mammogram-like DICOM files (MG, CC/MLO views) "
                    "and MRI-like DICOM series (MR, some oblique), lesion masks (NRRD), manifest.csv, "
                    "schema.yaml and ground_truth.json (label model, coefficients, per-case scores). "
                    "Research use only - not for diagnosis.")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; must be empty, "
                   "missing, or a previous mmxai-synth output unless --force)")
    p.add_argument("--n", type=int, default=400, metavar="N", help="number of patients (default 400; "
                   "some mammography patients have two views, so the manifest has more rows)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes identical files "
                   "(default 0)")
    p.add_argument("--kind", choices=("2d", "3d", "mixed"), default="mixed",
                   help="2d: mammograms only, 3d: MR series only, mixed: half each (default)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _body(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from mmxai_core.data.synthetic.output import check_destination, timed_progress, write_cohort
    from mmxai_core.errors import MMXAIError

    if args.n < 1:
        raise MMXAIError(f"--n must be at least 1, got {args.n}")
    check_destination(Path(args.out), args.force)  # before any output: a refusal is one line
    notice(PROG)

    start = time.perf_counter()
    cohort = write_cohort(args.out, n=args.n, seed=args.seed, kind=args.kind, force=args.force,
                          progress=None if args.quiet else timed_progress(PROG))
    y = cohort.labels
    print(f"{PROG}: wrote {len(cohort.patients)} patients, {cohort.n_images()} images "
          f"({int(y.sum())} malignant) to {args.out} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    return run_cli(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
