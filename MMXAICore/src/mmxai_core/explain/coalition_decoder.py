"""Fast, exact decoding of one case for many "entered / unknown" clinical rows (research use only).

Every Shapley coalition of the clinical-field game (:mod:`.value_function`) keeps the image and sets each
field to one of two states: its entered value or "unknown". For the ``attention`` variant
(:class:`~mmxai_core.model.MultimodalClassifier` with cross-modal fusion) this decoder computes, once per
chunk of slices of the case,

* the clinical tokens of every field in both states, (2, F, D) (the tokeniser is field-wise),
* the image side of the fusion (queries) and each field's keys, values and output projections
  (:meth:`~mmxai_core.model.fusion.CrossModalFusion.two_state`),

* with ``reverse_fusion`` (clinical tokens querying the image tokens, :mod:`~mmxai_core.model.reverse_fusion`),
  every field's output in both states for every slice, (2, n, F, D): fields never mix there, so a row's
  per-slice clinical summary is ``mean_f c_f(state_f)``, a gather,

so that a row costs only the mixing of precomputed per-field terms, the residual FFN over the image
tokens, token pooling, slice pooling and the head (with mean token pooling and no FFN, the presets, the
fused tokens are never formed: :meth:`~mmxai_core.model.fusion.TwoStateFusion.pooled_mean` gives their
mean from each row's mean attention weights, so a row costs O(F) per token instead of O(F x D)): the
computation of ``model.decode`` (slice pooling as a streaming softmax over the chunks), equal to it up to
float rounding. A self-check against ``model.decode`` on a few rows
(all entered, all unknown, alternating) guards this (on the first ``slice_chunk`` slices of a longer
volume, so that memory stays bounded by the chunk); a model it does not fit gets ``None`` from
:func:`two_state_decoder` and the caller keeps ``model.decode``. Memory: slices a chunk at a time, with
the slice pooling accumulated across chunks (:class:`TwoStateDecoder`): a volume of any length needs one
chunk's terms, plus those kept between calls up to ``PREPARED_BUDGET_MIB``.

    dec = two_state_decoder(model, encoding, values (1, F), entered_missing (1, F))   # or None
    logits = dec(states)             # states (R, F) bool, True = entered value kept -> logits (R, C)
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from mmxai_core.model.outputs import ImageEncoding

#: Tolerance of the self-check against ``model.decode`` (logits, float32).
CHECK_ATOL = 1e-4
#: Elements of the largest tensor of one step (rows x the slice chunk's (heads, tokens) on the direct path,
#: rows x (slices, tokens, width) on the token-wise one): 4M / 0.5M float32 on a CPU (16 / 2 MB: the cache),
#: 32M on a GPU (kernel launches, not caches, set the pace). Rows are taken as many at a time as fit.
DIRECT_ELEMENT_BUDGET = 1 << 22
TOKENWISE_ELEMENT_BUDGET = 1 << 19
CUDA_ELEMENT_BUDGET = 1 << 25
#: MiB of per-slice-chunk preparation (attention terms of every field in both states) a decoder keeps
#: between calls; chunks beyond it are prepared again at each call, so a long volume's Shapley values need
#: memory for one slice chunk, not the volume (0.32 MiB per 256 x 256 slice of the tiny preset: 64 MiB
#: keep 200 slices).
PREPARED_BUDGET_MIB = 64.0


@dataclasses.dataclass
class _PreparedChunk:
    """One slice chunk's two-state terms: the fusion (:class:`~mmxai_core.model.fusion.TwoStateFusion`) and,
    with ``reverse_fusion``, the per-slice clinical summary of the all-state-0 row (n', D) and each field's
    change when it switches to state 1, divided by F (n', F, D)."""

    fusion: object
    reverse_base: Tensor | None
    reverse_delta: Tensor | None
    nbytes: int


class TwoStateDecoder:
    """``__call__(states (R, F) bool) -> logits (R, C)`` for one case (see the module docstring).

    Slices go through fusion and token pooling a ``slice_chunk`` at a time; the gated-attention slice
    pooling is accumulated over the chunks with a running maximum (the streaming softmax: the same weights
    as a softmax over all slices at once, up to float rounding), so a call holds one chunk's terms and
    (R, D) accumulators, never (R, slices, D). The prepared terms of the first chunks are kept between calls
    up to ``PREPARED_BUDGET_MIB``; the others are prepared again at each call.

    Attributes: n_slices (real slices), n_tokens (image tokens per slice), slice_chunk, direct (mean token
    pooling after a fusion without FFN: fused tokens never formed), uses_reverse.
    """

    def __init__(self, model: nn.Module, image_tokens: Tensor, state_tokens: Tensor, slice_chunk: int,
                 prepared_budget_mib: float = PREPARED_BUDGET_MIB):
        self.model = model
        self.image_tokens, self.state_tokens = image_tokens, state_tokens      # (n, N, D), (2, F, D)
        self.n_slices, self.n_tokens = int(image_tokens.shape[0]), int(image_tokens.shape[1])
        self.slice_chunk = max(1, min(self.n_slices, int(slice_chunk)))
        ffn = model.fusion.ffn
        self.hidden = int(ffn.fc1.out_features) if ffn is not None else 0
        self.direct = ffn is None and getattr(model.token_pool, "mode", None) == "mean"
        self.uses_reverse = hasattr(model, "reverse_fusion")
        self.heads = int(model.fusion.attn.num_heads)
        self.starts = list(range(0, self.n_slices, self.slice_chunk))
        self._kept: dict[int, _PreparedChunk] = {}
        self._budget = float(prepared_budget_mib) * 2 ** 20

    def prepare_all(self) -> bool:
        """Prepare every slice chunk once (keeping the first ones within the budget); False when a chunk's
        attention scores are too spread out for the shared-shift softmax (use ``model.decode``)."""
        kept = 0
        for k in range(len(self.starts)):
            chunk = self._prepare(k)
            if chunk is None:
                return False
            if kept + chunk.nbytes <= self._budget:
                self._kept[k] = chunk
                kept += chunk.nbytes
        return True

    def _prepare(self, k: int) -> _PreparedChunk | None:
        model = self.model
        part = self.image_tokens[self.starts[k]:self.starts[k] + self.slice_chunk]     # (n', N, D)
        fusion = model.fusion.two_state(part, self.state_tokens)
        if fusion is None:
            return None
        if self.direct:
            fusion.keep_pooled_only()
        base = delta = None
        if self.uses_reverse:
            out = torch.stack([model.reverse_fusion(self.state_tokens[s].expand(part.shape[0], -1, -1), part)[0]
                               for s in (0, 1)])                            # (2, n', F, D)
            base, delta = out[0].mean(dim=1), (out[1] - out[0]) / out.shape[2]
        nbytes = sum(t.numel() * t.element_size() for t in fusion.tensors() + [base, delta] if t is not None)
        return _PreparedChunk(fusion, base, delta, nbytes)

    def rows_per_step(self, n: int) -> int:
        """Rows per step for a chunk of n slices (the element budget over what one row adds)."""
        if self.direct:
            per_row, budget = self.heads * self.n_tokens * n, DIRECT_ELEMENT_BUDGET
        else:
            per_row = n * self.n_tokens * max(int(self.model.config.embed_dim), self.hidden)
            budget = TOKENWISE_ELEMENT_BUDGET
        if self.image_tokens.device.type == "cuda":
            budget = max(budget, CUDA_ELEMENT_BUDGET)
        return max(1, budget // max(1, per_row))

    def _pooled(self, chunk: _PreparedChunk, states: Tensor) -> Tensor:
        """states (r, F) -> slice embeddings (r, n', D) of one prepared chunk."""
        r = int(states.shape[0])
        if self.direct:
            pooled = chunk.fusion.pooled_mean(states)
        else:
            fused = chunk.fusion(states)                                       # (r, n', N, D)
            n, dim = fused.shape[1], fused.shape[-1]
            pooled, _ = self.model.token_pool(fused.view(r * n, self.n_tokens, dim))
            pooled = pooled.view(r, n, dim)
        if chunk.reverse_base is not None:
            b = states.to(pooled.dtype)
            pooled = pooled + chunk.reverse_base + torch.einsum("rf,nfd->rnd", b, chunk.reverse_delta)
        return pooled

    def __call__(self, states: Tensor) -> Tensor:
        model, r = self.model, int(states.shape[0])
        dim = int(self.image_tokens.shape[-1])
        f32 = dict(dtype=torch.float32, device=self.image_tokens.device)      # streaming softmax state, float32
        run_max = torch.full((r,), float("-inf"), **f32)                       # (also under bf16 autocast)
        run_sum = torch.zeros(r, **f32)
        run_acc = torch.zeros(r, dim, **f32)
        for k in range(len(self.starts)):
            chunk = self._kept.get(k) or self._prepare(k)
            if chunk is None:
                raise RuntimeError("two-state decoder: a slice chunk's attention scores are too spread out")
            n = min(self.slice_chunk, self.n_slices - self.starts[k])
            step = self.rows_per_step(n)
            for start in range(0, r, step):
                rows = slice(start, start + step)
                pooled = self._pooled(chunk, states[rows])                      # (r', n', D)
                scores = model.slice_pool.scores(pooled).float()                # (r', n')
                pooled = pooled.float()
                new_max = torch.maximum(run_max[rows], scores.amax(dim=1))
                rescale = torch.exp(run_max[rows] - new_max)                    # 0 on the first chunk
                weights = torch.exp(scores - new_max[:, None])
                run_sum[rows] = run_sum[rows] * rescale + weights.sum(dim=1)
                run_acc[rows] = run_acc[rows] * rescale[:, None] + torch.einsum("rn,rnd->rd", weights, pooled)
                run_max[rows] = new_max
        return model.head((run_acc / run_sum[:, None]).to(self.image_tokens.dtype))


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
    mask = encoding.slice_mask[0]
    image_tokens = encoding.tokens[0] if bool(mask.all()) else encoding.tokens[0][mask]   # (n, N, D)
    n, chunk = int(image_tokens.shape[0]), int(model.config.slice_chunk)
    if n > chunk:
        # A long volume: check the decoder on its first ``slice_chunk`` slices (the same code path; a
        # full-volume ``model.decode`` would hold every slice's fused tokens and maps at once).
        head = ImageEncoding(image_tokens[None, :chunk], mask.new_ones(1, chunk), encoding.image_present,
                             encoding.grid, None)
        if two_state_decoder(model, head, values, entered_missing) is None:
            return None
    decoder = TwoStateDecoder(model, image_tokens, state_tokens, chunk)
    if not decoder.prepare_all():
        return None
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


__all__ = ["CHECK_ATOL", "DIRECT_ELEMENT_BUDGET", "TOKENWISE_ELEMENT_BUDGET", "CUDA_ELEMENT_BUDGET",
           "PREPARED_BUDGET_MIB", "TwoStateDecoder", "two_state_decoder"]
