"""``mmxai-explain``: explain one case, or every case of a manifest. Research use only - not for diagnosis.

One case::

    mmxai-explain --model RUN_OR_CHECKPOINT --image PATH --clinical '{"age": 57}' --out DIR
    mmxai-explain --model CKPT --image DICOM_FOLDER --series-uid UID --clinical @case.json --out DIR \\
                  --metrics stability,faithfulness --target-class malignant --device cpu

writes DIR/result.json, heatmap.nrrd, heatmap_label.nrrd, heatmap_bins.json, overlay.png, shap.png and
report.html (see ``docs/WORKER.md``), all at once (built in a hidden sibling folder, renamed into place).
``--clinical '{}'`` = every field unknown. An existing complete output is replaced only with ``--force``.

A manifest (resumable; a rerun completes only the missing cases)::

    mmxai-explain --model CKPT --manifest cohort/manifest.csv --split test --splits run/splits.json --out DIR

Exit status: 0 done, 2 bad input (one line on stderr naming the field or file; no output left behind),
3 internal error; a batch exits 2 (3) when some case was refused (hit an internal error).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mmxai_core.cli._common import HeldNotice, notice, run_cli

PROG = "mmxai-explain"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used for ``--help``)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Explain the multimodal model's prediction for one case (--image + --clinical) or for "
                    "every case of a manifest (--manifest): Grad-CAM++ heatmap on the input's own grid, "
                    "Shapley values of the clinical fields, image/clinical split, report.html. "
                    "Research use only - not for diagnosis.")
    p.add_argument("--model", required=True, metavar="CKPT", help="mmxai-train run folder or its checkpoint "
                   "folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (one case: the case's files; "
                   "manifest: one subfolder per case plus summary.csv / summary.json)")
    one = p.add_argument_group("one case")
    one.add_argument("--image", metavar="PATH", help="image file (DICOM, NIfTI, NRRD, MetaImage, PNG, ...) or "
                     "DICOM series folder")
    one.add_argument("--series-uid", metavar="UID", help="series in a folder holding several: its "
                     "SeriesInstanceUID or the hash the error message lists")
    one.add_argument("--clinical", metavar="JSON|@FILE", help="clinical values as a JSON object, or @file.json; "
                     "absent fields and null are unknown; '{}' = all unknown")
    many = p.add_argument_group("many cases")
    many.add_argument("--manifest", metavar="CSV", help="manifest CSV (images + clinical columns)")
    many.add_argument("--split", choices=("train", "val", "test"), help="only this split")
    many.add_argument("--splits", metavar="JSON", help="split file (e.g. RUN/splits.json); default: the "
                      "manifest's split column")
    many.add_argument("--allow-outside-paths", action="store_true", help="accept manifest paths that leave "
                      "the manifest's folder (refused by default)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                   help="where to compute (default auto: CUDA, then MPS, then CPU)")
    p.add_argument("--metrics", default="", metavar="NAMES", help="comma-separated explanation-quality "
                   "metrics to add: stability, faithfulness, sanity")
    p.add_argument("--target-class", metavar="NAME", help="class to explain (default: the positive class of "
                   "a binary model, else the predicted class)")
    p.add_argument("--maps", action="store_true", help="also write rollout.nrrd and crossmodal_<field>.nrrd")
    p.add_argument("--seed", type=int, default=0, help="seed for the metrics' random draws (default 0)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--force", action="store_true", help="replace an existing complete output (one case), or "
                   "start a batch afresh in a folder holding another batch")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def _body(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mmxai_core.errors import MMXAIError
    from mmxai_core.explain.clinical_input import read_clinical_arg, validate_clinical
    from mmxai_core.explain.pipeline import ExplainOptions, parse_metric_names

    if (args.image is None) == (args.manifest is None):
        raise MMXAIError("give either --image (one case) or --manifest (many cases)")
    if args.image is not None:
        if args.clinical is None:
            raise MMXAIError("--clinical is required with --image (use '{}' when every field is unknown)")
        if args.split or args.splits or args.allow_outside_paths:
            raise MMXAIError("--split / --splits / --allow-outside-paths only go with --manifest")
        raw = read_clinical_arg(args.clinical)
    else:
        if args.clinical is not None or args.series_uid is not None:
            raise MMXAIError("--clinical / --series-uid only go with --image (a manifest has its own columns)")
        raw = None
    if args.threads is not None and args.threads < 1:
        raise MMXAIError(f"--threads must be at least 1, got {args.threads}")
    options = ExplainOptions(target_class=args.target_class, metrics=tuple(parse_metric_names(args.metrics)),
                             write_maps=args.maps, seed=args.seed)

    from mmxai_core.explain.pipeline import (check_metrics_available, check_output_folder, checkpoint_info,
                                             explain_to_folder, load_model, prepare_case)

    check_metrics_available(options.metrics)
    info = checkpoint_info(args.model)        # metadata only: bad values are refused before torch loads
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if raw is not None:
        clinical = validate_clinical(raw, info.schema,
                                     source=args.clinical if args.clinical.startswith("@") else "--clinical")
        case = prepare_case(info, args.image, clinical, options, args.series_uid)
        check_output_folder(args.out, case.identity["inputs_sha256"], args.force)
        model = load_model(args.model, args.device, info=info)
        result = explain_to_folder(model, args.image, clinical, args.out, options, series_uid=args.series_uid,
                                   force=args.force, progress=_progress(args.quiet), prepared=case)
        pred = result["prediction"]
        p = pred["probabilities"][pred["class"]]
        thr = f", threshold {pred['threshold']:.3f}" if pred.get("threshold") is not None else ""
        print(f"{pred['class']} (p = {p:.3f}{thr}); report: {Path(args.out) / result['files']['report']}")
        return 0

    from mmxai_core.data.manifest import outside_paths_allowed
    from mmxai_core.explain.batch import plan_batch, run_batch

    with outside_paths_allowed(args.allow_outside_paths):
        plan = plan_batch(info, args.manifest, args.out, options, split=args.split, splits_path=args.splits,
                          force=args.force)
    notice(PROG)
    model = load_model(args.model, args.device, info=info) if plan.pending else None
    summary = run_batch(model, plan, options, progress_bar=not args.quiet)
    print(f"{len(summary.rows)} cases: {summary.computed} explained now, {summary.skipped} already complete, "
          f"{summary.failed} refused, {summary.internal_errors} internal errors; summary: "
          f"{Path(args.out) / 'summary.csv'}")
    return summary.exit_code


def _progress(quiet: bool):
    """Progress lines on stderr; the research-use notice first, once the inputs are accepted (so that a
    refused input gets exactly one line)."""
    held = HeldNotice(PROG)

    def say(step: str, fraction: float, message: str) -> None:
        if step != "load":
            held()
        if not quiet and step != "load":
            print(f"{PROG}: [{int(round(100 * fraction)):3d}%] {message}", file=sys.stderr, flush=True)

    return say


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    return run_cli(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
