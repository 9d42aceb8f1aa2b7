"""Explanations of the multimodal model. Research use, not for diagnosis.

Image explanations (model space -> patient grid):

* :mod:`.gradcam` -- Grad-CAM++ on the CNN feature map, for 2D images and volumes (per-slice maps with the
  gradient of the case score through slice pooling, chunked), fixed per-model normalisation scale.
* :mod:`.rollout` -- attention rollout over the image transformer blocks.
* :mod:`.crossmodal_maps` -- where on the image each clinical field is attended to.
* :mod:`.binning` -- continuous heatmap -> integer label bins + colour table.
* :mod:`.to_patient` -- maps back onto the patient's grid, files, and :func:`explain_image`.

Clinical explanations (a removed field is "unknown", the image is encoded once):

* :mod:`.value_function` -- v(coalition) through the clinical branch, fusion and head only.
* :mod:`.shapley` -- exact Shapley values (up to ``EXACT_MAX_FIELDS``), vectorised over coalitions.
* :mod:`.shapley_sampling` -- antithetic permutation estimate with standard errors beyond the cutoff.
* :mod:`.modality` -- two-player split of the prediction between image and clinical data.
* :mod:`.interventional` -- optional interventional SHAP over background rows (shap library).

Nothing heavy is imported here: the names below load their module on first use, so colleagues can add
modules to this package (Shapley values, metrics) without import cost or clashes.
"""

from __future__ import annotations

from mmxai_core.utils.lazy import lazy_exports

_LAZY = {
    "ClinicalBoundModel": "gradcam",
    "GradCAMPlusPlusExplainer": "gradcam",
    "CamResult": "gradcam",
    "gradcam_plus_plus": "gradcam",
    "calibrate_cam_scale": "gradcam",
    "cam_scale_from_metadata": "gradcam",
    "gradcampp_weights": "gradcam",
    "tokens_to_grid": "gradcam",
    "normalise_maps": "gradcam",
    "upsample_maps": "gradcam",
    "attention_rollout": "rollout",
    "rollout_matrices": "rollout",
    "token_relevance": "rollout",
    "crossmodal_maps": "crossmodal_maps",
    "HeatmapBins": "binning",
    "bin_heatmap": "binning",
    "write_bins_json": "binning",
    "ImageExplanation": "to_patient",
    "explain_image": "to_patient",
    "map_to_patient": "to_patient",
    "heatmap_to_patient": "to_patient",
    "write_heatmap_files": "to_patient",
    "clinical_shapley": "shapley",
    "shapley_of_game": "shapley",
    "ShapleyResult": "shapley",
    "EXACT_MAX_FIELDS": "shapley",
    "exact_shapley": "shapley",
    "permutation_shapley": "shapley_sampling",
    "CoalitionValue": "value_function",
    "modality_split": "modality",
    "ModalitySplit": "modality",
    "interventional_shapley": "interventional",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
