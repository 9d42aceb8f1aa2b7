"""Run the benchmark suite and write BENCHMARKS.md (``make bench``). Research use only - not for diagnosis.

    python MMXAICore/benchmarks/run_all.py [--out out/bench] [--md BENCHMARKS.md] [--quick]

Each benchmark runs as its own process (one CPU thread unless it says otherwise) and writes JSON into
``--out``; the Markdown report is built from those files (``report.py``), with every figure's command and
the machine. ``--quick`` runs tiny settings (a check that the suite works, figures not meaningful).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

SUITE = [
    ("explain", ["bench_explain.py", "--repeats", "5", "--threads", "1"],
     ["bench_explain.py", "--repeats", "1", "--naive-fields", "3", "--no-naive-full", "--size", "64"]),
    ("fields", ["bench_fields.py", "--repeats", "5", "--threads", "1"],
     ["bench_fields.py", "--repeats", "1", "--repeats-large", "1", "--fields", "4,6", "--size", "64"]),
    ("train", ["bench_train.py", "--repeats", "5", "--threads", "1"],
     ["bench_train.py", "--repeats", "1", "--cases", "8", "--size", "64"]),
    ("metrics", ["bench_metrics.py", "--repeats", "5", "--threads", "1"],
     ["bench_metrics.py", "--repeats", "1"]),
    ("click", ["bench_click.py", "--repeats", "5"], ["bench_click.py", "--repeats", "1"]),
    ("volume", ["bench_volume.py", "--threads", "1"],
     ["bench_volume.py", "--slices", "1,2", "--size", "64", "--repeats", "1"]),
    ("gpu_script_cpu_check", ["gpu_bench.py", "--device", "cpu", "--tiny"], ["gpu_bench.py", "--device", "cpu", "--tiny"]),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(REPO / "out" / "bench"))
    p.add_argument("--md", default=str(REPO / "BENCHMARKS.md"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default=None, help="comma-separated benchmark names")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    durations = {}
    t_all = time.perf_counter()
    only = set(args.only.split(",")) if args.only else None
    for name, full, quick in SUITE:
        if only and name not in only:
            continue
        cmd = [sys.executable, str(HERE / (quick if args.quick else full)[0]), *(quick if args.quick else full)[1:],
               "--json", str(out / f"{name}.json")]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO)
        durations[name] = time.perf_counter() - t0
        print(f"   {durations[name]:.0f} s", flush=True)
    total = time.perf_counter() - t_all
    if only and (out / "suite.json").exists():   # a partial rerun: keep the other benchmarks' durations
        previous = json.loads((out / "suite.json").read_text())
        durations = {**previous.get("durations_s", {}), **durations}
        total = sum(durations.values())
    (out / "suite.json").write_text(json.dumps({"durations_s": durations, "total_s": total, "quick": args.quick,
                                                "rerun": sorted(only) if only else []}, indent=2))
    from report import write_report

    write_report(out, Path(args.md))
    print(f"suite: {total / 60:.1f} min; wrote {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
