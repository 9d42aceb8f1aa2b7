"""Cross-modal coherence: do the image and the clinical data support the same decision?

Research use, not for diagnosis. The seed paper claims coherence without defining it; this is our
definition, per case, from explanations the product already computes.

**(i) Modality agreement** from the two-player Shapley split of the prediction
(:func:`mmxai_core.explain.modality.modality_split`; image absent = missing-image token, clinical absent =
all fields unknown), with a = phi_image and b = phi_clinical (probability of the explained class):

    s = sign(a b)          +1: both push the same way, -1: opposite ways, 0: either is exactly 0
    m = min(|a|, |b|)      how much the weaker modality takes part (probability units)
    agreement = s * m      in [-1, 1] (probability units)

i.e. sign agreement scaled by the magnitudes: a clear conflict needs BOTH modalities to push clearly
(a case where one modality hardly matters is neutral, about 0, not "discordant"), as in the synthetic
cohort's ground truth ("image evidence and clinical score point opposite ways, each by at least a
threshold"). On the generator's own image evidence and clinical score (5,000 patients) s * m separates the
discordant cases with AUROC 0.998, where the scale-free 2ab / (a^2 + b^2) reaches only 0.92. It does
not depend on which class is explained (flipping the class flips both signs).

**(ii) Spatial co-location** of the image evidence with the clinical evidence the model used: the
Pearson correlation, over the real slices' token positions, between the Grad-CAM++ map (raw, any
non-negative scale) and the |phi|-weighted mean of the cross-modal attention maps
(:func:`mmxai_core.explain.crossmodal_maps.crossmodal_maps`: for each image token, the attention weight
on the field) of the ``top_m`` (default 3) known fields with the largest |Shapley value|:

    A = sum_f |phi_f| A_f / sum_f |phi_f|,        spatial = corr(CAM, A)   in [-1, 1]

High when the image tokens that carry the evidence are the ones that listen to the decisive clinical fields.
NaN (left out) when a map is constant (e.g. an all-zero CAM), the variant has no cross-modal attention,
or no known field has a non-zero value.

**Coherence** = m * (alpha * s + (1 - alpha) * spatial), alpha = 0.75 (default); = m * s when the spatial
part is NaN (``spatial_used`` False). Probability units, in [-1, 1]; low = discordant, 0 = a modality has
no say. With alpha > 0.5 the spatial part only modulates the size (the factor stays within
[2 alpha - 1, 1] for s = +1 and [-1, 1 - 2 alpha] for s = -1): it never turns agreement into conflict.
Every component is returned: report the AUROC of each as well as of the combination.

**Validation** (:func:`coherence_auroc`, flags from ``ground_truth.json`` by :func:`discordant_flags`):
AUROC of separating the ground-truth discordant cases (positive) from the rest with *lower coherence =
discordant*, i.e. P(score_discordant < score_other) + 1/2 P(tie), with a stratified percentile bootstrap CI.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mmxai_core.explain.metrics._common import as_maps, clinical_row, jsonable
from mmxai_core.explain.metrics.ssim import pearson

DEFAULT_ALPHA = 0.75
DEFAULT_TOP_M = 3


def modality_agreement(phi_image: float, phi_clinical: float) -> float:
    """sign(a b) * min(|a|, |b|): the weaker modality's contribution, + when the two agree, - when they
    conflict (module docstring)."""
    a, b = float(phi_image), float(phi_clinical)
    return float(np.sign(a * b) * min(abs(a), abs(b)))


def spatial_colocation(cam: Any, attention_maps: Mapping[str, Any], shapley: Mapping[str, float], *,
                       top_m: int = DEFAULT_TOP_M, slice_mask: Any = None) -> dict[str, Any]:
    """corr(CAM, |phi|-weighted attention of the top-m fields) over the real slices (module docstring).

    Args:
        cam: (S, h, w) or (h, w) Grad-CAM++ map; attention_maps: ``{field: map of the same shape}``;
        shapley: ``{field: value}`` of the known fields (fields missing here or with value 0 are ignored).
        slice_mask: (S,) real slices (default all).

    Returns:
        ``{"value": r or NaN, "fields": [...], "weights": [...], "constant": bool}``.
    """
    c = as_maps(cam, "cam")
    real = np.ones(c.shape[0], dtype=bool) if slice_mask is None else np.asarray(slice_mask, bool).reshape(-1)
    ranked = sorted(((abs(float(v)), k) for k, v in shapley.items() if k in attention_maps and float(v) != 0.0),
                    key=lambda t: -t[0])[:max(int(top_m), 0)]
    if not ranked:
        return {"value": math.nan, "fields": [], "weights": [], "constant": True,
                "reason": "no field with a non-zero Shapley value and an attention map"}
    weights = np.array([w for w, _ in ranked])
    combined = np.zeros_like(c)
    for w, name in ranked:
        a = as_maps(attention_maps[name], f"attention map of {name}")
        if a.shape != c.shape:
            raise ValueError(f"attention map of {name} has shape {a.shape}, the CAM {c.shape}")
        combined += w * a
    combined /= weights.sum()
    r, constant = pearson(c[real].reshape(-1), combined[real].reshape(-1))
    out = {"value": r, "fields": [name for _, name in ranked], "weights": [float(w) for w in weights],
           "constant": bool(constant)}
    if constant:
        out["reason"] = "a map is constant over the real slices"
    return out


def coherence_from_parts(phi_image: float, phi_clinical: float, *, cam: Any = None,
                         attention_maps: Mapping[str, Any] | None = None,
                         shapley: Mapping[str, float] | None = None, top_m: int = DEFAULT_TOP_M,
                         alpha: float = DEFAULT_ALPHA, slice_mask: Any = None) -> dict[str, Any]:
    """Coherence of one case from its explanation parts (module docstring); JSON-ready dict with the
    score, every component and the parameters.

    Args:
        phi_image, phi_clinical: the modality split (probability of the explained class).
        cam: (S, h, w) Grad-CAM++ map; attention_maps: ``{field: (S, h, w)}``; shapley: ``{field: value}``
            of the known fields; slice_mask: (S,) real slices. Without them only the agreement is used.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    a, b = float(phi_image), float(phi_clinical)
    sign, weaker = float(np.sign(a * b)), min(abs(a), abs(b))
    spatial: dict[str, Any] = {"value": math.nan, "reason": "no CAM / attention maps / Shapley values given"}
    if cam is not None and attention_maps and shapley:
        spatial = spatial_colocation(cam, attention_maps, shapley, top_m=top_m, slice_mask=slice_mask)
    used = bool(math.isfinite(spatial["value"]))
    factor = alpha * sign + (1.0 - alpha) * spatial["value"] if used else sign
    return jsonable({
        "metric": "crossmodal_coherence",
        "coherence": weaker * factor,
        "components": {"modality_agreement": sign * weaker, "sign_agreement": sign, "weaker_contribution": weaker,
                       "spatial_colocation": spatial["value"], "spatial_used": used},
        "modality": {"phi_image": a, "phi_clinical": b},
        "spatial": spatial,
        "parameters": {"alpha": float(alpha), "top_m": int(top_m),
                       "definition": "min(|phi_I|, |phi_C|) * (alpha * sign(phi_I phi_C) + (1 - alpha) * "
                                     "corr(CAM, |phi|-weighted cross-modal attention of the top-m fields)); "
                                     "min * sign when the spatial part is undefined",
                       "units": "probability of the explained class", "direction": "low = discordant"},
    })


def case_coherence(model: nn.Module, images: Any, clin_values: Any, clin_missing: Any = None, *,
                   slice_mask: Any = None, image_present: bool | None = None, target: int | None = None,
                   split: Any = None, shapley: Any = None, cam: Any = None, top_m: int = DEFAULT_TOP_M,
                   alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """Coherence of one case for the model, computing whatever is not given.

    Args:
        images: (1, S, 1, H, W) or (1, 1, H, W); clin_values / clin_missing (F,) or (1, F).
        split: a :class:`~mmxai_core.explain.modality.ModalitySplit` of the case (else computed).
        shapley: a :class:`~mmxai_core.explain.shapley.ShapleyResult` (else computed, exact).
        cam: a :class:`~mmxai_core.explain.gradcam.CamResult` of the case with its model output (else
            computed for the split's target class). Its ``output.cross_attention`` gives the attention maps.
    """
    t0 = time.perf_counter()
    from mmxai_core.explain.value_function import CoalitionValue

    need_vf = split is None or shapley is None
    if need_vf:
        vf = CoalitionValue(model, images, clin_values, clin_missing, slice_mask=slice_mask,
                            image_present=image_present, target=target)
        if split is None:
            from mmxai_core.explain.modality import split_of_game

            split = split_of_game(vf)
        if shapley is None:
            from mmxai_core.explain.shapley import shapley_of_game

            shapley = shapley_of_game(vf)
    field_names = tuple(shapley.field_names)
    values = {n: float(v) for n, v, k in zip(field_names, shapley.values, shapley.known) if k}
    attention = None
    mask = None
    has_image = images is not None and (image_present is None or bool(image_present))
    if has_image and getattr(model, "fusion_kind", None) == "cross_attention":
        from mmxai_core.explain.crossmodal_maps import crossmodal_maps
        from mmxai_core.explain.gradcam import gradcam_plus_plus

        if cam is None:
            v, m = clinical_row(clin_values, clin_missing, "cpu")
            sm = None if slice_mask is None else torch.as_tensor(slice_mask).to(torch.bool).reshape(1, -1)
            cam = gradcam_plus_plus(model, torch.as_tensor(images), v, m, slice_mask=sm,
                                    target_class=int(split.target))
        attention = crossmodal_maps(cam.output, field_names, case=0, size=None)
        mask = cam.slice_mask[0].numpy()
    out = coherence_from_parts(split.image, split.clinical, cam=None if cam is None else cam.raw[0],
                               attention_maps=attention, shapley=values, top_m=top_m, alpha=alpha,
                               slice_mask=mask)
    out["target"], out["output"] = int(split.target), split.output
    out["seconds"] = time.perf_counter() - t0
    return jsonable(out)


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + 1/2 P(tie) via ranks (Mann-Whitney U)."""
    from scipy.stats import rankdata     # here, not at import: scipy.stats costs 0.5 s of a click

    ranks = rankdata(np.concatenate([pos, neg]))
    n1, n0 = pos.size, neg.size
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def coherence_auroc(scores: Sequence[float], discordant: Sequence[bool], *, n_bootstrap: int = 1000,
                    seed: int = 0, ci: float = 0.95) -> dict[str, Any]:
    """AUROC of separating discordant cases (positive) by LOW coherence, with a bootstrap CI.

    Args:
        scores: per-case coherence (NaN cases are excluded and counted).
        discordant: per-case ground truth (``ground_truth.json``'s ``discordant`` flags).
        n_bootstrap: stratified resamples for the percentile CI (0 = no CI).

    Returns:
        ``{"auroc", "ci_low", "ci_high", "n_discordant", "n_other", "n_excluded", "direction",
        "parameters"}``; AUROC None (NaN) when a group is empty.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(discordant, dtype=bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores for {y.size} discordant flags")
    ok = np.isfinite(s)
    pos, neg = -s[ok & y], -s[ok & ~y]
    out: dict[str, Any] = {"metric": "coherence_auroc", "n_discordant": int(pos.size), "n_other": int(neg.size),
                           "n_excluded": int((~ok).sum()), "direction": "lower coherence = discordant",
                           "parameters": {"ci": float(ci), "n_bootstrap": int(n_bootstrap), "seed": int(seed),
                                          "bootstrap": "stratified (within each group), percentile interval",
                                          "positive_class": "discordant", "ties": "count 1/2"}}
    if pos.size == 0 or neg.size == 0:
        out.update(auroc=math.nan, ci_low=math.nan, ci_high=math.nan, reason="a group is empty")
        return jsonable(out)
    out["auroc"] = _auroc(pos, neg)
    lo = hi = math.nan
    if n_bootstrap > 0:
        rng = np.random.default_rng(int(seed))
        boots = np.array([_auroc(rng.choice(pos, pos.size), rng.choice(neg, neg.size))
                          for _ in range(int(n_bootstrap))])
        alpha = (1.0 - float(ci)) / 2.0
        lo, hi = (float(v) for v in np.quantile(boots, [alpha, 1.0 - alpha]))
    out.update(ci_low=lo, ci_high=hi)
    return jsonable(out)


def discordant_flags(ground_truth: Any, patient_ids: Sequence[str]) -> np.ndarray:
    """(N,) bool ground-truth discordance of ``patient_ids`` from a synthetic cohort's ``ground_truth.json``
    (a path or the loaded dict: its ``cases[].patient_id`` / ``cases[].discordant``)."""
    if not isinstance(ground_truth, Mapping):
        import json
        from pathlib import Path

        ground_truth = json.loads(Path(ground_truth).read_text(encoding="utf-8"))
    by_id = {str(c["patient_id"]): bool(c["discordant"]) for c in ground_truth.get("cases", [])}
    unknown = [p for p in patient_ids if str(p) not in by_id]
    if unknown:
        raise ValueError(f"patient(s) not in ground_truth.json: {unknown[:5]}")
    return np.array([by_id[str(p)] for p in patient_ids], dtype=bool)


__all__ = ["discordant_flags", "modality_agreement", "spatial_colocation", "coherence_from_parts", "case_coherence",
           "coherence_auroc", "DEFAULT_ALPHA", "DEFAULT_TOP_M"]
