"""Transformer building blocks that show their attention.

``nn.TransformerEncoderLayer`` and ``F.scaled_dot_product_attention`` hide the attention probabilities;
attention rollout and the cross-modal explanation need them, so the attention here is written out:
``softmax(Q K^T / sqrt(d_head)) V`` per head, returning the probabilities. Every sample attends only
within itself (the batch axis is never mixed).

In eval mode, when the caller does not need the probabilities (``need_weights=False``: prediction,
Grad-CAM++, Shapley values), the same attention runs through ``F.scaled_dot_product_attention``, whose fused CPU/GPU
kernels never store the (N, N) matrix: at 1,024 tokens per slice (256 px, stride 8) it is about 6x faster
forward and 3.7x faster forward + backward on one CPU thread than the written-out form, and the graph of a
slice no longer holds four N x N matrices per block (BENCHMARKS.md, section 2). Both forms agree to float
rounding (tested to 1e-5). Training keeps the written-out form (dropout acts on the probabilities, and a
seeded run stays bit-identical to the one that made the shipped demo model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def init_linear(module: nn.Module) -> None:
    """ViT-style init: truncated normal (std 0.02) weights, zero bias, for every Linear below ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention of queries ``x`` over keys/values ``context``.

    ``x`` (B, N, D), ``context`` (B, M, D) (``None``: self-attention, context = x).
    Returns ``(out (B, N, D), probs (B, heads, N, M))``; ``probs`` sum to 1 over M (before dropout).
    With ``need_weights=False`` in eval mode the fused kernel runs and ``probs`` is None (module docstring).
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def _split(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, n, dh)

    def forward(self, x: Tensor, context: Tensor | None = None, need_weights: bool = True
                ) -> tuple[Tensor, Tensor | None]:
        context = x if context is None else context
        q, k, v = self._split(self.q(x)), self._split(self.k(context)), self._split(self.v(context))
        if not need_weights and not self.training:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)                   # (B, h, N, dh)
            out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
            return self.proj_drop(self.proj(out)), None
        probs = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)  # (B, h, N, M)
        out = self.attn_drop(probs) @ v                                           # (B, h, N, dh)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.proj_drop(self.proj(out)), probs


class Mlp(nn.Module):
    """Token-wise two-layer MLP: (..., D) -> (..., D) with a GELU hidden layer of ``hidden`` units."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Pre-norm transformer encoder block: x + MHSA(LN(x)), then x + MLP(LN(x)).

    ``x`` (B, N, D) -> ``(x (B, N, D), attention probabilities (B, heads, N, N) or None when
    need_weights=False)``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, attn_drop=drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, max(1, int(round(dim * mlp_ratio))), drop)

    def forward(self, x: Tensor, need_weights: bool = True) -> tuple[Tensor, Tensor | None]:
        a, probs = self.attn(self.norm1(x), need_weights=need_weights)
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return x, probs
