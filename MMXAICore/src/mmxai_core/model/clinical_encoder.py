"""Clinical encoder (the paper's f_C, Eq. 2), feature-tokeniser style: one token per clinical field.

    values (B, F) float32, missing (B, F) bool  ->  tokens (B, F, D)

* numeric field f: ``value * w_f + b_f`` (learned vectors per field);
* categorical field f (ordinal and boolean included): row ``code`` of the field's own embedding table;
* where ``missing`` is True the value token is replaced by the field's learned "unknown" embedding;
  with ``neutral_unknown`` that embedding is a learned offset from the field's *neutral* token (numeric:
  the token of the middle of the scaled range, 0.5; categorical: the mean of its category embeddings), so
  an unknown field starts as, and stays unless training moves it, an average entered value of that field
  (why: with a free "unknown" vector, fields the model ignores still moved the prediction between
  "entered" and "unknown", and the Shapley values, removal = unknown, reported that offset; README,
  "Known limitations");
* plus a learned identity embedding per field; then a token-wise MLP with a residual and a LayerNorm.

Fields are never mixed here, so token f speaks only of field f: cross-modal attention over these tokens
is a per-field explanation. :class:`ClinicalSummary` makes one vector of all fields (with interactions)
for the ``concat`` and ``clinical_only`` variants.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mmxai_core.model.blocks import Mlp, init_linear
from mmxai_core.model.config import ClinicalField


class ClinicalTokenizer(nn.Module):
    """(values (B, F), missing (B, F)) -> tokens (B, F, D); field order as in ``fields``.

    Known categorical values must be integer codes in ``0..cardinality-1`` and known numeric values finite
    (``ValueError`` naming the field otherwise); values under ``missing`` are ignored.

    ``field_wise``: token f depends on field f's value and missing flag only (every step is per token),
    so the tokens of any mix of per-field states can be gathered from the tokens of whole rows in those
    states (what the explainers' coalition decoding relies on; tested).
    """

    field_wise = True

    def __init__(self, fields: Sequence[ClinicalField], dim: int, mlp_ratio: float = 2.0, drop: float = 0.0,
                 neutral_unknown: bool = False):
        super().__init__()
        self.fields = tuple(fields)
        self.neutral_unknown = bool(neutral_unknown)
        f_count = len(self.fields)
        num = [i for i, f in enumerate(self.fields) if f.kind == "numeric"]
        cat = [i for i, f in enumerate(self.fields) if f.kind == "categorical"]
        cards = [self.fields[i].cardinality for i in cat]
        offsets = [sum(cards[:j]) for j in range(len(cards))]
        self.register_buffer("num_index", torch.tensor(num, dtype=torch.long), persistent=False)
        self.register_buffer("cat_index", torch.tensor(cat, dtype=torch.long), persistent=False)
        self.register_buffer("cat_offset", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer("cat_card", torch.tensor(cards, dtype=torch.long), persistent=False)
        self.num_weight = nn.Parameter(torch.empty(len(num), dim))
        self.num_bias = nn.Parameter(torch.empty(len(num), dim))
        self.cat_embed = nn.Parameter(torch.empty(sum(cards), dim))
        self.unknown = nn.Parameter(torch.empty(f_count, dim))
        self.field_embed = nn.Parameter(torch.empty(f_count, dim))
        for p in (self.num_weight, self.num_bias, self.cat_embed, self.unknown, self.field_embed):
            nn.init.trunc_normal_(p, std=0.02)
        if self.neutral_unknown:
            nn.init.zeros_(self.unknown)          # an offset from the neutral token: none at the start
            # category rows of each categorical field, for the mean of its embeddings
            owner = torch.repeat_interleave(torch.arange(len(cat)), torch.tensor(cards, dtype=torch.long)) \
                if cat else torch.zeros(0, dtype=torch.long)
            self.register_buffer("cat_owner", owner, persistent=False)
        self.norm_in = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, max(1, int(round(dim * mlp_ratio))), drop)
        self.norm_out = nn.LayerNorm(dim)
        self.dim = dim
        init_linear(self.mlp)

    def _check(self, values: Tensor, missing: Tensor) -> None:
        known = ~missing
        bad_num = (known[:, self.num_index] & ~torch.isfinite(values[:, self.num_index])).any(0)
        codes = values[:, self.cat_index]
        bad_code = ~torch.isfinite(codes) | (codes != codes.round()) | (codes < 0) | (codes >= self.cat_card)
        bad_cat = (known[:, self.cat_index] & bad_code).any(0)
        if bool(bad_num.any()) or bool(bad_cat.any()):
            names = [self.fields[int(i)].name for i in self.num_index[bad_num]]
            names += [f"{self.fields[int(i)].name} (codes 0..{int(k) - 1})"
                      for i, k in zip(self.cat_index[bad_cat], self.cat_card[bad_cat])]
            raise ValueError(f"invalid known clinical value(s) in field(s): {', '.join(names)}")

    def forward(self, values: Tensor, missing: Tensor) -> Tensor:
        b, f = values.shape
        if f != len(self.fields) or missing.shape != values.shape:
            raise ValueError(f"clinical values {tuple(values.shape)} / missing {tuple(missing.shape)} do not "
                             f"match the model's {len(self.fields)} field(s)")
        missing = missing.to(torch.bool)
        values = values.to(self.field_embed.dtype)
        self._check(values, missing)
        values = torch.where(missing, torch.zeros((), dtype=values.dtype, device=values.device), values)
        tokens = values.new_zeros(b, f, self.dim)
        if len(self.num_index):
            num_tok = values[:, self.num_index, None] * self.num_weight + self.num_bias
            tokens = tokens.index_copy(1, self.num_index, num_tok)
        if len(self.cat_index):
            rows = values[:, self.cat_index].long() + self.cat_offset
            tokens = tokens.index_copy(1, self.cat_index, self.cat_embed[rows])
        if bool(missing.any()):  # only then does "unknown" take part (and receive gradient)
            unknown = self.unknown_tokens()
            tokens = torch.where(missing[..., None], unknown.expand(b, f, self.dim), tokens)
        tokens = tokens + self.field_embed
        tokens = tokens + self.mlp(self.norm_in(tokens))
        return self.norm_out(tokens)


    def unknown_tokens(self) -> Tensor:
        """(F, D) the value token of every field when unknown (before the field embedding and the MLP)."""
        if not self.neutral_unknown:
            return self.unknown
        neutral = self.unknown.new_zeros(len(self.fields), self.dim)
        if len(self.num_index):
            neutral = neutral.index_copy(0, self.num_index, 0.5 * self.num_weight + self.num_bias)
        if len(self.cat_index):
            sums = self.cat_embed.new_zeros(len(self.cat_index), self.dim).index_add(0, self.cat_owner,
                                                                                   self.cat_embed)
            neutral = neutral.index_copy(0, self.cat_index, sums / self.cat_card[:, None].to(sums.dtype))
        return neutral + self.unknown


class ClinicalSummary(nn.Module):
    """All field tokens -> one vector: flatten (B, F*D) -> Linear -> GELU -> Linear -> (B, D).

    A plain MLP over all fields (the paper's MLP clinical encoder), so fields can interact; used by the
    ``concat`` and ``clinical_only`` variants.
    """

    def __init__(self, num_fields: int, dim: int, drop: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(num_fields * dim, dim), nn.GELU(), nn.Dropout(drop),
                                 nn.Linear(dim, dim))
        init_linear(self)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.net(tokens.flatten(1))
