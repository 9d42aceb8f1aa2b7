"""Clinical-to-image attention: the "vice versa" half of the paper's cross-modal fusion (Section 3.4).

    Q = LN(h_C) W_Q,  K = LN(h_I) W_K,  V = LN(h_I) W_V
    c_f = LN(h_C,f + softmax(Q_f K^T / sqrt(d_head)) V W_O)          per field f, per head, per slice
    clinical summary of a slice = mean_f c_f                         (D,)

Each clinical field token (B, F, D) queries the image tokens (B, N, D) of the same slice; softmax runs
over the N image tokens, so the weights (B, heads, F, N) say, for every field, WHERE on the image it
looked. Fields never mix (every step is per field token), so the summary is a mean of per-field terms,
each depending only on its own field's state and the image: the path through which the clinical evidence
reaches the head additively. With softmax attention over fields alone (image tokens querying clinical
tokens, :mod:`.fusion`) the clinical evidence reaches the head only as a convex mixture over fields, and
on the synthetic cohort the model then learned the strong field ``age`` barely at all (mean |Shapley| below
two noise fields), where this path learns it (README, "Method choices").
"""

from __future__ import annotations

from torch import Tensor, nn

from mmxai_core.model.blocks import MultiHeadAttention, init_linear


class ClinicalToImageAttention(nn.Module):
    """``forward(clinical_tokens (B, F, D), image_tokens (B, N, D)) -> (fields (B, F, D), weights
    (B, heads, F, N))``; ``fields`` are the per-field outputs ``c_f`` of the module docstring."""

    def __init__(self, dim: int, num_heads: int, drop: float = 0.0):
        super().__init__()
        self.norm_clinical = nn.LayerNorm(dim)
        self.norm_image = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, attn_drop=drop, proj_drop=drop)
        self.norm_out = nn.LayerNorm(dim)
        init_linear(self)

    def forward(self, clinical_tokens: Tensor, image_tokens: Tensor) -> tuple[Tensor, Tensor]:
        if image_tokens.shape[0] != clinical_tokens.shape[0]:
            raise ValueError(f"clinical-to-image attention needs one image token set per clinical token set, "
                             f"got batch {clinical_tokens.shape[0]} vs {image_tokens.shape[0]}")
        attended, weights = self.attn(self.norm_clinical(clinical_tokens), self.norm_image(image_tokens))
        return self.norm_out(clinical_tokens + attended), weights


__all__ = ["ClinicalToImageAttention"]
