"""Transformer building blocks that show their attention.

``nn.TransformerEncoderLayer`` and ``F.scaled_dot_product_attention`` hide the attention probabilities;
attention rollout and the cross-modal explanation need them, so the attention here is written out:
``softmax(Q K^T / sqrt(d_head)) V`` per head, always returning the probabilities. Every sample attends
only within itself (the batch axis is never mixed).
"""

from __future__ import annotations

import torch
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

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        context = x if context is None else context
        q, k, v = self._split(self.q(x)), self._split(self.k(context)), self._split(self.v(context))
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

    ``x`` (B, N, D) -> ``(x (B, N, D), attention probabilities (B, heads, N, N))``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, attn_drop=drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, max(1, int(round(dim * mlp_ratio))), drop)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, probs = self.attn(self.norm1(x))
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return x, probs
