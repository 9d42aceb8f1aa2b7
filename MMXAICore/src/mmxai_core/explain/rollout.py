"""Attention rollout over the image transformer blocks (Abnar & Zuidema 2020). Research use only.

Per slice and block l, with A_l the (heads, N, N) self-attention probabilities of the N image tokens:

    Â_l = row_normalise(mean_heads(A_l) + I)          (identity = the residual connection)
    R   = Â_L @ ... @ Â_2 @ Â_1                        (N, N), every row sums to 1

Row i of R says how much each input token (the CNN feature cell before the first block) flows into output
token i. Our model has no class token: a slice's tokens are pooled with learned weights w (the token
pooling, after cross-modal fusion, which mixes no image tokens), so the relevance of input token j is
``r_j = sum_i w_i R_ij`` (sums to 1 over the slice's tokens). For a volume, ``slice_weighted=True``
multiplies each slice's relevance by its slice-pooling weight, so the case's relevance sums to 1 and
slices the model ignores fade out.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from mmxai_core.model.outputs import ModelOutput


def rollout_matrices(self_attentions: Sequence[Tensor]) -> Tensor:
    """Attention rollout of a stack of blocks.

    Args:
        self_attentions: one (..., heads, N, N) tensor per block, first block first (rows sum to 1;
            all-zero rows, as on padded slices, give identity rows).

    Returns:
        (..., N, N) float32 rollout; rows sum to 1.
    """
    if not self_attentions:
        raise ValueError("attention rollout needs at least one transformer block (the model has depth 0)")
    result = None
    for att in self_attentions:
        a = att.detach().float().mean(dim=-3)
        n = a.shape[-1]
        a = a + torch.eye(n, dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    return result


def token_relevance(rollout: Tensor, token_weights: Tensor | None = None) -> Tensor:
    """(..., N) relevance of the input tokens: ``token_weights @ rollout`` (uniform weights if None)."""
    n = rollout.shape[-1]
    if token_weights is None:
        token_weights = rollout.new_full(rollout.shape[:-1], 1.0 / n)
    return (token_weights.float().unsqueeze(-2) @ rollout).squeeze(-2)


def attention_rollout(output: ModelOutput, size: tuple[int, int] | None = None,
                      slice_weighted: bool = True) -> Tensor:
    """Rollout relevance maps of a batch from a forward with ``return_attentions=True``.

    Args:
        output: the model output (``self_attentions``, ``token_weights``, ``slice_weights``,
            ``slice_mask``, ``grid``, ``image_present``).
        size: (H, W) model input size to upsample to (bilinear, per slice); ``None`` keeps (h, w).
        slice_weighted: multiply by the slice-pooling weights (see the module docstring).

    Returns:
        (B, S, H, W) float32 (or (B, S, h, w)): share of the slice's (or, slice-weighted, the case's)
        relevance carried by each token, interpolated; 0 on padded slices and cases without an image.
    """
    from mmxai_core.explain.gradcam import upsample_maps

    if output.self_attentions is None:
        raise ValueError("attention rollout needs the self-attentions: run the model with "
                         "return_attentions=True")
    rollout = rollout_matrices(output.self_attentions)                   # (B, S, N, N)
    weights = None if output.token_weights is None else output.token_weights.detach()
    rel = token_relevance(rollout, weights)                              # (B, S, N)
    b, s, n = rel.shape
    h, w = output.grid
    if h * w != n:
        raise ValueError(f"{n} tokens do not fill the {h}x{w} grid")
    keep = torch.ones(b, s, dtype=torch.bool)
    if output.slice_mask is not None:
        keep = output.slice_mask.detach().cpu().bool()
    keep = keep & output.image_present.detach().cpu().bool()[:, None]
    rel = rel.cpu() * keep[..., None]
    if slice_weighted and output.slice_weights is not None:
        rel = rel * output.slice_weights.detach().float().cpu()[..., None]
    maps = rel.reshape(b, s, h, w)
    return maps if size is None else upsample_maps(maps, size)


__all__ = ["rollout_matrices", "token_relevance", "attention_rollout"]
