"""Model configuration: one frozen dataclass, JSON round trip, size presets.

The configuration is everything needed to rebuild the architecture (it is stored in every checkpoint's
``metadata.json``); it holds no weights, no paths and no data. The clinical fields come from
``ClinicalPreprocessor.model_fields()``: ``(name, kind, cardinality)`` with kind ``numeric`` or
``categorical`` (ordinal and boolean are categorical for the model).

Presets (``model_config(preset, **overrides)``):

* ``tiny``: trains on 2 CPU cores in minutes at 96-128 px. timm ``resnet10t`` cut after stage 2
  (stride 8, 128 channels: a 12x12 token grid at 96 px, 16x16 at 128 px), D=64, 2 transformer blocks,
  4 heads. (Cut after stage 3, stride 16, a synthetic lesion of 6-20 px covered about one cell of the 6x6
  grid at 96 px, and the heatmaps could not point at it.)
* ``base``: for a GPU at 224-256 px. timm ``resnet34`` cut after stage 3 (stride 16, 256 channels),
  D=256, 4 blocks, 8 heads. Cutting at stride 16 and letting a transformer model the global context is
  the classic hybrid CNN-ViT layout (ResNet stages up to stride 16, then ViT blocks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

CLINICAL_KINDS = ("numeric", "categorical")
TOKEN_POOLS = ("mean", "attention")


@dataclass(frozen=True)
class ClinicalField:
    """One clinical input of the model: ``kind`` ``numeric`` (a scaled float) or ``categorical``
    (an integer code ``0..cardinality-1`` stored as a float). ``cardinality`` is ignored for numeric."""

    name: str
    kind: str
    cardinality: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"clinical field name must be a non-empty string, got {self.name!r}")
        if self.kind not in CLINICAL_KINDS:
            raise ValueError(f"clinical field '{self.name}': kind must be one of {CLINICAL_KINDS}, "
                             f"got {self.kind!r}")
        if isinstance(self.cardinality, bool) or not isinstance(self.cardinality, int):
            raise ValueError(f"clinical field '{self.name}': cardinality must be an integer, "
                             f"got {self.cardinality!r}")
        if self.kind == "categorical" and self.cardinality < 1:
            raise ValueError(f"clinical field '{self.name}': a categorical field needs cardinality >= 1, "
                             f"got {self.cardinality}")

    @classmethod
    def coerce(cls, item: Any) -> "ClinicalField":
        """Accept a ClinicalField, a ``(name, kind, cardinality)`` sequence or a dict with those keys."""
        if isinstance(item, ClinicalField):
            return item
        if isinstance(item, Mapping):
            unknown = set(item) - {"name", "kind", "cardinality"}
            if unknown:
                raise ValueError(f"clinical field {dict(item)!r}: unknown key(s) {sorted(unknown)}")
            return cls(item.get("name"), item.get("kind"), item.get("cardinality", 0))
        if isinstance(item, (list, tuple)) and len(item) in (2, 3):
            return cls(*item)
        raise ValueError(f"clinical field must be (name, kind, cardinality) or a dict, got {item!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a multimodal classifier (see the module docstring for the presets).

    Image encoder: ``trunk`` (timm model name, created with ``features_only=True, in_chans=1,
    pretrained=False``), cut at feature stage ``trunk_out_index`` (timm index: 0 = stem, ..., 4 = last stage
    of a ResNet; -1 = last); its feature map is projected to ``embed_dim`` tokens with fixed 2D sin-cos
    positions, then ``depth`` pre-norm transformer blocks with ``num_heads`` heads. ``image_size`` is the
    recommended (trained) input size in pixels; the model itself accepts any size.

    Fusion: ``fusion_heads`` heads of cross-modal attention (image tokens query clinical tokens); with
    ``reverse_fusion`` also clinical field tokens query the image tokens of each slice
    (:mod:`.reverse_fusion`) and the mean of those per-field outputs joins the slice embedding.
    ``final_norm``: LayerNorm on the image tokens after the transformer blocks (see :mod:`.image_encoder`
    for why the presets leave it out); ``head_norm``: LayerNorm at the classifier head's input (same reason,
    :mod:`.heads`); ``fusion_ffn``: a feed-forward layer after the cross-modal attention (not in the paper's
    Eq. 4; :mod:`.fusion`).
    Pooling: ``token_pool`` ``mean`` or ``attention`` over the tokens of a slice; gated attention (MIL) over
    slices with ``mil_hidden`` hidden units. ``slice_chunk`` slices go through the image encoder at once.

    ``neutral_unknown``: a field's "unknown" embedding is a learned offset from the field's neutral token
    (:mod:`.clinical_encoder`) instead of a free vector.

    Missing data trained on purpose: ``clinical_mask_rate`` (per-field probability of masking a known
    clinical value during training) and ``image_dropout_rate`` (per-case probability of dropping the image).
    """

    variant: str = "attention"
    num_classes: int = 2
    clinical_fields: tuple[ClinicalField, ...] = ()
    trunk: str = "resnet10t"
    trunk_out_index: int = 3
    image_size: int = 128
    embed_dim: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    fusion_heads: int = 4
    token_pool: str = "attention"
    reverse_fusion: bool = False
    final_norm: bool = True
    head_norm: bool = True
    fusion_ffn: bool = True
    neutral_unknown: bool = False
    mil_hidden: int = 64
    slice_chunk: int = 16
    clinical_mask_rate: float = 0.15
    image_dropout_rate: float = 0.1

    def __post_init__(self) -> None:
        fields = tuple(ClinicalField.coerce(f) for f in (self.clinical_fields or ()))
        object.__setattr__(self, "clinical_fields", fields)
        names = [f.name for f in fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate clinical field name(s): {dupes}")
        for name in ("num_classes", "trunk_out_index", "image_size", "embed_dim", "depth", "num_heads",
                     "fusion_heads", "mil_hidden", "slice_chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"model config '{name}' must be an integer, got {value!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (binary = 2 classes), got {self.num_classes}")
        for name in ("image_size", "embed_dim", "num_heads", "fusion_heads", "mil_hidden", "slice_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"model config '{name}' must be >= 1, got {getattr(self, name)}")
        if self.depth < 0:
            raise ValueError(f"depth must be >= 0, got {self.depth}")
        for heads_name in ("num_heads", "fusion_heads"):
            if self.embed_dim % getattr(self, heads_name):
                raise ValueError(f"embed_dim {self.embed_dim} is not divisible by {heads_name} "
                                 f"{getattr(self, heads_name)}")
        for name in ("reverse_fusion", "final_norm", "head_norm", "fusion_ffn", "neutral_unknown"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"model config '{name}' must be true or false, got {getattr(self, name)!r}")
        if self.token_pool not in TOKEN_POOLS:
            raise ValueError(f"token_pool must be one of {TOKEN_POOLS}, got {self.token_pool!r}")
        if not isinstance(self.variant, str) or not self.variant:
            raise ValueError(f"variant must be a non-empty string, got {self.variant!r}")
        if not isinstance(self.trunk, str) or not self.trunk:
            raise ValueError(f"trunk must be a timm model name, got {self.trunk!r}")
        for name in ("mlp_ratio", "dropout", "clinical_mask_rate", "image_dropout_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"model config '{name}' must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        for name in ("dropout", "clinical_mask_rate", "image_dropout_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"model config '{name}' must be in [0, 1), got {getattr(self, name)}")

    @property
    def num_fields(self) -> int:
        return len(self.clinical_fields)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (clinical fields as ``{"name", "kind", "cardinality"}`` dicts)."""
        out = dataclasses.asdict(self)
        out["clinical_fields"] = [dataclasses.asdict(f) for f in self.clinical_fields]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a config from a newer version)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config key(s): {sorted(unknown)}")
        return cls(**dict(data))


#: What both presets share so that Grad-CAM++ can read the decision through the image tokens (mean token
#: pooling, no LayerNorm between the CNN features and the logits: :mod:`.image_encoder`, :mod:`.heads`), the
#: clinical evidence reaches the head additively (:mod:`.reverse_fusion`) and the fusion is the paper's
#: Eq. 4 (attention + residual, no feed-forward layer: :mod:`.fusion`). README, "Method choices".
_EXPLAINABLE: dict[str, Any] = dict(token_pool="mean", reverse_fusion=True, final_norm=False, head_norm=False,
                                    fusion_ffn=False)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(trunk="resnet10t", trunk_out_index=2, image_size=128, embed_dim=64, depth=2, num_heads=4,
                 mlp_ratio=2.0, fusion_heads=4, mil_hidden=64, slice_chunk=16, dropout=0.1, **_EXPLAINABLE),
    "base": dict(trunk="resnet34", trunk_out_index=3, image_size=256, embed_dim=256, depth=4, num_heads=8,
                 mlp_ratio=4.0, fusion_heads=8, mil_hidden=128, slice_chunk=32, dropout=0.1, **_EXPLAINABLE),
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def model_config(preset: str = "tiny", clinical_fields: Iterable[Any] = (), **overrides: Any) -> ModelConfig:
    """A preset's config with ``clinical_fields`` (e.g. ``preprocessor.model_fields()``) and overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; known: {list_presets()}")
    values = {**PRESETS[preset], **overrides, "clinical_fields": tuple(clinical_fields)}
    return ModelConfig(**values)


__all__ = ["ClinicalField", "ModelConfig", "PRESETS", "list_presets", "model_config", "CLINICAL_KINDS",
           "TOKEN_POOLS"]
