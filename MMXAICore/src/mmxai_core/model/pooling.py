"""Pooling: over the tokens of one slice, and over the slices of one case (multiple-instance learning).

* :class:`TokenPool` (B, N, D) -> (B, D) and weights (B, N): ``mean`` (uniform weights) or ``attention``
  (a learned score per token, softmax over the tokens of the sample).
* :class:`GatedAttentionPool` (Ilse, Tomczak & Welling 2018, "Attention-based deep multiple instance
  learning"): score_s = w^T (tanh(V x_s) * sigmoid(U x_s)); weights = softmax over the case's real slices
  (``mask`` False = padding, weight exactly 0); pooled = sum_s weight_s x_s.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmxai_core.model.blocks import init_linear


class TokenPool(nn.Module):
    """``forward(tokens (B, N, D)) -> (pooled (B, D), weights (B, N))``."""

    def __init__(self, dim: int, mode: str = "mean"):
        super().__init__()
        if mode not in ("mean", "attention"):
            raise ValueError(f"token pooling must be 'mean' or 'attention', got {mode!r}")
        self.mode = mode
        if mode == "attention":
            self.norm = nn.LayerNorm(dim)
            self.score = nn.Linear(dim, 1)
            init_linear(self)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        if self.mode == "mean":
            weights = tokens.new_full(tokens.shape[:2], 1.0 / tokens.shape[1])
        else:
            weights = torch.softmax(self.score(self.norm(tokens)).squeeze(-1), dim=-1)
        return (weights.unsqueeze(-1) * tokens).sum(1), weights


class GatedAttentionPool(nn.Module):
    """``forward(x (B, S, D), mask (B, S) bool) -> (pooled (B, D), weights (B, S))``.

    Every row of ``mask`` needs at least one True; padded slices get weight 0 and do not change the result.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.V = nn.Linear(dim, hidden)
        self.U = nn.Linear(dim, hidden)
        self.w = nn.Linear(hidden, 1)
        init_linear(self)

    def scores(self, x: Tensor) -> Tensor:
        """x (..., S, D) -> the unnormalised slice scores (..., S) (a streaming softmax over slice chunks of
        these gives the same weights as :meth:`forward`)."""
        return self.w(torch.tanh(self.V(x)) * torch.sigmoid(self.U(x))).squeeze(-1)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if not bool(mask.any(1).all()):
            raise ValueError("every case needs at least one real slice for slice pooling")
        scores = self.scores(x).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return torch.einsum("bs,bsd->bd", weights, x), weights
