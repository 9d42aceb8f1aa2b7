"""Cross-modal attention fusion (the paper's Eq. 3-4), per sample.

    Q = LN(h_I) W_Q,  K = LN(h_C) W_K,  V = LN(h_C) W_V                      (Eq. 3)
    h_F = h_I + softmax(Q K^T / sqrt(d_head)) V W_O   (per head, heads concatenated)   (Eq. 4)
    h_F = h_F + FFN(LN(h_F))                                                   (optional, ``ffn=True``)

The paper's Eq. 4 has no feed-forward layer after the attention; ``ffn=False`` is exactly Eq. 4 plus the
residual. Without it a Shapley coalition row costs only the per-field mixing (no per-token MLP), and the
fused tokens stay linear in the image tokens' residual stream (what Grad-CAM++ reads through).

Image tokens (B, N, D) are the queries, clinical field tokens (B, F, D) the keys and values. The weights
(B, heads, N, F) say, for every image token, how much each clinical field informed it: softmax runs over
the F fields of the SAME sample (never over the batch). The residual keeps the image content when the
clinical fields have nothing to add.

:meth:`CrossModalFusion.two_state` is the same computation for ONE case's image tokens against many
clinical rows in which every field is in one of two states (e.g. entered / unknown): what every
Shapley coalition needs. The image side (Q) and each field's keys, values and output projections are
computed once; a row then only mixes precomputed per-field terms (:class:`TwoStateFusion`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmxai_core.model.blocks import Mlp, MultiHeadAttention, init_linear

#: Largest spread (in logits) between a token's highest attention score over both states and the
#: lowest score that can be a row's maximum, for which the shared-shift softmax of
#: :class:`TwoStateFusion` stays exact in float32 (exp(-60) ~ 1e-26 is far from underflow).
MAX_SCORE_SPREAD = 60.0


class CrossModalFusion(nn.Module):
    """``forward(image_tokens (B, N, D), clinical_tokens (B, F, D)) -> (fused (B, N, D), weights
    (B, heads, N, F))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, drop: float = 0.0, ffn: bool = True):
        super().__init__()
        self.norm_image = nn.LayerNorm(dim)
        self.norm_clinical = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, attn_drop=drop, proj_drop=drop)
        self.norm_ffn = nn.LayerNorm(dim) if ffn else None
        self.ffn = Mlp(dim, max(1, int(round(dim * mlp_ratio))), drop) if ffn else None
        init_linear(self)

    def forward(self, image_tokens: Tensor, clinical_tokens: Tensor) -> tuple[Tensor, Tensor]:
        if image_tokens.shape[0] != clinical_tokens.shape[0]:
            raise ValueError(f"fusion needs one clinical token set per image token set, got batch "
                             f"{image_tokens.shape[0]} vs {clinical_tokens.shape[0]}")
        attended, weights = self.attn(self.norm_image(image_tokens), self.norm_clinical(clinical_tokens))
        fused = image_tokens + attended
        if self.ffn is not None:
            fused = fused + self.ffn(self.norm_ffn(fused))
        return fused, weights

    def two_state(self, image_tokens: Tensor, state_tokens: Tensor) -> "TwoStateFusion | None":
        """Prepare the fusion of one case's slices for rows whose fields each take one of two states.

        Args:
            image_tokens: (n, N, D) image tokens of n slices (the caller bounds n: a slice chunk).
            state_tokens: (2, F, D) clinical tokens of every field in state 0 and in state 1.

        Returns:
            a :class:`TwoStateFusion` (call it with a (R, F) bool state matrix), or None when the attention
            scores are too spread out for its shared-shift softmax (then use :meth:`forward`). Inference
            only (no dropout; call in eval mode, without gradients).
        """
        attn = self.attn
        n, n_tok, dim = image_tokens.shape
        heads, dh = attn.num_heads, attn.head_dim
        f = state_tokens.shape[1]
        ctx = self.norm_clinical(state_tokens)
        k = attn.k(ctx).view(2, f, heads, dh)
        v = attn.v(ctx).view(2, f, heads, dh)
        q = attn.q(self.norm_image(image_tokens)).view(n, n_tok, heads, dh)
        scores = torch.einsum("nthd,sfhd->nthsf", q, k) * attn.scale          # (n, N, h, 2, F)
        top = scores.amax(dim=(-2, -1), keepdim=True)                         # >= any row's max
        floor = scores.amin(dim=-2).amax(dim=-1)                              # <= any row's max
        if float((top.squeeze(-1).squeeze(-1) - floor).max()) > MAX_SCORE_SPREAD:
            return None
        e = torch.exp(scores - top)                                           # (n, N, h, 2, F)
        e0 = e[..., 0, :].contiguous()
        de = (e[..., 1, :] - e[..., 0, :]).contiguous()
        # per field, state and head: its value vector through the output projection, (2, h, F, D)
        w_out = attn.proj.weight.view(dim, heads, dh)
        vo = torch.einsum("sfhj,ohj->shfo", v, w_out).reshape(2, heads * f, dim)
        return TwoStateFusion(image_tokens, e0, de, vo[0].contiguous(), (vo[1] - vo[0]).contiguous(),
                              attn.proj.bias, self.norm_ffn, self.ffn)


class TwoStateFusion:
    """The fusion of one case's image tokens with clinical rows of two-state fields (see
    :meth:`CrossModalFusion.two_state`).

    For a row with field states b (F,) in {0, 1}, head h and image token t, the attention weights are
    ``e_f(b_f) / sum_g e_g(b_g)`` with ``e_f(s) = exp(score_f(s) - shift)``, one shift per (token, head)
    shared by every row (softmax does not depend on it), and the attended vector is
    ``sum_(h,f) weight * (V W_O)_(f, b_f, h) + bias``: one (N, h*F) x (h*F, D) product per row with the
    row's per-field output vectors. The residual and the FFN follow as in ``forward``.

    ``__call__(states (R, F) bool) -> fused (R, n, N, D)``.

    :meth:`pooled_mean` is the mean over the N tokens of ``__call__``'s output without forming it, for a
    fusion without FFN (the presets): the mean of the attended vectors needs only each row's mean attention
    weight per (head, field), ``(1/N) sum_t e_f(b_f, t) / Z_t``, two (R, N) x (N, F) products per slice
    and head instead of the (R, n, N, D) fused tokens.
    """

    def __init__(self, image_tokens: Tensor, e0: Tensor, de: Tensor, vo0: Tensor, dvo: Tensor, bias: Tensor | None,
                 norm_ffn: nn.Module, ffn: nn.Module):
        self.image_tokens = image_tokens          # (n, N, D)
        self.e0, self.de = e0, de                 # (n, N, h, F)
        self.vo0, self.dvo = vo0, dvo             # (h*F, D)
        self.bias = bias if bias is not None else vo0.new_zeros(vo0.shape[1])
        self.norm_ffn, self.ffn = norm_ffn, ffn
        self._by_head: tuple[Tensor, ...] | None = None   # pooled_mean's layout, made on first use

    def pooled_mean(self, states: Tensor, slices: slice = slice(None)) -> Tensor:
        """states (R, F) bool -> mean over tokens of the fused tokens, (R, n', D), of the slices ``slices``.

        Equal to ``self(states, slices).mean(dim=2)`` up to float rounding; needs no FFN. Peak memory:
        two (n', heads, R, N) float tensors.
        """
        if self.ffn is not None:
            raise ValueError("pooled_mean needs a fusion without feed-forward layer")
        self._prepare_pooled()
        both, z0, token_mean = (t[slices] for t in self._by_head)
        n, heads, n_tok, f2 = both.shape
        f = f2 // 2
        de_ft = both[..., f:].transpose(-1, -2)                              # (n, h, F, N), a view
        b = states.to(both.dtype)                                             # (R, F)
        inv_z = torch.matmul(b, de_ft).add_(z0).reciprocal_()                 # (n, h, R, N)
        p = torch.matmul(inv_z, both)                                         # (n, h, R, 2F)
        w = p[..., f:].mul(b).add_(p[..., :f]).div_(n_tok)                    # (n, h, R, F)
        attended = (torch.einsum("nhrf,hfd->rnd", w, self.vo0.view(heads, f, -1))
                    + torch.einsum("nhrf,hfd->rnd", w * b, self.dvo.view(heads, f, -1)))
        return attended.add_(self.bias).add_(token_mean)                     # (R, n, D)

    def _prepare_pooled(self) -> None:
        """pooled_mean's layout, once: per (slice, head) [e0 | e1 - e0] (N, 2F), sum_f e0, token means."""
        if self._by_head is None:
            e0_t = self.e0.permute(0, 2, 1, 3)                                # (n, h, N, F)
            de_t = self.de.permute(0, 2, 1, 3)
            self._by_head = (torch.cat([e0_t, de_t], dim=-1).contiguous(), e0_t.sum(-1).unsqueeze(-2),
                             self.image_tokens.mean(dim=1))

    def keep_pooled_only(self) -> None:
        """Prepare :meth:`pooled_mean` and free the token-wise terms (then ``__call__`` is unavailable):
        halves what a volume's precomputation holds."""
        self._prepare_pooled()
        self.e0 = self.de = None

    def tensors(self) -> list[Tensor]:
        """The per-slice tensors this fusion holds (for memory accounting; the image tokens are a view)."""
        held = [self.e0, self.de] + list(self._by_head or ())
        return [t for t in held if t is not None]

    def __call__(self, states: Tensor, slices: slice = slice(None)) -> Tensor:
        """states (R, F) bool -> fused tokens (R, n', N, D) of the slices ``slices`` (default all n)."""
        if self.e0 is None:
            raise RuntimeError("this two-state fusion keeps only the pooled path (keep_pooled_only)")
        e0, de, image_tokens = self.e0[slices], self.de[slices], self.image_tokens[slices]
        n, n_tok, heads, f = e0.shape
        r = int(states.shape[0])
        b = states.to(e0.dtype)
        e = torch.addcmul(e0.unsqueeze(0), b.view(r, 1, 1, 1, f), de.unsqueeze(0))    # (R, n, N, h, F)
        e = e.div_(e.sum(dim=-1, keepdim=True))                               # attention weights
        vo = torch.addcmul(self.vo0.view(heads, f, -1), b.view(r, 1, f, 1), self.dvo.view(heads, f, -1))
        out = torch.baddbmm(self.bias, e.view(r, n * n_tok, heads * f), vo.view(r, heads * f, -1))
        x = out.view(r, n, n_tok, -1).add_(image_tokens)                      # (R, n, N, D)
        if self.ffn is None:
            return x
        return x + self.ffn(self.norm_ffn(x))
