"""Shapley cost against the number of clinical fields; the permutation estimate's error against exact.

    python MMXAICore/benchmarks/bench_fields.py [--fields 4,6,8,10,12,14,16] [--size 128] [--repeats 5]
                                               [--repeats-large 3] [--threads 1] [--json out.json]

For d entered fields (a 2D case, tiny architecture with explicit settings, alternating numeric and
3-category fields; image encoded once per explanation, included): the exact computation (2^d coalitions)
and the antithetic permutation estimate with the default 256 permutations (seed 0), timed side by side,
median of ``--repeats`` (``--repeats-large`` for d >= 14). The exact cutoff is lifted for the measurement.
Error of the estimate: max over fields of |estimate - exact|, also relative to max |exact|, and the share
of fields whose error is within 2 reported standard errors. Research use only - not for diagnosis.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from common import bench_model, field_values, fields, interleaved, setup_threads, write_json


def bench(ds: list[int], size: int, repeats: int, repeats_large: int) -> dict:
    from mmxai_core.explain import shapley as shapley_mod
    from mmxai_core.explain.shapley import clinical_shapley

    shapley_mod.EXACT_MAX_FIELDS = max(ds)  # measure beyond the cutoff
    image = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    for d in ds:
        model = bench_model(fields(d), size)
        values, missing = field_values(d), np.zeros(d, bool)
        exact = lambda: clinical_shapley(model, image, values, missing, method="exact")  # noqa: E731
        perm = lambda: clinical_shapley(model, image, values, missing, method="permutation")  # noqa: E731
        t = interleaved({"exact": exact, "permutation": perm}, repeats=repeats if d < 14 else repeats_large,
                        warmup=1)
        e, pm = exact(), perm()
        err = np.abs(pm.values - e.values)
        scale = float(np.abs(e.values).max())
        rows.append({"d": d, "coalitions": 2 ** d, "exact_s": t["exact"]["median_s"],
                     "permutation_s": t["permutation"]["median_s"], "permutation_rows": pm.n_evaluations,
                     "exact_per_row_us": 1e6 * t["exact"]["median_s"] / 2 ** d,
                     "max_abs_error": float(err.max()), "max_abs_exact": scale,
                     "relative_error": float(err.max() / scale) if scale else 0.0,
                     "within_2se": float(np.mean(err <= 2 * pm.standard_errors + 1e-12)),
                     "runs": t["exact"]["runs"]})
        r = rows[-1]
        print(f"d={d:2d}: exact {r['exact_s'] * 1000:8.1f} ms ({r['coalitions']} rows), permutation "
              f"{r['permutation_s'] * 1000:7.1f} ms ({r['permutation_rows']} rows), max error {r['max_abs_error']:.2e} "
              f"({100 * r['relative_error']:.1f}% of max |phi|)")
    return {"size": size, "permutations": 256, "rows": rows, "cutoff_now": 12}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fields", default="4,6,8,10,12,14,16")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--repeats-large", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    setup_threads(args.threads)
    write_json(args.json, bench([int(x) for x in args.fields.split(",")], args.size, args.repeats,
                                args.repeats_large))


if __name__ == "__main__":
    main()
