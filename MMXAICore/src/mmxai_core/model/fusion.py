"""Cross-modal attention fusion (the paper's Eq. 3-4), per sample.

    Q = LN(h_I) W_Q,  K = LN(h_C) W_K,  V = LN(h_C) W_V                      (Eq. 3)
    h_F = h_I + softmax(Q K^T / sqrt(d_head)) V W_O   (per head, heads concatenated)   (Eq. 4)
    h_F = h_F + FFN(LN(h_F))

Image tokens (B, N, D) are the queries, clinical field tokens (B, F, D) the keys and values. The weights
(B, heads, N, F) say, for every image token, how much each clinical field informed it: softmax runs over
the F fields of the SAME sample (never over the batch). The residual keeps the image content when the
clinical fields have nothing to add.
"""

from __future__ import annotations

from torch import Tensor, nn

from mmxai_core.model.blocks import Mlp, MultiHeadAttention, init_linear


class CrossModalFusion(nn.Module):
    """``forward(image_tokens (B, N, D), clinical_tokens (B, F, D)) -> (fused (B, N, D), weights
    (B, heads, N, F))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, drop: float = 0.0):
        super().__init__()
        self.norm_image = nn.LayerNorm(dim)
        self.norm_clinical = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, attn_drop=drop, proj_drop=drop)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = Mlp(dim, max(1, int(round(dim * mlp_ratio))), drop)
        init_linear(self)

    def forward(self, image_tokens: Tensor, clinical_tokens: Tensor) -> tuple[Tensor, Tensor]:
        if image_tokens.shape[0] != clinical_tokens.shape[0]:
            raise ValueError(f"fusion needs one clinical token set per image token set, got batch "
                             f"{image_tokens.shape[0]} vs {clinical_tokens.shape[0]}")
        attended, weights = self.attn(self.norm_image(image_tokens), self.norm_clinical(clinical_tokens))
        fused = image_tokens + attended
        fused = fused + self.ffn(self.norm_ffn(fused))
        return fused, weights
