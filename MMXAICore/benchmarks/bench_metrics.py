"""Cost of the explanation-quality metrics per case: stability and faithfulness (research use only).

    python MMXAICore/benchmarks/bench_metrics.py [--repeats 5] [--threads 1] [--json out.json]

In one process: the shipped demo model, a synthetic 128 x 128 2D case, all clinical fields entered;
``explain_case`` with ``metrics=("stability", "faithfulness")``, its own timings (``timings_s``:
``metric_stability``, ``metric_faithfulness``, and the explanation's steps for scale), median of
``--repeats`` after one warm-up case. The parameters the metrics used (number of perturbed copies,
batch sizes, deletion steps) are copied from the result's ``details``. Research use only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _demo_case import DEMO_MODEL, write_case
from common import setup_threads, write_json

KEYS = ("predict", "gradcam", "shapley", "metric_stability", "metric_faithfulness")


def _params(details: dict, depth: int = 0) -> dict:
    """Scalar parameters (ints, short strings) of a metric's details, one level deep."""
    out = {}
    for k, v in (details or {}).items():
        if isinstance(v, (int, float, str, bool)) and not isinstance(v, float) and (not isinstance(v, str) or len(v) < 80):
            out[k] = v
        elif isinstance(v, dict) and depth == 0:
            sub = _params(v, 1)
            out.update({f"{k}.{kk}": vv for kk, vv in sub.items()})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    setup_threads(args.threads)
    from mmxai_core.explain.clinical_input import validate_clinical
    from mmxai_core.explain.pipeline import ExplainOptions, checkpoint_info, explain_case, load_model, read_case_image

    with tempfile.TemporaryDirectory(prefix="mmxai-metrics-") as tmp:
        tmp = Path(tmp)
        path, clinical = write_case(tmp / "in")
        info = checkpoint_info(DEMO_MODEL)
        clinical = validate_clinical(clinical, info.schema, source="bench")
        model = load_model(DEMO_MODEL, "cpu", info=info)
        image = read_case_image(path)
        options = ExplainOptions(metrics=("stability", "faithfulness"))
        rows, last = [], None
        for i in range(args.repeats + 1):
            out = tmp / f"out{i}"
            out.mkdir()
            last = explain_case(model, image, clinical, out, options)
            if i:
                rows.append({k: last["timings_s"].get(k, 0.0) for k in KEYS})
    med = {k: statistics.median(r[k] for r in rows) for k in KEYS}
    params = {name: _params(last["metrics"][name].get("details", {})) for name in ("stability", "faithfulness")}
    print("  ".join(f"{k} {v:.3f} s" for k, v in med.items()))
    write_json(args.json, {"repeats": args.repeats, "median_s": med, "runs": rows, "parameters": params,
                           "headline": {n: {k: v for k, v in last["metrics"][n].items() if k != "details"}
                                        for n in ("stability", "faithfulness")}})


if __name__ == "__main__":
    main()
