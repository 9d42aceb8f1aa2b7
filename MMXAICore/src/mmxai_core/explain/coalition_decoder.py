"""Fast, exact decoding of one case for many "entered / unknown" clinical rows (research use only).

Every Shapley coalition of the clinical-field game (:mod:`.value_function`) keeps the image and sets each
field to one of two states: its entered value or "unknown". For the ``attention`` variant
(:class:`~mmxai_core.model.MultimodalClassifier` with cross-modal fusion) this decoder computes, once per
case,

* the clinical tokens of every field in both states, (2, F, D) (the tokeniser is field-wise),
* the image side of the fusion (queries) and each field's keys, values and output projections
  (:meth:`~mmxai_core.model.fusion.CrossModalFusion.two_state`),

* with ``reverse_fusion`` (clinical tokens querying the image tokens, :mod:`~mmxai_core.model.reverse_fusion`),
  every field's output in both states for every slice, (2, n, F, D): fields never mix there, so a row's
  per-slice clinical summary is ``mean_f c_f(state_f)``, a gather,

so that a row costs only the mixing of precomputed per-field terms, the residual FFN over the image
tokens, token pooling, slice pooling and the head (with mean token pooling and no FFN, the presets, the
fused tokens are never formed: :meth:`~mmxai_core.model.fusion.TwoStateFusion.pooled_mean` gives their
mean from each row's mean attention weights, so a row costs O(F) per token instead of O(F x D)): the same operations in the same order as
``model.decode``, equal to it up to float rounding. A self-check against ``model.decode`` on a few rows
(all entered, all unknown, alternating) guards this (on the first ``slice_chunk`` slices of a longer
volume, so that memory stays bounded by the chunk); a model it does not fit gets ``None`` from
:func:`two_state_decoder` and the caller keeps ``model.decode``.

    dec = two_state_decoder(model, encoding, values (1, F), entered_missing (1, F))   # or None
    logits = dec(states)             # states (R, F) bool, True = entered value kept -> logits (R, C)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmxai_core.model.outputs import ImageEncoding

#: Tolerance of the self-check against ``model.decode`` (logits, float32).
CHECK_ATOL = 1e-4
#: Elements of the largest (slices, heads, rows, tokens) tensor of the direct path (mean token pooling, no
#: FFN) per step: 4M float32 (16 MB); slices are taken as many at a time as fit beside the rows.
DIRECT_ELEMENT_BUDGET = 1 << 22


class TwoStateDecoder:
    """``__call__(states (R, F) bool) -> logits (R, C)`` for one case (see the module docstring).

    Slices go through fusion and token pooling ``slice_chunk`` at a time (only their pooled vectors,
    (R, n, D), are kept for slice pooling), so memory grows with rows x slice_chunk x tokens, not with
    the volume.

    Attributes: n_slices (real slices), n_tokens (image tokens per slice), hidden (FFN width), slice_chunk,
    fusion (the prepared :class:`~mmxai_core.model.fusion.TwoStateFusion`).
    """

    def __init__(self, model: nn.Module, fusion, n_slices: int, n_tokens: int, slice_chunk: int | None = None,
                 reverse: Tensor | None = None):
        self.model = model
        self.fusion = fusion
        # reverse fusion outputs (2, n, F, D) -> per-slice summary of the all-state-0 row (n, D) and each
        # field's change when it switches to state 1, divided by F (n, F, D)
        self.reverse_base = self.reverse_delta = None
        if reverse is not None:
            f = reverse.shape[2]
            self.reverse_base = reverse[0].mean(dim=1)
            self.reverse_delta = (reverse[1] - reverse[0]) / f
        self.n_slices, self.n_tokens = n_slices, n_tokens
        ffn = model.fusion.ffn
        self.hidden = int(ffn.fc1.out_features) if ffn is not None else 0
        self.slice_chunk = max(1, min(n_slices, slice_chunk or int(model.config.slice_chunk)))
        #: mean token pooling after a fusion without FFN: fused tokens never formed (module docstring)
        self.direct = fusion.linear_after_attention and getattr(model.token_pool, "mode", None) == "mean"
        if self.direct:
            fusion.keep_pooled_only()
        self.heads = int(model.fusion.attn.num_heads)

    @property
    def row_elements(self) -> int:
        """Elements one row adds to the largest tensor of a step (for sizing row chunks): on the direct path
        one slice's (heads, tokens) or all slices' pooled vectors and slice-pooling units, whichever is
        larger (so rows x slices stays bounded); a slice chunk's (tokens, width) otherwise."""
        if self.direct:   # one slice's (heads, tokens), or the (slices, width) of slice pooling if larger
            width = max(int(self.model.config.embed_dim), int(self.model.config.mil_hidden))
            return max(self.heads * self.n_tokens, self.n_slices * width)
        return self.slice_chunk * self.n_tokens * max(int(self.model.config.embed_dim), self.hidden)

    def __call__(self, states: Tensor) -> Tensor:
        model = self.model
        r = int(states.shape[0])
        parts = []
        step = self.slice_chunk
        if self.direct:
            step = max(1, DIRECT_ELEMENT_BUDGET // max(1, r * self.row_elements))
        for start in range(0, self.n_slices, step):
            if self.direct:
                parts.append(self.fusion.pooled_mean(states, slice(start, start + step)))
                continue
            fused = self.fusion(states, slice(start, start + self.slice_chunk))   # (R, n', N, D)
            n, dim = fused.shape[1], fused.shape[-1]
            pooled, _ = model.token_pool(fused.view(r * n, self.n_tokens, dim))    # (R*n', D)
            parts.append(pooled.view(r, n, dim))
        pooled = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)           # (R, n, D)
        if self.reverse_base is not None:
            b = states.to(pooled.dtype)
            pooled = pooled + self.reverse_base + torch.einsum("rf,nfd->rnd", b, self.reverse_delta)
        mask = torch.ones(r, self.n_slices, dtype=torch.bool, device=pooled.device)
        embedding, _ = model.slice_pool(pooled, mask)                               # (R, D)
        return model.head(embedding)


def two_state_decoder(model: nn.Module, encoding: ImageEncoding, values: Tensor, entered_missing: Tensor
                      ) -> TwoStateDecoder | None:
    """A :class:`TwoStateDecoder` for one case, or None where it does not apply.

    Args:
        model: a MultimodalClassifier in eval mode (call under ``torch.inference_mode``).
        encoding: the case's image encoding, batch 1 (``model.encode_image``).
        values: (1, F) entered values (0 where unknown); entered_missing: (1, F) bool, fields the user
            left unknown (unknown in both states).

    Returns None for variants without cross-modal fusion, a tokeniser that is not field-wise, attention
    scores too spread out for the shared-shift softmax, or a failed self-check.
    """
    if getattr(model, "fusion_kind", None) != "cross_attention" or encoding is None or encoding.batch_size != 1:
        return None
    encoder = model.clinical_encoder
    if not getattr(encoder, "field_wise", False):
        return None
    f = values.shape[1]
    all_unknown = torch.ones_like(entered_missing)
    states_in = torch.cat([values, values])                                 # (2, F)
    state_tokens = encoder(states_in, torch.cat([all_unknown, entered_missing]))   # (2, F, D)
    image_tokens = encoding.tokens[0][encoding.slice_mask[0]]              # (n, N, D)
    n, chunk = int(image_tokens.shape[0]), int(model.config.slice_chunk)
    if n > chunk:
        # A long volume: check the decoder on its first ``slice_chunk`` slices (the same code path; a
        # full-volume ``model.decode`` would hold every slice's fused tokens at once), then prepare the
        # whole volume a chunk of slices at a time (the softmax-spread check covers every slice).
        mask = encoding.slice_mask.clone()
        mask[0, mask[0].nonzero(as_tuple=True)[0][chunk:]] = False
        head = ImageEncoding(encoding.tokens, mask, encoding.image_present, encoding.grid, None)
        if two_state_decoder(model, head, values, entered_missing) is None:
            return None
    fusion = model.fusion.two_state(image_tokens, state_tokens, slice_chunk=chunk)
    if fusion is None:
        return None
    reverse = None
    if hasattr(model, "reverse_fusion"):
        parts = []
        for start in range(0, n, chunk):
            part = image_tokens[start:start + chunk]
            parts.append(torch.stack([model.reverse_fusion(state_tokens[k].expand(part.shape[0], -1, -1), part)[0]
                                      for k in (0, 1)]))                     # (2, n', F, D)
        reverse = torch.cat(parts, dim=1)                                   # (2, n, F, D)
    decoder = TwoStateDecoder(model, fusion, n, int(image_tokens.shape[1]), reverse=reverse)
    if n > chunk:
        return decoder
    # self-check on three rows against the model's own decode
    check = torch.zeros(3, f, dtype=torch.bool, device=values.device)
    check[0] = True
    check[2, ::2] = True
    check = check & ~entered_missing
    reference = model.decode(encoding, values.expand(3, -1), ~check).logits
    if not torch.allclose(decoder(check), reference, rtol=0.0, atol=CHECK_ATOL):
        return None
    return decoder


__all__ = ["CHECK_ATOL", "DIRECT_ELEMENT_BUDGET", "TwoStateDecoder", "two_state_decoder"]
