"""Variants for the ablation and ``create_model`` over a small registry (timm style).

| variant         | image branch | clinical branch | how they meet                                            |
|-----------------|--------------|-----------------|----------------------------------------------------------|
| ``attention``   | yes          | tokens          | cross-modal attention per slice (Eq. 3-4), the full model |
| ``concat``      | yes          | tokens -> MLP   | pooled image vector ++ clinical summary vector -> head   |
| ``image_only``  | yes          | no              | pooled image vector -> head                               |
| ``clinical_only``| no          | tokens -> MLP   | clinical summary vector -> head                           |

All variants share the same encoders, pooling and head classes, so a comparison isolates the fusion.
"""

from __future__ import annotations

import os
from typing import Callable

import torch

from mmxai_core.model.config import ModelConfig
from mmxai_core.model.multimodal import MultimodalClassifier

_REGISTRY: dict[str, type[MultimodalClassifier]] = {}


def register_variant(name: str) -> Callable[[type[MultimodalClassifier]], type[MultimodalClassifier]]:
    """Class decorator: register a :class:`MultimodalClassifier` subclass under ``name``."""
    def wrap(cls: type[MultimodalClassifier]) -> type[MultimodalClassifier]:
        if name in _REGISTRY:
            raise ValueError(f"model variant {name!r} is already registered")
        cls.variant = name
        _REGISTRY[name] = cls
        return cls
    return wrap


def list_variants() -> list[str]:
    return sorted(_REGISTRY)


@register_variant("attention")
class CrossAttentionClassifier(MultimodalClassifier):
    """Image tokens attend to clinical field tokens on every slice (the paper's model)."""
    fusion_kind = "cross_attention"


@register_variant("concat")
class ConcatClassifier(MultimodalClassifier):
    """Late fusion baseline: [pooled image vector, clinical summary vector] -> head."""
    fusion_kind = "concat"


@register_variant("image_only")
class ImageOnlyClassifier(MultimodalClassifier):
    """Images alone (clinical inputs are ignored)."""
    uses_clinical = False


@register_variant("clinical_only")
class ClinicalOnlyClassifier(MultimodalClassifier):
    """Clinical fields alone (images are ignored)."""
    uses_image = False


def create_model(config: ModelConfig, *, trunk_weights: str | os.PathLike | None = None,
                 seed: int | None = None) -> MultimodalClassifier:
    """Build the variant named by ``config.variant`` (in train mode, on the CPU).

    ``trunk_weights``: optional local file to start the CNN trunk from (never a download).
    ``seed``: initialise from ``torch.manual_seed(seed)`` without disturbing the global RNG state; the
    same seed gives the same initial weights.
    """
    if config.variant not in _REGISTRY:
        raise ValueError(f"unknown model variant {config.variant!r}; known: {list_variants()}")
    cls = _REGISTRY[config.variant]
    if seed is None:
        return cls(config, trunk_weights=trunk_weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config, trunk_weights=trunk_weights)
