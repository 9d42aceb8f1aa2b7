"""The multimodal classifier: one class whose variants (``variants.py``) switch branches on or off.

Per case (``attention`` variant; the order DESIGN.md asks for):

    each real slice (1, H, W) -> ImageEncoder -> tokens (N, D)                  [chunks of slice_chunk]
    clinical (F,) values + missing -> ClinicalTokenizer -> tokens (F, D)
    each slice: CrossModalFusion(image tokens, clinical tokens) -> (N, D), weights (heads, N, F)
    each slice: TokenPool -> (D,)
    each slice (config.reverse_fusion): + mean over fields of ClinicalToImageAttention(clinical tokens,
                image tokens) -> (D,), weights (heads, F, N)
    slices: GatedAttentionPool with the slice mask -> (D,)  -> ClassifierHead -> logits (C,)

Inputs (all batched, B cases):
    images         (B, S, 1, H, W) float, or (B, 1, H, W) for 2D (= one slice); may be None (no image)
    slice_mask     (B, S) bool, True = real slice (default: all True)
    image_present  (B,) bool (default: True where images are given)
    clin_values    (B, F) float32 (categorical codes as floats), clin_missing (B, F) bool
                   (default: NaN values are missing)

Forward = :meth:`encode_image` (the expensive half) + :meth:`decode` (clinical branch, fusion, pooling,
head). An explainer can encode a case once and decode it with many clinical rows (a batch-of-1 encoding is
broadcast against B clinical rows). In eval mode every case is computed independently of the others.

Grad-CAM++ target: ``model.image_encoder.cam_layer`` (:attr:`gradcam_layer`). It is called once per chunk
of ``config.slice_chunk`` real slices, in case-major, slice order; pytorch-grad-cam keeps only one call per
target layer, so give it at most ``slice_chunk`` slices per forward (``forward(..., slice_chunk=S)``
puts a whole volume through in one call) or collect the hook outputs yourself.
"""

from __future__ import annotations

import os
from typing import ClassVar

import torch
from torch import Tensor, nn

from mmxai_core.model.clinical_encoder import ClinicalSummary, ClinicalTokenizer
from mmxai_core.model.config import ModelConfig
from mmxai_core.model.fusion import CrossModalFusion
from mmxai_core.model.heads import ClassifierHead
from mmxai_core.model.image_encoder import ImageEncoder, check_grid
from mmxai_core.model.missingness import apply_missingness
from mmxai_core.model.outputs import ImageEncoding, ModelOutput
from mmxai_core.model.pooling import GatedAttentionPool, TokenPool
from mmxai_core.model.reverse_fusion import ClinicalToImageAttention


class MultimodalClassifier(nn.Module):
    """Base of the variants; subclasses only set the class attributes below (see ``variants.py``)."""

    variant: ClassVar[str] = ""
    uses_image: ClassVar[bool] = True
    uses_clinical: ClassVar[bool] = True
    fusion_kind: ClassVar[str | None] = None  # "cross_attention", "concat" or None

    def __init__(self, config: ModelConfig, trunk_weights: str | os.PathLike | None = None):
        super().__init__()
        if config.variant != self.variant:
            raise ValueError(f"{type(self).__name__} is variant {self.variant!r}, config says {config.variant!r}")
        if self.uses_clinical and config.num_fields == 0:
            raise ValueError(f"variant {self.variant!r} needs at least one clinical field "
                             "(use 'image_only' for images alone)")
        self.config = config
        dim, drop = config.embed_dim, config.dropout
        if self.uses_image:
            self.image_encoder = ImageEncoder(config.trunk, config.trunk_out_index, dim, config.depth,
                                              config.num_heads, config.mlp_ratio, drop, trunk_weights,
                                              final_norm=config.final_norm)
            self.missing_image_token = nn.Parameter(torch.empty(dim))
            nn.init.trunc_normal_(self.missing_image_token, std=0.02)
            self.token_pool = TokenPool(dim, config.token_pool)
            self.slice_pool = GatedAttentionPool(dim, config.mil_hidden)
        if self.uses_clinical:
            self.clinical_encoder = ClinicalTokenizer(config.clinical_fields, dim, config.mlp_ratio, drop,
                                                      neutral_unknown=config.neutral_unknown)
        if self.fusion_kind == "cross_attention":
            self.fusion = CrossModalFusion(dim, config.fusion_heads, config.mlp_ratio, drop, ffn=config.fusion_ffn)
            if config.reverse_fusion:
                self.reverse_fusion = ClinicalToImageAttention(dim, config.fusion_heads, drop)
        elif self.uses_clinical:
            self.clinical_summary = ClinicalSummary(config.num_fields, dim, drop)
        head_in = dim * (2 if self.fusion_kind == "concat" else 1)
        self.head = ClassifierHead(head_in, config.num_classes, drop, norm=config.head_norm)

    # ------------------------------------------------------------------ helpers for users of the model
    @property
    def gradcam_layer(self) -> nn.Module:
        """The module to hook for Grad-CAM(++): the last CNN feature map (B', C, h, w)."""
        if not self.uses_image:
            raise AttributeError(f"variant {self.variant!r} has no image encoder")
        return self.image_encoder.cam_layer

    def no_weight_decay(self) -> set[str]:
        """Names of learned tokens/embeddings kept out of weight decay (besides biases and norms)."""
        names = {"missing_image_token"} if self.uses_image else set()
        if self.uses_clinical:
            names |= {f"clinical_encoder.{n}" for n in ("num_weight", "num_bias", "cat_embed", "unknown",
                                                        "field_embed")}
        return names

    def missingness_rates(self) -> tuple[float, float]:
        """(clinical_mask_rate, image_dropout_rate) that make sense for this variant."""
        clinical = self.config.clinical_mask_rate if self.uses_clinical else 0.0
        image = self.config.image_dropout_rate if (self.uses_image and self.uses_clinical) else 0.0
        return clinical, image

    def simulate_missing(self, clin_missing: Tensor, image_present: Tensor,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Training-time masking with this variant's rates (:func:`apply_missingness`); no case is left
        without information the variant uses."""
        clinical, image = self.missingness_rates()
        present = image_present if self.uses_image else torch.zeros_like(image_present, dtype=torch.bool)
        new_missing, new_present = apply_missingness(clin_missing, present, clinical, image, generator)
        return new_missing, (new_present if self.uses_image else image_present)

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor | None = None, slice_mask: Tensor | None = None,
                image_present: Tensor | None = None, clin_values: Tensor | None = None,
                clin_missing: Tensor | None = None, *, return_attentions: bool = False,
                slice_chunk: int | None = None) -> ModelOutput:
        """See the module docstring for the inputs and :class:`ModelOutput` for the result.
        ``slice_chunk`` overrides ``config.slice_chunk`` for this call."""
        batch = _batch_size(images, clin_values)
        encoding = None
        if self.uses_image:
            encoding = self.encode_image(images, slice_mask, image_present, batch_size=batch,
                                         return_attentions=return_attentions, slice_chunk=slice_chunk)
        present = _default_present(images, image_present, batch)
        return self.decode(encoding, clin_values, clin_missing, image_present=present)

    def encode_image(self, images: Tensor | None, slice_mask: Tensor | None = None,
                     image_present: Tensor | None = None, *, batch_size: int | None = None,
                     return_attentions: bool = False, slice_chunk: int | None = None) -> ImageEncoding:
        """The image half: real slices through the encoder in chunks of ``slice_chunk`` (default
        ``config.slice_chunk``); see :class:`ImageEncoding`."""
        if not self.uses_image:
            raise AttributeError(f"variant {self.variant!r} has no image encoder")
        token = self.missing_image_token
        if images is None:
            if batch_size is None:
                raise ValueError("encode_image without images needs batch_size")
            if image_present is not None and bool(image_present.any()):
                raise ValueError("image_present is True for some case but no images were given")
            mask = torch.ones(batch_size, 1, dtype=torch.bool, device=token.device)
            present = torch.zeros(batch_size, dtype=torch.bool, device=token.device)
            tokens = token.expand(batch_size, 1, 1, -1) if batch_size else token.new_zeros(0, 1, 1, token.numel())
            return ImageEncoding(tokens, mask, present, (1, 1), None)
        images, slice_mask, present = _check_images(images, slice_mask, image_present)
        check_grid(self.image_encoder.stride, images.shape[-2], images.shape[-1])
        b, s = images.shape[:2]
        b_idx, s_idx = (slice_mask & present[:, None]).nonzero(as_tuple=True)
        chunk = self.config.slice_chunk if slice_chunk is None else int(slice_chunk)
        if chunk < 1:
            raise ValueError(f"slice_chunk must be >= 1, got {chunk}")
        parts, att_parts, grid = [], [], (1, 1)
        for start in range(0, len(b_idx), chunk):
            sel = slice(start, start + chunk)
            toks, grid, atts = self.image_encoder(images[b_idx[sel], s_idx[sel]], return_attentions)
            parts.append(toks)
            att_parts.append(atts)
        return self.assemble_encoding(images, slice_mask, present, parts, att_parts if return_attentions else None,
                                      grid)

    def assemble_encoding(self, images: Tensor, slice_mask: Tensor, present: Tensor, parts: list[Tensor],
                          att_parts: list | None, grid: tuple[int, int]) -> ImageEncoding:
        """Put per-chunk encoder outputs (tokens (n', N, D) of the real slices in row-major (case, slice)
        order; optional per-block attentions) into an :class:`ImageEncoding`, with the missing-image token
        for cases without an image. ``images`` (B, S, 1, H, W) gives shape and dtype only."""
        b_idx, s_idx = (slice_mask & present[:, None]).nonzero(as_tuple=True)
        dtype = parts[0].dtype if parts else self.missing_image_token.dtype
        n_tok = parts[0].shape[1] if parts else 1
        enc = self.encoding_buffer(images, slice_mask, present, n_tok, dtype, att_parts is not None, grid)
        tokens, start = enc.tokens, 0
        for part in parts:                   # chunk by chunk: no concatenated copy of all slices' tokens
            sel = slice(start, start + part.shape[0])
            tokens = tokens.index_put((b_idx[sel], s_idx[sel]), part)
            start += part.shape[0]
        self_atts = enc.self_attentions
        if self_atts is not None and parts:
            self_atts = [full.index_put((b_idx, s_idx), torch.cat([a[layer] for a in att_parts]).to(full.dtype))
                         for layer, full in enumerate(self_atts)]
        return ImageEncoding(tokens, enc.slice_mask, present, grid, self_atts)

    def encoding_buffer(self, images: Tensor, slice_mask: Tensor, present: Tensor, n_tok: int, dtype: torch.dtype,
                        return_attentions: bool, grid: tuple[int, int]) -> ImageEncoding:
        """An :class:`ImageEncoding` whose real slices are still zeros, to be filled chunk by chunk: tokens
        (B, S, n_tok, D), the missing-image token at slice 0 of every case without an image, the slice mask,
        and (``return_attentions``) zero (B, S, heads, n_tok, n_tok) self-attentions per block."""
        token = self.missing_image_token
        b, s = images.shape[:2]
        tokens = images.new_zeros(b, s, n_tok, token.numel(), dtype=dtype)
        miss = (~present).nonzero(as_tuple=True)[0]
        mask = slice_mask & present[:, None]
        if len(miss):
            zero = torch.zeros_like(miss)
            tokens = tokens.index_put((miss, zero), token.to(dtype).expand(len(miss), n_tok, -1))
            mask = mask.index_put((miss, zero), torch.ones_like(miss, dtype=torch.bool))
        self_atts = None
        if return_attentions:
            self_atts = [images.new_zeros(b, s, block.attn.num_heads, n_tok, n_tok, dtype=dtype)
                         for block in self.image_encoder.blocks]
        return ImageEncoding(tokens, mask, present, grid, self_atts)

    def decode(self, encoding: ImageEncoding | None, clin_values: Tensor | None = None,
               clin_missing: Tensor | None = None, *, image_present: Tensor | None = None) -> ModelOutput:
        """Clinical branch, fusion, pooling and head on top of an :class:`ImageEncoding`.

        A batch-of-1 encoding is broadcast against B clinical rows (and a batch-of-1 clinical row against
        B encodings). ``image_present`` is only used by variants without images (reported as given).
        """
        clin = self.clinical_tokens(clin_values, clin_missing)
        if encoding is not None and clin is not None:
            batch = max(encoding.batch_size, clin.shape[0])
            if clin.shape[0] not in (1, batch) or encoding.batch_size not in (1, batch):
                raise ValueError(f"batch of images ({encoding.batch_size}) and clinical rows "
                                 f"({clin.shape[0]}) differ")
            encoding = encoding.expand(batch)
            clin = clin.expand(batch, -1, -1)
        image_embedding, extra = None, {}
        if encoding is not None:
            image_embedding, extra = self._image_branch(encoding, clin)
            image_present = encoding.image_present
        return self.finish(image_embedding, extra, clin, image_present)

    def clinical_tokens(self, clin_values: Tensor | None, clin_missing: Tensor | None = None) -> Tensor | None:
        """The clinical branch: (B, F) values (+ missing mask; default NaN = missing) -> tokens (B, F, D),
        or None for variants without clinical input."""
        if not self.uses_clinical:
            return None
        if clin_values is None:
            raise ValueError(f"variant {self.variant!r} needs clin_values (B, F)")
        if clin_missing is None:
            clin_missing = torch.isnan(clin_values)
        return self.clinical_encoder(clin_values, clin_missing)  # (B, F, D)

    def finish(self, image_embedding: Tensor | None, extra: dict, clin: Tensor | None,
               image_present: Tensor | None) -> ModelOutput:
        """Head on the image embedding (B, D) (+ the clinical summary for variants without cross-modal
        fusion) -> :class:`ModelOutput` with the image extras of :meth:`pool_slices`."""
        parts: list[Tensor] = [] if image_embedding is None else [image_embedding]
        if clin is not None and self.fusion_kind != "cross_attention":
            parts.append(self.clinical_summary(clin))
        embedding = torch.cat(parts, dim=-1)
        logits = self.head(embedding)
        if image_present is not None:
            present = image_present.to(torch.bool)
        else:
            present = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
        return ModelOutput(logits=logits, probs=torch.softmax(logits.float(), dim=-1), embedding=embedding,
                           image_present=present, **extra)

    def slice_embeddings(self, image_tokens: Tensor, clin: Tensor | None, case_index: Tensor) -> tuple[Tensor, dict]:
        """The per-slice half of the image branch: fusion with the clinical tokens, token pooling and
        (``reverse_fusion``) the clinical summary of the slice. Slices never mix here.

        Args:
            image_tokens: (n, N, D) tokens of n slices; clin: (B, F, D) the clinical tokens of the cases, or
                None (variants without cross-modal fusion); case_index: (n,) the case of every slice.
                (Each branch gathers ``clin[case_index]`` itself: the same autograd graph, hence the same
                float sums in training, as the model had before this split; a seeded run reproduces the
                shipped demo model bit for bit.)
        Returns:
            pooled (n, D) slice embeddings and per-slice maps ``cross`` (n, heads, N, F) or None,
            ``token_weights`` (n, N), ``reverse`` (n, heads, F, N) or None.
        """
        x, cross, reverse = image_tokens, None, None
        if self.fusion_kind == "cross_attention":
            x, cross = self.fusion(x, clin[case_index])            # (n, N, D), (n, heads, N, F)
        pooled, tok_w = self.token_pool(x)                         # (n, D), (n, N)
        if self.fusion_kind == "cross_attention" and hasattr(self, "reverse_fusion"):
            fields, reverse = self.reverse_fusion(clin[case_index], image_tokens)   # (n, F, D), (n, heads, F, N)
            pooled = pooled + fields.mean(dim=1)
        return pooled, dict(cross=cross, token_weights=tok_w, reverse=reverse)

    def pool_slices(self, pooled: Tensor, maps: dict, mask: Tensor, grid: tuple[int, int],
                    self_attentions: list[Tensor] | None = None, *, maps_scattered: bool = False
                    ) -> tuple[Tensor, dict]:
        """The per-case half of the image branch: slice embeddings (n, D) of the slices where ``mask``
        (B, S) is True (row-major order) and their :meth:`slice_embeddings` maps -> image embedding (B, D)
        (gated-attention pooling over slices) and the model output's image extras (maps scattered to
        (B, S, ...)). ``maps_scattered``: the maps are already (B, S, ...) (zeros off the mask), as a caller
        that fills them chunk by chunk has them; they are used as they are, without a copy."""
        b, s = mask.shape
        b_idx, s_idx = mask.nonzero(as_tuple=True)
        scatter = lambda t: t.new_zeros(b, s, *t.shape[1:]).index_put((b_idx, s_idx), t)  # noqa: E731
        slice_emb = scatter(pooled)
        image_embedding, slice_w = self.slice_pool(slice_emb, mask)
        if not maps_scattered:
            maps = {key: None if value is None else scatter(value) for key, value in maps.items()}
        cross = maps["cross"]
        extra = dict(slice_mask=mask, slice_weights=slice_w, grid=grid, self_attentions=self_attentions,
                     token_weights=maps["token_weights"], cross_attention=cross)
        if maps["reverse"] is not None:
            extra["reverse_attention"] = maps["reverse"]
        if cross is not None:
            per_slice = cross.mean(dim=(2, 3))                     # (B, S, F)
            extra["clinical_attention"] = (slice_w.unsqueeze(-1) * per_slice).sum(1)
        return image_embedding, extra

    def _image_branch(self, enc: ImageEncoding, clin: Tensor | None) -> tuple[Tensor, dict]:
        """Per real slice: (fusion) + token pooling; then MIL pooling over slices -> (B, D)."""
        tokens, mask = enc.tokens, enc.slice_mask
        b_idx, s_idx = mask.nonzero(as_tuple=True)
        pooled, maps = self.slice_embeddings(tokens[b_idx, s_idx], clin, b_idx)
        return self.pool_slices(pooled, maps, mask, enc.grid, enc.self_attentions)


def _batch_size(images: Tensor | None, clin_values: Tensor | None) -> int:
    if images is not None:
        return int(images.shape[0])
    if clin_values is not None:
        return int(clin_values.shape[0])
    raise ValueError("give images, clinical values, or both")


def _default_present(images: Tensor | None, image_present: Tensor | None, batch: int) -> Tensor | None:
    if image_present is not None:
        return image_present.to(torch.bool)
    if images is not None:
        return torch.ones(batch, dtype=torch.bool, device=images.device)
    return None


def _check_images(images: Tensor, slice_mask: Tensor | None, image_present: Tensor | None
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Validate shapes; 4-D (B, 1, H, W) becomes (B, 1, 1, H, W). Returns images, slice_mask, present."""
    if images.ndim == 4:
        images = images.unsqueeze(1)
    if images.ndim != 5 or images.shape[2] != 1:
        raise ValueError(f"images must be (B, S, 1, H, W) or (B, 1, H, W), got {tuple(images.shape)}")
    b, s = images.shape[:2]
    if slice_mask is None:
        slice_mask = torch.ones(b, s, dtype=torch.bool, device=images.device)
    if tuple(slice_mask.shape) != (b, s):
        raise ValueError(f"slice_mask must be (B, S) = {(b, s)}, got {tuple(slice_mask.shape)}")
    present = torch.ones(b, dtype=torch.bool, device=images.device) if image_present is None else image_present
    if tuple(present.shape) != (b,):
        raise ValueError(f"image_present must be (B,) = ({b},), got {tuple(present.shape)}")
    slice_mask, present = slice_mask.to(torch.bool), present.to(torch.bool)
    empty = present & ~slice_mask.any(1)
    if bool(empty.any()):
        raise ValueError(f"case(s) {empty.nonzero().flatten().tolist()} have image_present True but no real "
                         "slice in slice_mask")
    return images, slice_mask, present
