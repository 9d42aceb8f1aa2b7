"""The multimodal model (research use, not for diagnosis) and its checkpoint I/O.

    from mmxai_core.model import model_config, create_model, save_checkpoint, load_checkpoint

    config = model_config("tiny", clinical_fields=preprocessor.model_fields(), num_classes=2)
    model = create_model(config, seed=0)
    out = model(images, slice_mask, image_present, clin_values, clin_missing)   # ModelOutput
    out.probs, out.slice_weights, out.cross_attention, out.clinical_attention

Modules, one job each: ``config`` (ModelConfig, presets), ``blocks`` (attention that shows its weights),
``trunk`` (timm CNN trunk, local weights), ``image_encoder`` (CNN + transformer -> tokens),
``clinical_encoder`` (one token per field, "unknown" embeddings), ``fusion`` (cross-modal attention,
Eq. 3-4), ``pooling`` (token pooling, gated-attention MIL over slices), ``heads`` (Eq. 5), ``multimodal``
(the classifier), ``variants`` (ablation registry, ``create_model``), ``missingness`` (training-time
masking), ``optim`` (AdamW groups; Eq. 6), ``outputs`` (ModelOutput, ImageEncoding), ``checkpoint``.
"""

from mmxai_core.model.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from mmxai_core.model.config import PRESETS, ClinicalField, ModelConfig, list_presets, model_config
from mmxai_core.model.missingness import apply_missingness
from mmxai_core.model.multimodal import MultimodalClassifier
from mmxai_core.model.optim import parameter_groups
from mmxai_core.model.outputs import ImageEncoding, ModelOutput
from mmxai_core.model.variants import create_model, list_variants, register_variant

GRADCAM_TARGET_LAYER = "image_encoder.cam_layer"

__all__ = [
    "ClinicalField", "ModelConfig", "PRESETS", "list_presets", "model_config",
    "MultimodalClassifier", "ModelOutput", "ImageEncoding", "create_model", "list_variants",
    "register_variant", "apply_missingness", "parameter_groups", "save_checkpoint", "load_checkpoint",
    "FORMAT_VERSION", "GRADCAM_TARGET_LAYER",
]
