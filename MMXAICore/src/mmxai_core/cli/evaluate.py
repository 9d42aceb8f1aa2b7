"""``mmxai-evaluate``: metrics of a released checkpoint on a manifest, with patient-bootstrap 95% CIs.
Research use, not for diagnosis.

    mmxai-evaluate --model RUN_DIR/checkpoint --manifest M.csv [--schema S.yaml] \\
                   [--split test --splits RUN_DIR/splits.json] --out EVAL_DIR [--n-boot 1000] [--xai]
                   [--xai-metrics stability,sanity] [--xai-max-cases N] [--allow-outside-paths]

Writes ``metrics.json``, ``metrics.csv``, ``metrics.md``, ``reliability.png`` and ``predictions.csv`` to
EVAL_DIR (see :mod:`mmxai_core.train.evaluate` for the definitions). Bad input: one line on stderr,
exit 2, nothing written; the research-use notice follows once the inputs are accepted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from mmxai_core.cli._common import HeldNotice, run_cli

PROG = "mmxai-evaluate"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate an mmxai-train checkpoint on a manifest: accuracy, sensitivity, specificity, F1 and "
                    "AUC (multi-class: macro one-vs-rest) with 95% CIs from a patient-level bootstrap, the "
                    "checkpoint's validation threshold applied unchanged, calibration (ECE, reliability plot), "
                    "per-dataset breakdown when the manifest has a 'dataset' column. Research use only - not "
                    "for diagnosis.")
    p.add_argument("--model", required=True, metavar="CKPT", help="checkpoint folder (weights.safetensors + "
                   "metadata.json) or the run folder holding checkpoint/")
    p.add_argument("--manifest", required=True, metavar="M.csv", help="manifest CSV of the cases to evaluate")
    p.add_argument("--schema", metavar="S.yaml", help="clinical schema; optional, must match the checkpoint's")
    p.add_argument("--split", metavar="NAME", help="evaluate only this split (train, val, test)")
    p.add_argument("--splits", metavar="SPLITS.json", help="split file for --split (default: the manifest's split "
                   "column)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--n-boot", type=int, default=1000, help="patient bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--batch-size", type=int, default=16, help="cases per forward pass (default 16)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--cache-dir", metavar="DIR", help="keep preprocessed images here for later runs")
    p.add_argument("--allow-outside-paths", action="store_true", help="accept manifest paths that leave the "
                   "manifest's folder (refused by default)")
    p.add_argument("--xai", action="store_true", help="also compute explanation metrics over the cases "
                   "(mmxai_core.explain.evaluate_xai; an error while it is not available)")
    p.add_argument("--xai-metrics", metavar="LIST", help="with --xai: comma-separated subset of stability, "
                   "faithfulness, sanity, localisation, coherence (default all)")
    p.add_argument("--xai-max-cases", type=int, metavar="N", help="with --xai: explain only the first N cases "
                   "(default all)")
    return p


def _body(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from mmxai_core.errors import MMXAIError

    xai_options = None
    if (args.xai_metrics is not None or args.xai_max_cases is not None) and not args.xai:
        raise MMXAIError("--xai-metrics / --xai-max-cases need --xai")
    if args.xai:
        from mmxai_core.explain.evaluate_xai import parse_xai_metrics

        if args.xai_max_cases is not None and args.xai_max_cases < 1:
            raise MMXAIError(f"--xai-max-cases must be >= 1, got {args.xai_max_cases}")
        xai_options = {"metrics": parse_xai_metrics(args.xai_metrics), "max_cases": args.xai_max_cases,
                       "n_boot": max(args.n_boot, 0), "seed": args.seed}
    if args.n_boot < 0:
        raise MMXAIError(f"--n-boot must be >= 0, got {args.n_boot}")
    if args.batch_size < 1:
        raise MMXAIError(f"--batch-size must be >= 1, got {args.batch_size}")
    from mmxai_core.data.manifest import outside_paths_allowed
    from mmxai_core.train.evaluate import evaluate_checkpoint
    from mmxai_core.train.run import metrics_summary

    held = HeldNotice(PROG)

    @held.before
    def say(text: str) -> None:
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)

    with outside_paths_allowed(args.allow_outside_paths):
        report = evaluate_checkpoint(args.model, args.manifest, args.out, args.schema, split=args.split,
                                     splits=args.splits, n_boot=args.n_boot, seed=args.seed,
                                     batch_size=args.batch_size, device=args.device, threads=args.threads,
                                     cache_dir=args.cache_dir, xai=args.xai, xai_options=xai_options, log=say)
    held()
    result = report.result
    name = result["inputs"]["split"] or "all"
    lines = metrics_summary(result, name)
    cal = result["calibration"]
    lines.append(f"  {'ECE':<12} {cal['ece']:.3f}  (Brier {cal['brier']:.3f}, {cal['n_bins']} bins)")
    for ds, part in result.get("by_dataset", {}).items():
        auc = part["metrics"]["auc"]
        value = "n/a" if auc["value"] is None else f"{auc['value']:.3f}"
        ci = "" if auc.get("ci_low") is None else f" [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]"
        lines.append(f"  dataset {ds}: {part['n_cases']} cases, AUC {value}{ci}")
    for w in result.get("warnings", []):
        lines.append(f"  warning: {w}")
    lines.append(f"reports: {report.files['metrics.md']}")
    if "xai_summary.md" in report.files:
        lines.append(f"explanation metrics: {report.files['xai_summary.md']}")
    print("\n".join(f"{PROG}: {line}" for line in lines), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    return run_cli(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
