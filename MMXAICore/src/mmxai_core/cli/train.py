"""``mmxai-train``: train the multimodal classifier on a manifest, evaluate it, release a checkpoint.
Research use, not for diagnosis.

    mmxai-train --manifest cohort/manifest.csv --schema cohort/schema.yaml --out runs/r1 \\
                [--config config.yaml] [--optim.lr=3e-4 --model.preset=tiny --train.epochs=5 ...] \\
                [--splits other_run/splits.json] [--resume | --force] [--device auto|cpu|cuda|mps] [--seed N] \\
                [--allow-outside-paths]

Ablation (:mod:`mmxai_core.train.ablation`): the variants x seeds on one split, a table with CIs, paired
comparisons against the attention model and a bar chart::

    mmxai-train --ablation --manifest M.csv --schema S.yaml --out ABL_DIR \\
                [--variants attention,concat,image_only,clinical_only] [--seeds 0,1,2] [--jobs 2] [overrides]

Distributed data-parallel (:mod:`mmxai_core.train.distributed`; gloo on CPU, nccl on GPU; batch size per
process)::

    torchrun --nproc_per_node=N -m mmxai_core.cli.train --manifest M.csv --schema S.yaml --out RUN_DIR ...

Overrides use dotted keys of the config sections (model, data, preprocess, augment, optim, train); see
:mod:`mmxai_core.train.config`. ``--resume`` without ``--config`` reuses the run's
``config.resolved.yaml`` and, without ``--manifest`` / ``--schema``, the files named in its ``run.json``.

The research-use notice is printed once the inputs are accepted (before the first progress line), so a
refused input gets exactly one stderr line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from mmxai_core.cli._common import HeldNotice, run_cli

PROG = "mmxai-train"
ABLATION_VARIANTS = ("attention", "concat", "image_only", "clinical_only")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (dotted ``--section.key=value`` overrides are taken apart separately)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train the multimodal (image + clinical) classifier: splits, preprocessing fitted on the "
                    "training cases, AdamW with warm-up and cosine schedule, early stopping on validation loss, "
                    "threshold chosen on validation, test metrics with patient-bootstrap 95% CIs, and a "
                    "checkpoint (safetensors + JSON). Research use only - not for diagnosis.",
        epilog="Any config key can be set with --SECTION.KEY=VALUE (sections: model, data, preprocess, augment, "
               "optim, train), e.g. --optim.lr=3e-4 --model.preset=tiny --train.epochs=5 "
               "--preprocess.output_size_hw=96,96.")
    p.add_argument("--manifest", metavar="M.csv", help="manifest CSV (optional with --resume)")
    p.add_argument("--schema", metavar="S.yaml", help="clinical schema (optional with --resume)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (created)")
    p.add_argument("--config", metavar="C.yaml", help="YAML config with sections model, data, preprocess, "
                   "augment, optim, train")
    p.add_argument("--splits", metavar="SPLITS.json", help="reuse the splits of another run instead of making new "
                   "ones")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in RUN_DIR from its last "
                   "finished epoch")
    p.add_argument("--force", action="store_true", help="replace a different or finished run in RUN_DIR")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="= --train.device (default auto)")
    p.add_argument("--seed", type=int, help="= --train.seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (= --train.progress=false)")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("--allow-outside-paths", action="store_true", help="accept manifest paths that leave the "
                   "manifest's folder (refused by default)")
    g = p.add_argument_group("ablation", "train model variants x seeds on one split (RUN_DIR holds the study)")
    g.add_argument("--ablation", action="store_true", help="run the ablation study instead of one run")
    g.add_argument("--variants", default=",".join(ABLATION_VARIANTS), metavar="V1,V2",
                   help=f"variants to train (default {','.join(ABLATION_VARIANTS)})")
    g.add_argument("--seeds", default="0,1,2", metavar="S1,S2", help="training seeds (default 0,1,2)")
    g.add_argument("--reference", default="attention", help="variant the others are compared with (default "
                   "attention)")
    g.add_argument("--jobs", type=int, default=1, help="runs trained at once in separate processes (default 1; "
                   "mind --train.threads)")
    return p


def split_overrides(extra: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    """``["--optim.lr=3e-4", "--train.epochs", "5"]`` -> ``{"optim.lr": "3e-4", "train.epochs": "5"}``."""
    out: dict[str, str] = {}
    i = 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or "." not in item.split("=", 1)[0]:
            parser.error(f"unrecognized argument: {item}")
        key = item[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            value = extra[i + 1]
            i += 1
        else:
            parser.error(f"override {item} needs a value: {item}=VALUE")
        out[key] = value
        i += 1
    return out


def _run_info(out: Path) -> dict:
    try:
        return json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _body(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = split_overrides(extra, parser)
    held = HeldNotice(PROG, enabled=os.environ.get("RANK", "0") == "0")  # under torchrun, rank 0 speaks
    from mmxai_core.errors import MMXAIError

    if args.ablation and args.seed is not None:
        raise MMXAIError("--seed sets one run's seed; with --ablation use --seeds 0,1,2")
    if args.ablation and args.resume and args.force:
        raise MMXAIError("--resume and --force exclude each other")

    out = Path(args.out)
    base = args.config
    info = _run_info(out) if args.resume and not args.ablation else {}
    if args.resume and not args.ablation and base is None and (out / "config.resolved.yaml").is_file():
        base = out / "config.resolved.yaml"
    manifest_path = args.manifest or info.get("manifest")
    schema = args.schema or info.get("schema")
    manifest = None
    if not args.print_config:
        if not manifest_path or not schema:
            raise MMXAIError("--manifest and --schema are required (with --resume they default to the run's own)")
        # the manifest is checked before torch is imported: a typo in it is reported at once
        from mmxai_core.data.manifest import load_manifest
        from mmxai_core.data.schema import load_schema

        manifest = load_manifest(manifest_path, load_schema(schema), allow_outside=args.allow_outside_paths)
    from mmxai_core.train.config import resolve_config

    if args.device is not None:
        overrides["train.device"] = args.device
    if args.seed is not None:
        overrides["train.seed"] = str(args.seed)
    if args.quiet:
        overrides["train.progress"] = "false"
    cfg = resolve_config(base, overrides)
    if args.print_config:
        sys.stdout.write(cfg.to_yaml())
        held()
        return 0
    from mmxai_core.train.distributed import runtime_from_env

    @held.before
    def say(text: str) -> None:
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)

    # single process, or one rank of a torchrun group; a missing GPU fails here
    with runtime_from_env(cfg.train.device, cfg.train.amp, cfg.train.threads) as runtime:
        if args.ablation:
            from mmxai_core.train.ablation import run_ablation, table_lines

            result = run_ablation(cfg, manifest, schema, out, variants=args.variants, seeds=args.seeds,
                                  reference=args.reference, splits=args.splits, jobs=args.jobs, resume=args.resume,
                                  force=args.force, runtime=runtime, log=say,
                                  allow_outside=args.allow_outside_paths)
            if runtime.is_main_process:
                held()
                print("\n".join(f"{PROG}: {line}" for line in table_lines(result)), flush=True)
            return 0
        from mmxai_core.train.run import run_training

        result = run_training(cfg, manifest, schema, out, splits=args.splits, resume=args.resume, force=args.force,
                              runtime=runtime, log=say)
        if runtime.is_main_process:
            held()
        if result.status == "complete" and runtime.is_main_process:
            lines = [f"{PROG}: {line}" for line in _test_lines(result)]
            print("\n".join(lines), flush=True)
    return 0


def _test_lines(result) -> list[str]:
    from mmxai_core.train.run import metrics_summary

    return metrics_summary(result.metrics["test"], "test")


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    return run_cli(PROG, _body, argv)


if __name__ == "__main__":
    sys.exit(main())
