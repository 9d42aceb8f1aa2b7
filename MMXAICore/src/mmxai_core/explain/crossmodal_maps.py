"""Cross-modal attention maps: for each clinical field, where on the image it is attended to.

The fusion (the paper's Eq. 3-4) lets every image token of every slice attend over the F clinical field
tokens; ``ModelOutput.cross_attention`` is (B, S, heads, N, F). Per field f the map is the attention weight
of f at each token, averaged over heads, on the (h, w) token grid of each slice, upsampled bilinearly to
(H, W). Values are attention weights in [0, 1]; at every pixel the F maps sum to 1 (softmax over fields,
averaged, convexly interpolated), so 1/F means "no preference". Research use, not for diagnosis.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from mmxai_core.model.outputs import ModelOutput


def crossmodal_maps(output: ModelOutput, field_names: Sequence[str], case: int = 0,
                    size: tuple[int, int] | None = None) -> dict[str, Tensor]:
    """Per-field attention maps of one case.

    Args:
        output: model output of the ``attention`` variant.
        field_names: the F clinical field names in model order (``[f.name for f in
            model.config.clinical_fields]``).
        case: index of the case in the batch.
        size: (H, W) to upsample to; ``None`` keeps the token grid (h, w).

    Returns:
        ``{field name: (S, H, W) float32}`` in field order; zeros on padded slices and for a case
        without an image (the missing-image token has no position).
    """
    from mmxai_core.explain.gradcam import upsample_maps

    if output.cross_attention is None:
        raise ValueError("this model has no cross-modal attention (only the 'attention' variant has)")
    cross = output.cross_attention.detach().float().cpu()[case]          # (S, heads, N, F)
    s, _, n, f = cross.shape
    names = list(field_names)
    if len(names) != f:
        raise ValueError(f"{len(names)} field names for {f} clinical fields")
    h, w = output.grid
    if h * w != n:
        raise ValueError(f"{n} tokens do not fill the {h}x{w} grid")
    per_field = cross.mean(dim=1).permute(2, 0, 1).reshape(f, s, h, w)  # (F, S, h, w)
    keep = torch.ones(s, dtype=torch.bool)
    if output.slice_mask is not None:
        keep = output.slice_mask.detach().cpu().bool()[case].clone()
    if not bool(output.image_present.detach().cpu()[case]):
        keep[:] = False
    per_field = per_field * keep[None, :, None, None]
    if size is not None:
        per_field = upsample_maps(per_field, size)
    return {name: per_field[i] for i, name in enumerate(names)}


__all__ = ["crossmodal_maps"]
