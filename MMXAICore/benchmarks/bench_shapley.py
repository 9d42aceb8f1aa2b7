"""Time the clinical Shapley values against one forward+backward pass and the naive shap pipeline.

    python MMXAICore/benchmarks/bench_shapley.py [--size 128] [--repeats 5] [--threads 2]
                                                [--naive-fields 6] [--json out.json]

On a 2D case (``--size`` px, tiny preset, 6 numeric + 4 categorical fields, all 10 entered):

* ours: exact Shapley values of the 10 fields (1,024 coalitions), median of ``--repeats``, split into
  image encoding (once) and coalition evaluation (clinical branch + fusion + head, chunked);
* one forward+backward pass of the full model on the same input (what Grad-CAM++ costs);
* shap's ExactExplainer with our cheap value function on all 10 fields, and with a value function that
  costs nothing (shap's own overhead, one background row: the all-unknown state);
* the naive pipeline: shap's ExactExplainer calling the FULL model (image re-encoded for every
  coalition), run on ``--naive-fields`` of the fields (2^k coalitions; the other fields fixed at their
  entered values) and extrapolated linearly in the number of coalitions to 1,024: both the model cost and
  shap's per-coalition work grow linearly with the coalitions, and its final combination is negligible.

Median timings after a warm-up (shap's first call compiles numba code: excluded). Research use only.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from mmxai_core.explain.shapley import clinical_shapley
from mmxai_core.explain.value_function import CoalitionValue
from mmxai_core.model import create_model, model_config

FIELDS = [(f"num{i}", "numeric", 0) for i in range(6)] + [(f"cat{i}", "categorical", 3) for i in range(4)]
VALUES = np.array([0.2, 0.5, 0.9, 0.1, 0.7, 0.4, 0, 1, 2, 1], np.float32)


def _median(fn, repeats: int) -> tuple[float, list]:
    fn()  # warm-up
    times, outs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        outs.append(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), outs


def bench(size: int, repeats: int, naive_fields: int) -> dict:
    model = create_model(model_config("tiny", clinical_fields=FIELDS), seed=0).eval()
    image = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    missing = np.zeros(len(FIELDS), bool)
    out: dict = {"size": size, "fields": len(FIELDS), "coalitions": 2 ** len(FIELDS), "repeats": repeats,
                 "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.processor()}

    # ours
    total, results = _median(lambda: clinical_shapley(model, image, VALUES, missing), repeats)
    out["ours_total_s"] = total
    out["ours_encode_s"] = statistics.median(r.timings["encode_image"] for r in results)
    out["ours_coalitions_s"] = statistics.median(r.timings["evaluate_coalitions"] for r in results)
    out["ours_rows_per_chunk"] = CoalitionValue(model, image, VALUES, missing).max_rows_per_chunk

    # one forward + backward pass of the full model
    values_t, missing_t = torch.as_tensor(VALUES)[None], torch.as_tensor(missing)[None]

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        model(image, clin_values=values_t, clin_missing=missing_t).logits[0, 1].backward()

    out["forward_backward_s"], _ = _median(fwd_bwd, repeats)
    model.zero_grad(set_to_none=True)

    try:
        import shap
    except ImportError:
        out["shap"] = "not installed"
        return out
    out["shap"] = shap.__version__
    warm = shap.explainers.Exact(lambda x: np.asarray(x).sum(1), shap.maskers.Independent(np.zeros((1, 3))))
    warm(np.ones((1, 3)), silent=True)  # numba compilation, not counted

    # shap's ExactExplainer over our cheap value function (all 10 fields)
    vf = CoalitionValue(model, image, VALUES, missing)
    d = vf.n_players
    exact = shap.explainers.Exact(lambda x: vf(np.asarray(x) > 0.5), shap.maskers.Independent(np.zeros((1, d))))
    out["shap_exact_cheap_value_s"], _ = _median(lambda: exact(np.ones((1, d)), silent=True), repeats)
    # shap's own overhead: the same explainer over a value function that costs nothing
    idle = shap.explainers.Exact(lambda x: np.asarray(x, float).sum(1), shap.maskers.Independent(np.zeros((1, d))))
    out["shap_exact_overhead_s"], _ = _median(lambda: idle(np.ones((1, d)), silent=True), repeats)

    # naive pipeline: shap ExactExplainer, full model (image re-encoded) per coalition, on k fields
    k = naive_fields
    chunk = 64

    def full_model(x):
        x = np.asarray(x) > 0.5                              # (R, k): which of the first k fields are kept
        miss = np.zeros((x.shape[0], len(FIELDS)), bool)
        miss[:, :k] = ~x
        probs = []
        with torch.inference_mode():
            for s in range(0, len(x), chunk):
                m = torch.as_tensor(miss[s:s + chunk])
                v = torch.where(m, 0.0, values_t.expand(len(m), -1))
                probs.append(model(image.expand(len(m), -1, -1, -1), clin_values=v, clin_missing=m).probs[:, 1])
        return torch.cat(probs).double().numpy()

    naive = shap.explainers.Exact(full_model, shap.maskers.Independent(np.zeros((1, k))))
    naive_s, _ = _median(lambda: naive(np.ones((1, k)), silent=True), max(1, min(repeats, 3)))
    out["naive_fields"] = k
    out["naive_coalitions"] = 2 ** k
    out["naive_measured_s"] = naive_s
    out["naive_extrapolated_s"] = naive_s * 2 ** len(FIELDS) / 2 ** k
    out["naive_extrapolation"] = (f"measured on {2 ** k} coalitions ({k} fields), times "
                                  f"{2 ** len(FIELDS)}/{2 ** k} (linear in coalitions)")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--naive-fields", type=int, default=6)
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = bench(args.size, args.repeats, args.naive_fields)
    ms = lambda s: f"{1000 * s:9.1f} ms"
    print(f"exact Shapley, {res['fields']} fields ({res['coalitions']} coalitions), {res['size']}x{res['size']} "
          f"tiny, {res['threads']} thread(s), median of {res['repeats']}")
    print(f"  ours total                 {ms(res['ours_total_s'])}")
    print(f"    image encoding (once)    {ms(res['ours_encode_s'])}")
    print(f"    coalition evaluation     {ms(res['ours_coalitions_s'])}  ({res['ours_rows_per_chunk']} rows/chunk)")
    print(f"  forward+backward, 1 pass   {ms(res['forward_backward_s'])}")
    if "naive_measured_s" in res:
        print(f"  shap Exact, cheap value fn {ms(res['shap_exact_cheap_value_s'])}")
        print(f"  shap Exact, its overhead   {ms(res['shap_exact_overhead_s'])}  (value function costing nothing)")
        print(f"  naive: shap Exact + full model, {res['naive_coalitions']} coalitions {ms(res['naive_measured_s'])}")
        print(f"  naive extrapolated to {res['coalitions']}  {ms(res['naive_extrapolated_s'])}  "
              f"({res['naive_extrapolation']})")
    if args.json:
        from mmxai_core.utils.atomic import write_json_atomic
        write_json_atomic(args.json, res)


if __name__ == "__main__":
    main()
