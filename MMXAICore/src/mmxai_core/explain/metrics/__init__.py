"""How far to trust an explanation: metrics of explanation quality. Research use, not for diagnosis.

Every metric works on ONE case (the sanity check on a batch of cases), is seeded, batches its
perturbations along the batch axis, and returns a strict-JSON dict (NaN -> None) that names its
parameters (noise, transforms, K, removal baseline, grid, ...):

* :mod:`.ssim` -- SSIM equal to scikit-image's (2D, per-slice or 3D windows), Pearson with a
  constant-input flag: :func:`.ssim.ssim`, :func:`volume_ssim`, :func:`pearson`, :class:`SSIMSettings`.
* :mod:`.stability` -- Grad-CAM++ SSIM under Gaussian noise and rigid transforms (mapped back), Shapley
  Pearson under clinical jitter: :func:`gradcam_stability`, :func:`map_stability`,
  :func:`shapley_stability`.
* :mod:`.faithfulness` -- deletion curves with AOPC against random orders: :func:`image_deletion`,
  :func:`deletion_curve`, :func:`clinical_deletion`, :func:`clinical_deletion_curve`.
* :mod:`.sanity` -- cascading model-parameter randomisation: :func:`sanity_cascade`.
* :mod:`.localisation` -- pointing game, energy in the mask, IoU, with baselines:
  :func:`.localisation.localisation`, :func:`summarise_localisation`.
* :mod:`.coherence` -- cross-modal coherence and its validation: :func:`case_coherence`,
  :func:`coherence_from_parts`, :func:`coherence_auroc`.

Figures: :mod:`mmxai_core.report.xai_plots`. Names load their module on first use (nothing heavy here).
``ssim`` and ``localisation`` are both a submodule and a function: import those two functions from their
modules (``from mmxai_core.explain.metrics.ssim import ssim``).
"""

from __future__ import annotations

from mmxai_core.utils.lazy import lazy_exports

_LAZY = {
    "SSIMSettings": "ssim",
    "ssim_map": "ssim",
    "volume_ssim": "ssim",
    "pearson": "ssim",
    "RigidTransform": "stability",
    "warp": "stability",
    "unwarp": "stability",
    "map_stability": "stability",
    "gradcam_stability": "stability",
    "shapley_stability": "stability",
    "shapley_stability_of_rows": "stability",
    "deletion_curve": "faithfulness",
    "image_deletion": "faithfulness",
    "clinical_deletion": "faithfulness",
    "clinical_deletion_curve": "faithfulness",
    "randomisation_stages": "sanity",
    "sanity_cascade": "sanity",
    "summarise_localisation": "localisation",
    "modality_agreement": "coherence",
    "coherence_from_parts": "coherence",
    "case_coherence": "coherence",
    "coherence_auroc": "coherence",
    "discordant_flags": "coherence",
    "jsonable": "_common",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
