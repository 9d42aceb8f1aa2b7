"""Explain latency of a 2D case against its floor and against the naive pipeline (research use only).

    python MMXAICore/benchmarks/bench_explain.py [--size 128] [--repeats 5] [--threads 1]
                                                [--naive-fields 6] [--no-naive-full] [--json out.json]

One 2D case (``--size`` px, the tiny architecture with explicit settings, 10 clinical fields all entered).
Timed side by side in rounds (common.interleaved; warm-up round excluded; median of ``--repeats``):

* ``floor``: one forward + backward pass of the same model on the same input (eval mode, all gradients);
* ``predict``: one forward pass (inference mode);
* ``gradcam``: Grad-CAM++ (``GradCAMPlusPlusExplainer``; its forward pass also gives the prediction);
* ``shapley``: exact Shapley values of the 10 fields, 1,024 coalitions (image encoded once, two-state
  coalition decoder), and ``shapley_before``: the same with the reference decode (``fast=False``, what the
  code did before this benchmark's fix);
* ``explain``: as the pipeline runs it: Grad-CAM++ (its forward pass is the prediction) + Shapley on the
  image encoding that Grad-CAM++'s result carries (``CamResult.encoding``): one encoder pass;
  ``explain_3pass``: predict + Grad-CAM++ + Shapley encoding the image again (the pipeline before the
  shared encoding); ``explain_before``: predict + Grad-CAM++ + ``shapley_before``;
* ``naive``: pytorch-grad-cam's ``GradCAMPlusPlus`` + ``shap.explainers.Exact`` calling the full model
  (image re-encoded) for every coalition, with the same removal reference (a removed field = unknown:
  shap's background row is all zeros = "not kept"). Timed on ``--naive-fields`` of the fields (2^k
  coalitions, the others fixed at their entered values) and extrapolated linearly in coalitions to 1,024;
  and, unless ``--no-naive-full``, run ONCE on all 10 fields: its time, and its Shapley values and heatmap
  compared with ours.

Research use only - not for diagnosis.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from common import FIELDS10, VALUES10, bench_model, interleaved, ms, setup_threads, write_json


class BoundModel(nn.Module):
    """images (B, 1, H, W) -> logits, clinical input bound (what a user of pytorch-grad-cam writes)."""

    def __init__(self, model, values, missing):
        super().__init__()
        self.model, self.values, self.missing = model, values, missing

    def forward(self, images):
        b = images.shape[0]
        return self.model(images, clin_values=self.values.expand(b, -1), clin_missing=self.missing.expand(b, -1)).logits


def naive_parts(model, image, values_t, missing_t, k: int):
    """(gradcam fn, shap fn over the first k fields, full-model value fn) of the naive pipeline."""
    import shap
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    bound = BoundModel(model, values_t, missing_t)
    n_fields = values_t.shape[1]

    def gradcam():
        with GradCAMPlusPlus(model=bound, target_layers=[model.image_encoder.cam_layer]) as cam:
            return cam(input_tensor=image, targets=[ClassifierOutputTarget(1)])[0]

    def full_model(kept, k=k, chunk=64):
        kept = np.asarray(kept) > 0.5
        miss = np.zeros((kept.shape[0], n_fields), bool)
        miss[:, :k] = ~kept
        probs = []
        with torch.inference_mode():
            for s in range(0, len(kept), chunk):
                m = torch.as_tensor(miss[s:s + chunk])
                v = torch.where(m, 0.0, values_t.expand(len(m), -1))
                probs.append(model(image.expand(len(m), -1, -1, -1), clin_values=v, clin_missing=m).probs[:, 1])
        return torch.cat(probs).double().numpy()

    def shapley(k=k):
        explainer = shap.explainers.Exact(lambda x: full_model(x, k), shap.maskers.Independent(np.zeros((1, k))))
        return explainer(np.ones((1, k)), silent=True)

    return gradcam, shapley


def bench(size: int, repeats: int, naive_fields: int, naive_full: bool) -> dict:
    from mmxai_core.explain.gradcam import GradCAMPlusPlusExplainer
    from mmxai_core.explain.shapley import shapley_of_game
    from mmxai_core.explain.value_function import CoalitionValue

    model = bench_model(FIELDS10, size)
    image = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    values_t, missing_t = torch.as_tensor(VALUES10)[None], torch.zeros(1, 10, dtype=torch.bool)
    missing = np.zeros(10, bool)
    cam = GradCAMPlusPlusExplainer(model)

    def floor():
        model.zero_grad(set_to_none=True)
        model(image, clin_values=values_t, clin_missing=missing_t).logits[0, 1].backward()

    def predict():
        with torch.inference_mode():
            return model(image, clin_values=values_t, clin_missing=missing_t).probs

    def gradcam():
        return cam(image, values_t, missing_t, target_class=1)

    def shapley(fast=True, encoding=None):
        vf = CoalitionValue(model, image if encoding is None else None, VALUES10, missing, fast=fast,
                            encoding=encoding)
        return shapley_of_game(vf)

    def explain():
        res = gradcam()
        return res, shapley(encoding=res.encoding)

    fns = {"floor": floor, "predict": predict, "gradcam": gradcam, "shapley": shapley,
           "shapley_before": lambda: shapley(fast=False),
           "explain": explain,
           "explain_3pass": lambda: (predict(), gradcam(), shapley()),
           "explain_before": lambda: (predict(), gradcam(), shapley(fast=False))}
    rows = interleaved(fns, repeats=repeats, warmup=1, reference="floor")
    model.zero_grad(set_to_none=True)
    ours = shapley()
    before = shapley(fast=False)
    out = {"size": size, "fields": 10, "coalitions": 1024, "repeats": repeats, "rows": rows,
           "fast_vs_reference_max_abs": float(np.abs(ours.values - before.values).max())}

    try:
        import shap  # noqa: F401
        import pytorch_grad_cam  # noqa: F401
    except ImportError as exc:
        out["naive"] = f"not run: {exc}"
        return out
    import shap

    warm = shap.explainers.Exact(lambda x: np.asarray(x).sum(1), shap.maskers.Independent(np.zeros((1, 3))))
    warm(np.ones((1, 3)), silent=True)  # shap's numba compilation, not counted
    k = naive_fields
    n_gradcam, n_shapley = naive_parts(model, image, values_t, missing_t, k)
    naive_rows = interleaved({"naive_gradcam": n_gradcam, f"naive_shapley_{k}": n_shapley,
                              "explain": explain, "explain_3pass": fns["explain_3pass"]},
                             repeats=repeats, warmup=1)
    n_cam = naive_rows["naive_gradcam"]["median_s"]
    n_shap = naive_rows[f"naive_shapley_{k}"]["median_s"]
    extrapolated = n_cam + n_shap * 1024 / 2 ** k
    out["naive"] = {"fields_timed": k, "coalitions_timed": 2 ** k, "rows": naive_rows,
                    "extrapolated_s": extrapolated,
                    "extrapolation": f"Grad-CAM++ + shap Exact on {2 ** k} coalitions x 1024/{2 ** k}",
                    "speedup_explain": extrapolated / rows["explain"]["median_s"],
                    "speedup_explain_3pass": extrapolated / rows["explain_3pass"]["median_s"]}
    # same heatmap: pytorch-grad-cam min-max scales its upsampled map; do the same to ours
    theirs = n_gradcam()
    from mmxai_core.explain.gradcam import upsample_maps

    raw = upsample_maps(gradcam().raw[0, 0], (size, size)).numpy()
    mine = (raw - raw.min()) / max(float(raw.max() - raw.min()), 1e-12)
    out["heatmap_max_abs_diff"] = float(np.abs(mine - theirs).max())
    if naive_full:
        _, full_shap = naive_parts(model, image, values_t, missing_t, 10)
        t0 = time.perf_counter()
        exp = full_shap()
        full_s = time.perf_counter() - t0
        out["naive"]["full_10_fields_once_s"] = full_s + n_cam
        out["naive"]["speedup_explain_full"] = (full_s + n_cam) / rows["explain"]["median_s"]
        out["shapley_vs_shap_max_abs"] = float(np.abs(np.asarray(exp.values[0]) - ours.values).max())
        out["shap_base_vs_ours"] = float(abs(float(exp.base_values[0]) - ours.base_value))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--naive-fields", type=int, default=6)
    p.add_argument("--no-naive-full", action="store_true", help="skip the one full run of the naive pipeline")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    setup_threads(args.threads)
    res = bench(args.size, args.repeats, args.naive_fields, not args.no_naive_full)
    for name, row in res["rows"].items():
        print(f"{name:16s} {ms(row['median_s']):>10s}  {row['ratio']:.2f}x floor")
    if isinstance(res.get("naive"), dict):
        print(f"naive extrapolated {res['naive']['extrapolated_s']:.2f} s, speed-up {res['naive']['speedup_explain']:.0f}x"
              f" (three encoder passes: {res['naive']['speedup_explain_3pass']:.0f}x)")
    write_json(args.json, res)


if __name__ == "__main__":
    main()
