"""Explain time and peak memory of a volume against its slice count (research use only).

    python MMXAICore/benchmarks/bench_volume.py [--slices 1,16,32,64,128] [--size 256] [--repeats 5]
                                               [--repeats-large 2] [--large-from 64] [--threads 1] [--json out.json]

For each slice count S (one case, S x ``--size`` x ``--size``, tiny architecture with explicit settings,
slice_chunk 16, 10 clinical fields) a FRESH process (so that its peak memory is its own) times, after one
warm-up explanation of a 1-slice case:

* Grad-CAM++ of the case (slices in chunks of 16; a graph is kept for one chunk at a time: see
  ``mmxai_core.explain.gradcam``), and
* exact Shapley values of the 10 fields (1,024 coalitions) on the image encoding of that Grad-CAM++ pass,
  as the pipeline computes them (two-state decoder),

as the median of ``--repeats`` runs (``--repeats-large`` for S >= ``--large-from``). The 1-slice case is
explained right before the S-slice case in every round, so the per-slice ratio is measured side by side.

Memory: in a second fresh process per size, which explains the volume once (after the 1-slice warm-up), the
peak resident set size (``ru_maxrss``) minus the resident set size just before that explanation (model
built, volume in memory): the extra memory one explanation needed at its peak, in MiB; and that peak minus
what the explanation returns (maps, attention maps, the tokens its Shapley values reuse): the working
memory, which the slice chunk and the two fixed budgets bound (``FEATURE_BUDGET_MIB``,
``PREPARED_BUDGET_MIB``), not the volume. Both twice: as run (glibc's default allocator, which keeps freed
memory for reuse) and "live" (a third process with ``MALLOC_MMAP_THRESHOLD_=65536``: every block of 64 KiB
or more is returned to the system when freed, so the resident set follows the tensors the code holds). Research use only - not for diagnosis.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from common import FIELDS10, VALUES10, bench_model, setup_threads, write_json


#: glibc's mmap threshold for the "live" memory runs (bytes): blocks this large or larger go straight to
#: the system and back.
LIVE_MMAP_THRESHOLD = 65536


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _result_mib(res) -> float:
    """MiB of the tensors an explanation returns (a :class:`CamResult`: maps, the model output with its
    per-slice attention maps, the image encoding's tokens that the Shapley values and the metrics reuse)."""
    import dataclasses

    seen, total = set(), 0
    for part in (res, res.output, res.encoding):
        for field in dataclasses.fields(part):
            value = getattr(part, field.name)
            for t in value if isinstance(value, list) else [value]:
                if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
                    seen.add(t.data_ptr())
                    total += t.numel() * t.element_size()
    return total / 2 ** 20


def child(slices: int, size: int, repeats: int, feature_budget: float | None = None) -> dict:
    from mmxai_core.explain.gradcam import GradCAMPlusPlusExplainer
    from mmxai_core.explain.shapley import shapley_of_game
    from mmxai_core.explain.value_function import CoalitionValue

    model = bench_model(FIELDS10, size)
    values, missing = torch.as_tensor(VALUES10)[None], torch.zeros(1, 10, dtype=torch.bool)
    volume = torch.randn(1, slices, 1, size, size, generator=torch.Generator().manual_seed(slices))
    one = volume[:, :1].clone()

    results = {}
    budget = {} if feature_budget is None else {"feature_budget_mib": feature_budget}

    def explain(x):
        """What the pipeline does: Grad-CAM++ (its forward is the prediction), then exact Shapley values on
        the image encoding of that pass."""
        t0 = time.perf_counter()
        with GradCAMPlusPlusExplainer(model, **budget) as cam:
            res = cam(x, values, missing, target_class=1)
        t1 = time.perf_counter()
        vf = CoalitionValue(model, x, values, missing, target=1, encoding=res.encoding)
        shapley_of_game(vf, method="exact")
        results["last"] = res
        return t1 - t0, time.perf_counter() - t1

    explain(one)  # warm-up
    if repeats == 0:                # memory child: ONE explanation of the volume in this fresh process
        results.clear()
        base = _rss_mib()
        explain(volume)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kept = _result_mib(results["last"])
        return {"rss_before_mib": base, "peak_rss_mib": peak, "peak_extra_mib": peak - base,
                "results_mib": kept, "working_mib": peak - base - kept}
    base = _rss_mib()
    runs, singles = [], []
    for _ in range(repeats):        # side by side: the single slice right before the volume, every round
        singles.append(sum(explain(one)))
        runs.append(explain(volume))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    g = statistics.median(r[0] for r in runs)
    s = statistics.median(r[1] for r in runs)
    t = statistics.median(r[0] + r[1] for r in runs)
    ratio = statistics.median((r[0] + r[1]) / slices / one_s for r, one_s in zip(runs, singles))
    return {"slices": slices, "size": size, "repeats": repeats, "feature_budget_mib": feature_budget, "gradcam_s": g, "shapley_s": s, "explain_s": t,
            "per_slice_s": t / slices, "single_slice_s": statistics.median(singles), "per_slice_vs_single": ratio,
            "rss_before_mib": base, "peak_rss_mib": peak,
            "peak_extra_mib": peak - base, "volume_mib": volume.numel() * 4 / 2 ** 20,
            "times_s": [[round(a, 4), round(b, 4)] for a, b in runs]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slices", default="1,16,32,64,128,256")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--repeats-large", type=int, default=5)
    p.add_argument("--large-from", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-budget-at", type=int, default=128,
                   help="also explain this slice count with no CNN feature maps kept (feature budget 0: the "
                        "memory-lean setting, the CNN runs twice for all chunks but the last); 0 = skip")
    p.add_argument("--feature-budget", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    setup_threads(args.threads)
    if args.child is not None:
        print(json.dumps(child(args.child, args.size, args.repeats, args.feature_budget)))
        return
    rows = []
    plan = [(int(x), None) for x in args.slices.split(",")] + ([(args.no_budget_at, 0.0)] if args.no_budget_at else [])
    for s, feature_budget in plan:
        reps = args.repeats_large if s >= args.large_from else args.repeats
        cmd = [sys.executable, __file__, "--child", str(s), "--size", str(args.size), "--repeats", str(reps),
               "--threads", str(args.threads)]
        if feature_budget is not None:
            cmd += ["--feature-budget", str(feature_budget)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        # peak memory of one explanation, in its own fresh process (repeated runs in one process add the
        # allocator's fragmentation to ru_maxrss)
        mem_cmd = cmd[:cmd.index("--repeats") + 1] + ["0"] + cmd[cmd.index("--repeats") + 2:]
        mem = subprocess.run(mem_cmd, capture_output=True, text=True, check=True)
        row.update(json.loads(mem.stdout.strip().splitlines()[-1]))
        # the same with glibc returning every block of 64 KiB or more to the system when it is freed: the
        # resident set then follows the live tensors (what the code holds), not what the allocator keeps
        live = subprocess.run(mem_cmd, capture_output=True, text=True, check=True,
                              env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(LIVE_MMAP_THRESHOLD)})
        row.update({f"live_{k}": v for k, v in json.loads(live.stdout.strip().splitlines()[-1]).items()
                    if k in ("peak_extra_mib", "working_mib")})
        rows.append(row)
        print(f"{s:4d} slices{'' if feature_budget is None else f' (feature budget {feature_budget:g})'}: explain {row['explain_s']:.2f} s ({row['per_slice_s'] * 1000:.0f} ms/slice; "
              f"Grad-CAM++ {row['gradcam_s']:.2f} s, Shapley {row['shapley_s']:.2f} s), peak +{row['peak_extra_mib']:.0f} MiB, "
              f"results {row['results_mib']:.0f} MiB, working {row['working_mib']:.0f} MiB")
    from mmxai_core.explain.coalition_decoder import PREPARED_BUDGET_MIB
    from mmxai_core.explain.gradcam import FEATURE_BUDGET_MIB

    res = {"size": args.size, "slice_chunk": 16, "fields": 10, "rows": rows,
           "feature_budget_mib": FEATURE_BUDGET_MIB, "prepared_budget_mib": PREPARED_BUDGET_MIB,
           "memory_method": "peak RSS (ru_maxrss) minus RSS before the explanation, one explanation in a fresh "
                            "process per size; working memory = that minus the bytes of the tensors the "
                            "explanation returns; live = the same in a process with MALLOC_MMAP_THRESHOLD_=65536",
           "ratio_method": "in every round the 1-slice case is explained right before the S-slice case in the "
                           "same process; ratio = median over rounds of (S-slice time / S) / 1-slice time"}
    write_json(args.json, res)


if __name__ == "__main__":
    main()
