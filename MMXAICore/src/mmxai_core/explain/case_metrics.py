"""Explanation-quality figures of one explained case, for ``result.json``. Research use only - not for
diagnosis.

The metrics themselves live in :mod:`mmxai_core.explain.metrics` (imported lazily, module by module: an
installation without them still explains cases). This module only hands them the parts of the case the
pipeline already computed (:class:`ExplainedCase`) and puts their answers into the result's shape: a few
headline numbers at the top of each entry (what the Slicer panel lists) and the metric's full dict, with
every parameter, under ``details``.

========== ============================================================ =====================================
name       computed by (``mmxai_core.explain.metrics``)                 headline numbers
========== ============================================================ =====================================
coherence  ``coherence.case_coherence`` (split and Shapley values given) ``score`` (+ ``definition``)
stability  ``stability.gradcam_stability``, ``stability.shapley_stability`` ``gradcam_ssim_noise``,
                                                                        ``gradcam_ssim_rigid``,
                                                                        ``shapley_pearson``
faithful-  ``faithfulness.image_deletion`` (the case's Grad-CAM++ map),  ``image_aopc``, ``image_aopc_random``,
ness       ``faithfulness.clinical_deletion`` (the case's Shapley      ``clinical_aopc``,
           values)                                                      ``clinical_aopc_random``
sanity     ``sanity.sanity_cascade``                                    ``ssim_headline``, ``ssim_final``
========== ============================================================ =====================================

Coherence is always attempted (it is cheap); the others only when asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from mmxai_core.errors import MMXAIError
from mmxai_core.utils.mapping import nested_get as _get

METRICS_PACKAGE = "mmxai_core.explain.metrics"
#: Quality metrics ``--metrics`` may ask for.
METRIC_NAMES = ("stability", "faithfulness", "sanity")


@dataclasses.dataclass
class ExplainedCase:
    """Everything about one explained case that a quality metric may need (model space unless named).

    model (eval mode, on ``device``); images (1, Z, 1, H, W) float32 tensor; slice_mask (1, Z) bool;
    clin_values (1, F) float32 / clin_missing (1, F) bool tensors; target (explained class index);
    classes; image (the input :class:`~mmxai_core.io.Image`, patient grid); record (PreprocessRecord);
    explanation (:class:`~mmxai_core.explain.ImageExplanation`: heatmap_model (Z, H, W) in [0, 1],
    heatmap_raw_model, rollout_model, crossmodal_model {field: (Z, H, W)}, clinical_attention,
    normalisation); shapley (:class:`~mmxai_core.explain.ShapleyResult`); modality
    (:class:`~mmxai_core.explain.ModalitySplit`); value_function (its CoalitionValue: image encoded);
    clinical (fitted ClinicalPreprocessor); entered ({field: parsed value or None}); cam_scale (or None)
    and normalise (``model`` | ``case``); seed.
    """

    model: Any
    device: Any
    images: Any
    slice_mask: Any
    clin_values: Any
    clin_missing: Any
    target: int
    classes: list[str]
    image: Any
    record: Any
    explanation: Any
    shapley: Any
    modality: Any
    value_function: Any
    clinical: Any
    entered: dict[str, Any]
    cam_scale: float | None
    normalise: str
    seed: int = 0


MetricFn = Callable[[ExplainedCase], dict]


def _module(name: str) -> Any | None:
    """``mmxai_core.explain.metrics.<name>``, or None when it is not installed (a module that exists but
    fails to import is a bug and raises)."""
    module_name = f"{METRICS_PACKAGE}.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            return None
        raise




# ------------------------------------------------------------------------------------------ adapters
def _coherence(mod: Any, case: ExplainedCase) -> dict:
    # The token-level Grad-CAM++ result (CamResult) is reused when the image explanation carries one;
    # otherwise case_coherence computes it again (one more forward + backward pass).
    out = mod.case_coherence(case.model, case.images, case.clin_values, case.clin_missing,
                             slice_mask=case.slice_mask, target=case.target, split=case.modality,
                             shapley=case.shapley, cam=getattr(case.explanation, "cam", None))
    definition = _get(out, "parameters", "definition")
    direction = _get(out, "parameters", "direction")
    return {"score": out.get("coherence"),
            "definition": f"{definition} ({direction})" if definition and direction else definition,
            "components": out.get("components"), "details": out}


def _stability(mod: Any, case: ExplainedCase) -> dict:
    image = mod.gradcam_stability(case.model, case.images, case.clin_values, case.clin_missing,
                                  slice_mask=case.slice_mask, target_class=case.target, normalise=case.normalise,
                                  cam_scale=case.cam_scale, seed=case.seed)
    clinical = mod.shapley_stability(case.model, case.images, case.clin_values, case.clin_missing,
                                     slice_mask=case.slice_mask, target=case.target, seed=case.seed)
    return {"gradcam_ssim_noise": _get(image, "noise", "mean"), "gradcam_ssim_rigid": _get(image, "rigid", "mean"),
            "shapley_pearson": _get(clinical, "pearson", "mean"),
            "details": {"gradcam": image, "shapley": clinical}}


def _faithfulness(mod: Any, case: ExplainedCase) -> dict:
    image = mod.image_deletion(case.model, case.images, case.clin_values, case.clin_missing,
                               attribution=case.explanation.heatmap_raw_model, slice_mask=case.slice_mask,
                               target_class=case.target, seed=case.seed)
    out = {"image_aopc": _get(image, "attributed", "aopc"), "image_aopc_random": _get(image, "random", "aopc", "mean"),
           "clinical_aopc": None, "clinical_aopc_random": None, "details": {"image": image}}
    if bool(case.shapley.known.any()):
        clinical = mod.clinical_deletion(case.model, case.images, case.clin_values, case.clin_missing,
                                         shapley=case.shapley, slice_mask=case.slice_mask, seed=case.seed)
        out["clinical_aopc"] = _get(clinical, "attributed", "aopc")
        out["clinical_aopc_random"] = _get(clinical, "random", "aopc", "mean")
        out["details"]["clinical"] = clinical
    else:
        out["details"]["clinical"] = {"skipped": "no clinical field was entered: nothing to delete"}
    return out


def _sanity(mod: Any, case: ExplainedCase) -> dict:
    out = mod.sanity_cascade(case.model, case.images, case.clin_values, case.clin_missing,
                             slice_mask=case.slice_mask, target_class=case.target, seed=case.seed)
    return {"ssim_headline": _get(out, "headline", "ssim_mean"), "headline_stage": _get(out, "headline", "stage"),
            "ssim_final": _get(out, "final", "ssim_mean"), "details": out}


_ADAPTERS: dict[str, Callable[[Any, ExplainedCase], dict]] = {
    "coherence": _coherence, "stability": _stability, "faithfulness": _faithfulness, "sanity": _sanity}


def metric_function(name: str) -> MetricFn | None:
    """The case -> dict function of metric ``name`` (``coherence`` or one of :data:`METRIC_NAMES`), or None
    when its module in :mod:`mmxai_core.explain.metrics` is not installed."""
    adapter = _ADAPTERS[name]
    mod = _module(name)
    if mod is None:
        return None
    return lambda case: adapter(mod, case)


def check_metrics_available(names: Sequence[str]) -> dict[str, MetricFn]:
    """The metric functions of ``names``; raises MMXAIError naming each one that is not installed."""
    found, absent = {}, []
    for name in names:
        if name not in METRIC_NAMES:
            raise MMXAIError(f"--metrics: unknown metric '{name}'; choose from {', '.join(METRIC_NAMES)}")
        fn = metric_function(name)
        if fn is None:
            absent.append(name)
        else:
            found[name] = fn
    if absent:
        raise MMXAIError(f"--metrics: {', '.join(absent)} not available in this installation "
                         f"({', '.join(f'{METRICS_PACKAGE}.{n}' for n in absent)} missing); run without "
                         "--metrics")
    return found


__all__ = ["METRICS_PACKAGE", "METRIC_NAMES", "ExplainedCase", "check_metrics_available", "metric_function"]
