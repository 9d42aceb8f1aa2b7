"""Hybrid CNN-Transformer image encoder (the paper's f_I, Eq. 1): one 2D slice -> image tokens.

    x (B, 1, H, W) --timm trunk--> fmap (B, C, h, w) --cam_layer (Identity)--> 1x1 conv to D
    --> tokens (B, N = h*w, D) + 2D sin-cos positions --> depth x TransformerBlock --> LayerNorm (optional)

``final_norm=False`` leaves the residual stream un-normalised: a token's size then still grows with the
CNN activations under it. Gradient x activation explanations (Grad-CAM, Grad-CAM++) need that: with a
LayerNorm on every token the class score is nearly invariant to scaling the features at one position, so
the gradient there is nearly orthogonal to the activations and the maps avoid the strongest features (on
the synthetic cohort the Grad-CAM++ maximum fell inside the lesion in 2 % of the cases where the plain
activation map's fell inside in 47-76 %; README, "Method choices"). The classifier head normalises the
pooled vector, so training stays stable.

``cam_layer`` is the Grad-CAM++ target (``model.image_encoder.cam_layer``): an ``nn.Identity`` on the last
CNN feature map, read (never modified in place) by the projection. Tokens are in row-major order of the
(h, w) grid, so ``tokens.transpose(1, 2).reshape(B, D, h, w)`` restores the grid.

Positions are fixed 2D sin-cos embeddings of the token's centre measured on a reference grid of
``POS_REFERENCE_GRID`` cells per side, whatever the input size: a grid of any size gets positions at once
(no interpolation of learned tables) and the same anatomical place keeps the same position code.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from mmxai_core.model.blocks import TransformerBlock, init_linear
from mmxai_core.model.trunk import create_trunk, load_trunk_weights

POS_REFERENCE_GRID = 16.0


def sincos_2d(h: int, w: int, dim: int, device=None, dtype=torch.float32) -> Tensor:
    """Fixed 2D sin-cos position embeddings (h*w, dim), row-major; dim must be a multiple of 4.

    Half the channels encode the row, half the column; each half is ``[sin(p*f_k), cos(p*f_k)]`` with
    frequencies ``f_k = 10000^(-k/(dim/4))`` and ``p`` the cell centre in reference-grid units.
    """
    if dim % 4:
        raise ValueError(f"sin-cos positions need embed_dim divisible by 4, got {dim}")
    quarter = dim // 4
    freqs = 1.0 / (10000.0 ** (torch.arange(quarter, device=device, dtype=torch.float64) / quarter))
    ys = (torch.arange(h, device=device, dtype=torch.float64) + 0.5) * (POS_REFERENCE_GRID / h)
    xs = (torch.arange(w, device=device, dtype=torch.float64) + 0.5) * (POS_REFERENCE_GRID / w)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    ang_y = yy.reshape(-1, 1) * freqs
    ang_x = xx.reshape(-1, 1) * freqs
    pos = torch.cat([ang_y.sin(), ang_y.cos(), ang_x.sin(), ang_x.cos()], dim=1)
    return pos.to(dtype)


class ImageEncoder(nn.Module):
    """(B, 1, H, W) -> tokens (B, N, D); see the module docstring.

    ``forward(x, return_attention=False) -> (tokens (B, N, D), grid (h, w), attentions)`` where
    ``attentions`` is ``None`` or a list (one per block) of (B, heads, N, N) self-attention probabilities.
    """

    def __init__(self, trunk: str, out_index: int, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 2.0, drop: float = 0.0, trunk_weights: str | os.PathLike | None = None,
                 final_norm: bool = True):
        super().__init__()
        if dim % 4:
            raise ValueError(f"embed_dim must be divisible by 4 (2D sin-cos positions), got {dim}")
        self.trunk = create_trunk(trunk, out_index)
        if trunk_weights is not None:
            load_trunk_weights(self.trunk, trunk_weights)
        channels = self.trunk.feature_info.channels()[-1]
        self.stride = int(self.trunk.feature_info.reduction()[-1])
        self.cam_layer = nn.Identity()
        self.proj = nn.Conv2d(channels, dim, kernel_size=1)
        self.pos_drop = nn.Dropout(drop)
        self.blocks = nn.ModuleList([TransformerBlock(dim, num_heads, mlp_ratio, drop) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim) if final_norm else nn.Identity()
        self.dim = dim
        init_linear(self.blocks)

    def forward(self, x: Tensor, return_attention: bool = False
                ) -> tuple[Tensor, tuple[int, int], list[Tensor] | None]:
        fmap = self.cam_layer(self.trunk(x)[-1])        # (B, C, h, w)
        return self.tokens_from_features(fmap, return_attention)

    def tokens_from_features(self, fmap: Tensor, return_attention: bool = False
                             ) -> tuple[Tensor, tuple[int, int], list[Tensor] | None]:
        """The encoder above the Grad-CAM++ layer: CNN feature map (B, C, h, w) -> the same triple as
        :meth:`forward` (the chunked Grad-CAM++ differentiates this part alone, from stored features)."""
        h, w = fmap.shape[-2:]
        tokens = self.proj(fmap).flatten(2).transpose(1, 2)  # (B, N, D)
        tokens = self.pos_drop(tokens + sincos_2d(h, w, self.dim, tokens.device, tokens.dtype))
        attentions: list[Tensor] | None = [] if return_attention else None
        for block in self.blocks:
            tokens, probs = block(tokens, need_weights=return_attention)
            if attentions is not None:
                attentions.append(probs)
        return self.norm(tokens), (int(h), int(w)), attentions


def check_grid(stride: int, height: int, width: int) -> None:
    """Raise if an input is too small to leave at least one feature-map cell."""
    if height < stride or width < stride:
        raise ValueError(f"image {height}x{width} is smaller than the trunk's stride {stride}")


__all__ = ["ImageEncoder", "sincos_2d", "check_grid", "POS_REFERENCE_GRID"]
