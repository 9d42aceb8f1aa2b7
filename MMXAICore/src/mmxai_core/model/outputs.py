"""What the model returns, and the cached image half of a forward pass.

Shapes: B cases, S slices (padded), N image tokens per slice (h*w of the token grid; 1 when no case of the
batch has an image), F clinical fields, C classes, heads = ``config.fusion_heads``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class ImageEncoding:
    """The image half of a forward pass (``model.encode_image``), reusable with many clinical rows.

    tokens:          (B, S, N, D) image tokens per slice; padded slices are 0; a case without an image has
                     the learned missing-image token at slice 0 (repeated over the N positions, which is
                     the same as a single token for fusion and pooling).
    slice_mask:      (B, S) bool, the slices that take part: real slices of a present image, or slice 0
                     (the missing-image token) of a case without an image.
    image_present:   (B,) bool.
    grid:            (h, w) token grid (N = h*w); (1, 1) when no case has an image.
    self_attentions: None, or one (B, S, heads, N, N) tensor per image transformer block (zeros for padded
                     slices and for cases without an image), for attention rollout.
    """

    tokens: Tensor
    slice_mask: Tensor
    image_present: Tensor
    grid: tuple[int, int]
    self_attentions: list[Tensor] | None = None

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    def expand(self, batch_size: int) -> "ImageEncoding":
        """A batch-of-1 encoding repeated (as views, no copy) ``batch_size`` times."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"cannot expand an image encoding of batch {self.batch_size} to {batch_size}")
        grow = lambda t: t.expand(batch_size, *t.shape[1:])  # noqa: E731
        atts = None if self.self_attentions is None else [grow(a) for a in self.self_attentions]
        return ImageEncoding(grow(self.tokens), grow(self.slice_mask), grow(self.image_present), self.grid, atts)

    def select(self, rows: Tensor, detach: bool = False) -> "ImageEncoding":
        """The cases ``rows`` ((B,) bool or indices) of this encoding, without self-attentions; ``detach``
        cuts the tokens from the graph (no gradient reaches the image encoder through them)."""
        tokens = self.tokens[rows]
        return ImageEncoding(tokens.detach() if detach else tokens, self.slice_mask[rows], self.image_present[rows],
                             self.grid, None)


@dataclass
class ModelOutput:
    """Forward result. ``None`` where the variant has no such part.

    logits:             (B, C).
    probs:              (B, C) softmax of the logits (float32); binary: ``probs[:, 1]`` is the positive class.
    embedding:          (B, E) the vector the head classifies (E = D, or 2D for ``concat``).
    image_present:      (B,) bool: False where the missing-image token stood in for the image.
    slice_mask:         (B, S) bool, as in :class:`ImageEncoding` (image variants).
    slice_weights:      (B, S) gated-attention MIL weights over slices, 0 on padding, sum 1 per case;
                        a case without an image has weight 1 on slice 0 (image variants).
    token_weights:      (B, S, N) token pooling weights within each slice (uniform for ``mean``).
    cross_attention:    (B, S, heads, N, F) cross-modal attention of EVERY slice (``attention`` variant):
                        for each image token, the weight of each clinical field; zeros on padded slices;
                        for a case without an image, the missing-image token's weights at slice 0,
                        repeated over the N token positions.
    reverse_attention:  (B, S, heads, F, N) clinical-to-image attention (``reverse_fusion``): for each
                        clinical field, the weight of each image token of the slice; zeros on padding.
    clinical_attention: (B, F) summary of ``cross_attention``: mean over heads and tokens, weighted by
                        ``slice_weights``; sums to 1 per case (``attention`` variant).
    grid:               (h, w) image token grid.
    self_attentions:    per image transformer block (B, S, heads, N, N), only with ``return_attentions``.
    """

    logits: Tensor
    probs: Tensor
    embedding: Tensor
    image_present: Tensor
    slice_mask: Tensor | None = None
    slice_weights: Tensor | None = None
    token_weights: Tensor | None = None
    cross_attention: Tensor | None = None
    clinical_attention: Tensor | None = None
    reverse_attention: Tensor | None = None
    grid: tuple[int, int] | None = None
    self_attentions: list[Tensor] | None = None
