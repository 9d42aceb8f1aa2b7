"""Grad-CAM++ of the multimodal model for 2D images and volumes. Research use, not for diagnosis.

What is computed (Chattopadhay et al. 2018, with pytorch-grad-cam's weighting, ``GradCAMPlusPlus``):
for the class score y = logit of the target class of a case, A = the target layer's activations of one
slice (C, h, w) and g = dy/dA,

    alpha = g^2 / (2 g^2 + sum_ab(A) g^3 + 1e-6)   (0 where g == 0),   w_c = sum_ab relu(g) alpha
    raw map = relu(sum_c w_c A_c)                                                    (h, w) per slice

* **The clinical input is bound** (:class:`ClinicalBoundModel`, an ``nn.Module`` taking one tensor, what
  pytorch-grad-cam calls): the maps explain the multimodal prediction for this patient's clinical facts.
* **One target per sample**: every case of a batch has its own target class and its own score; the sum of
  the per-case scores is differentiated, and since cases are computed independently (eval mode) each
  case's gradient is its own score's.
* **Volumes**: one forward over the whole volume; y is the CASE score, so the gradient reaching a slice
  has gone through the gated-attention slice pooling (slices that matter little get small maps). The
  maps are raw per slice (never min-max scaled per slice or per image).
* **Chunks of slices** (bounded memory). Default target (the CNN output): the CNN runs without a graph
  (its feature maps are kept up to ``FEATURE_BUDGET_MIB``, re-computed beyond); chunk by chunk, the
  encoder above it and the per-slice half of the decoder (fusion, token pooling) give every slice's
  embedding, with a graph for the last chunk only; slice pooling and head give the case score and its
  gradient per slice embedding; every other chunk re-runs the encoder above the CNN with a graph for its
  vector-Jacobian product (``_from_features``). The graph held at any time is one chunk's; what grows
  with the volume is what the explanation returns (tokens for the Shapley values, per-slice attention
  maps, the maps themselves), written chunk by chunk into their final tensors, and the kept feature maps
  up to the budget. Other target layers: pass 1 encodes without a graph, pass 2 differentiates
  the decoder with respect to all image tokens, pass 3 re-encodes each chunk (``_chunked``; one pass when
  all slices fit in a chunk). By the chain rule both are the gradient of one backward pass through the
  whole volume: chunked equals unchunked and pytorch-grad-cam's own backward (tested to 1e-5).
* **Normalisation** with a scale fixed per model (:func:`calibrate_cam_scale`: the 99th percentile of raw
  map values over validation cases, stored in checkpoint metadata under ``explain.cam_scale``), so a
  case with little evidence shows little heat; ``"case"`` divides by the maximum over the whole case
  (volume), never per slice.
* Maps at feature resolution (h, w) are upsampled bilinearly (``align_corners=False``: cell centres on
  pixel centres) to the model input size (H, W), per slice.

Hooks live only while a :class:`GradCAMPlusPlusExplainer` is entered as a context manager (or for the
duration of one call when it is not): no hook is left on the model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmxai_core.model.outputs import ImageEncoding, ModelOutput

GRADCAMPP_EPS = 1e-6
"""The eps in the alpha denominator (as in pytorch-grad-cam 1.5.x)."""
NORMALISE_MODES = ("model", "case")
DEFAULT_PERCENTILE = 99.0
CAM_SCALE_KEY = "explain.cam_scale"
#: Slices per CNN call in the graph-free feature pass on a CPU: the trunk's activations of a few 256 px
#: slices stay in cache; measured on one core, 1-2 slices per call ran 29 ms per slice against 37-43 ms
#: with 16 (eval mode: BatchNorm uses running statistics, so slices are independent). GPUs take the chunk.
CPU_CNN_BATCH = 2
#: The CNN feature maps a volume keeps between the two passes of ``_from_features``, in MiB. Kept maps spare
#: a second CNN pass over their slices (per-slice time 0.96x a single slice's at 128 slices of 256 x 256
#: instead of about 1.2x); beyond the budget the CNN runs again, so the peak memory of a longer volume
#: grows only by its results (tokens, attention maps: BENCHMARKS.md, section 2). 64 MiB keep 128 slices of
#: 256 x 256 of the tiny preset (0.5 MiB each), 256 slices of the base preset.
FEATURE_BUDGET_MIB = 64.0

ReshapeTransform = Callable[[Tensor, tuple[int, int]], Tensor]


# ------------------------------------------------------------------------------------------ bound model
class ClinicalBoundModel(nn.Module):
    """The model with its clinical input (and slice mask) bound: ``forward(images) -> logits (B, C)``.

    Args:
        model: a :class:`~mmxai_core.model.MultimodalClassifier` with an image branch.
        clin_values: (B, F) or (1, F) float32 (categorical codes as floats); ``None`` for ``image_only``.
        clin_missing: (B, F) or (1, F) bool; ``None`` = NaN values are missing.
        slice_mask: (B, S) bool, True = real slice; ``None`` = all real.
        image_present: (B,) bool; ``None`` = all present.
        slice_chunk: slices per image-encoder call (``None``: the model's config).

    ``images`` is (B, S, 1, H, W) or (B, 1, H, W) (one slice). This is the one-tensor model
    pytorch-grad-cam and its metrics expect.
    """

    def __init__(self, model: nn.Module, clin_values: Tensor | None = None, clin_missing: Tensor | None = None,
                 slice_mask: Tensor | None = None, image_present: Tensor | None = None,
                 slice_chunk: int | None = None):
        super().__init__()
        if not getattr(model, "uses_image", False):
            raise ValueError(f"model variant {getattr(model, 'variant', '?')!r} has no image branch to explain")
        self.model = model
        device = _device(model)
        self.clin_values = None if clin_values is None else torch.as_tensor(clin_values, dtype=torch.float32,
                                                                               device=device)
        self.clin_missing = None if clin_missing is None else torch.as_tensor(clin_missing, dtype=torch.bool,
                                                                                 device=device)
        if self.clin_values is not None and self.clin_values.ndim == 1:
            self.clin_values = self.clin_values[None]
        if self.clin_missing is not None and self.clin_missing.ndim == 1:
            self.clin_missing = self.clin_missing[None]
        self.slice_mask = slice_mask
        self.image_present = image_present
        self.slice_chunk = slice_chunk

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images, self.slice_mask, self.image_present, self.clin_values, self.clin_missing,
                          slice_chunk=self.slice_chunk).logits

    def rows(self, batch: int) -> tuple[Tensor | None, Tensor | None]:
        """The bound clinical values and missing mask, (B, F) each, broadcast to an image batch of B."""
        values, missing = self.clin_values, self.clin_missing
        if values is None:
            return None, None
        if missing is None:
            missing = torch.isnan(values)
        if values.shape[0] not in (1, batch) or missing.shape[0] not in (1, batch):
            raise ValueError(f"batch of images ({batch}) and clinical rows ({values.shape[0]}) differ")
        return values.expand(batch, -1), missing.expand(batch, -1)

    def decode(self, encoding: ImageEncoding) -> ModelOutput:
        """Clinical branch, fusion, pooling and head on an image encoding, with the bound clinical rows."""
        return self.model.decode(encoding, self.clin_values, self.clin_missing)


# ------------------------------------------------------------------------------------------ the weights
def gradcampp_weights(activations: Tensor, grads: Tensor, eps: float = GRADCAMPP_EPS) -> Tensor:
    """Grad-CAM++ channel weights, pytorch-grad-cam's formula (``GradCAMPlusPlus.get_cam_weights``).

    Args:
        activations: (n, C, *spatial) target-layer activations A.
        grads: (n, C, *spatial) gradients dy/dA.

    Returns:
        (n, C) weights ``sum_spatial(relu(g) * alpha)``, alpha = g^2 / (2 g^2 + sum_spatial(A) g^3 + eps),
        alpha = 0 where g == 0.
    """
    axes = tuple(range(2, activations.ndim))
    g2 = grads * grads
    g3 = g2 * grads
    sum_a = activations.sum(dim=axes, keepdim=True)
    alpha = g2 / (2 * g2 + sum_a * g3 + eps)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return (grads.clamp_min(0) * alpha).sum(dim=axes)


def cam_from_gradients(activations: Tensor, grads: Tensor) -> Tensor:
    """Raw Grad-CAM++ maps (n, *spatial) = relu(sum_c w_c A_c) from (n, C, *spatial) A and dy/dA."""
    a, g = activations.float(), grads.float()
    weights = gradcampp_weights(a, g)
    cam = (weights.reshape(*weights.shape, *([1] * (a.ndim - 2))) * a).sum(dim=1)
    return cam.clamp_min(0)


def tokens_to_grid(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """``reshape_transform`` for transformer tokens: (n, N = h*w, D) row-major -> (n, D, h, w)."""
    n, count, dim = tokens.shape
    h, w = grid
    if count != h * w:
        raise ValueError(f"{count} tokens do not fill the {h}x{w} token grid")
    return tokens.transpose(1, 2).reshape(n, dim, h, w)


# ------------------------------------------------------------------------------------------ result
@dataclasses.dataclass
class CamResult:
    """Grad-CAM++ of a batch (CPU tensors).

    raw:          (B, S, h, w) float32 raw maps (relu'd, un-normalised) at feature resolution; 0 on padded
                  slices and for cases without an image. Units: those of A x dy/dA (logit units).
    target_class: (B,) int64 class explained per case.
    score:        (B,) float32 the target class logit per case.
    output:       the model's :class:`ModelOutput` for the batch (detached; ``self_attentions`` only if
                  asked for).
    slice_mask:   (B, S) bool, slices that have a map (real slices of cases with an image).
    grid:         (h, w) feature grid of the target layer.
    input_size:   (H, W) model input size.
    layer:        name of the target layer in the model.
    encoding:     the batch's :class:`ImageEncoding` (detached, on the model's device, no self-attentions):
                  hand it to :class:`~mmxai_core.explain.value_function.CoalitionValue` (``encoding=``) so
                  the Shapley values do not encode the image again.
    """

    raw: Tensor
    target_class: Tensor
    score: Tensor
    output: ModelOutput
    slice_mask: Tensor
    grid: tuple[int, int]
    input_size: tuple[int, int]
    layer: str
    encoding: ImageEncoding | None = None

    @property
    def probs(self) -> Tensor:
        """(B, C) class probabilities."""
        return self.output.probs

    def upsampled(self) -> Tensor:
        """(B, S, H, W) raw maps upsampled bilinearly to the model input size."""
        return upsample_maps(self.raw, self.input_size)

    def normalised(self, mode: str = "model", scale: float | None = None) -> Tensor:
        """(B, S, H, W) maps in [0, 1]: see :func:`normalise_maps`."""
        return normalise_maps(self.upsampled(), mode, scale)


def upsample_maps(maps: Tensor | np.ndarray, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling (``align_corners=False``) of (..., h, w) maps to (..., H, W), per slice.

    A non-negative map stays non-negative (each output is a convex combination of inputs).
    """
    maps = torch.as_tensor(maps)
    lead, (h, w) = maps.shape[:-2], maps.shape[-2:]
    if (h, w) == tuple(size):
        return maps.float().clone()
    flat = maps.reshape(-1, 1, h, w).float()
    if flat.shape[0] == 0:
        return flat.new_zeros(*lead, *size)
    return F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False).reshape(*lead, *size)


def normalise_maps(maps: Tensor | np.ndarray, mode: str = "model", scale: float | None = None) -> Tensor:
    """Raw Grad-CAM++ maps (B, S, H, W) -> [0, 1].

    * ``"model"``: ``clip(maps / scale, 0, 1)`` with the model's fixed ``scale``
      (:func:`calibrate_cam_scale`): comparable across cases; weak evidence stays faint.
    * ``"case"``: divided by the maximum over each case (the whole volume, all slices at once, never per
      slice); an all-zero case stays zero. ``scale`` is ignored.
    """
    maps = torch.as_tensor(maps).float()
    if mode == "model":
        if scale is None or not math.isfinite(float(scale)) or float(scale) <= 0:
            raise ValueError(f"normalise='model' needs a positive, finite cam scale (the checkpoint's "
                             f"'{CAM_SCALE_KEY}', see calibrate_cam_scale), got {scale!r}; or use "
                             "normalise='case'")
        return (maps / float(scale)).clamp(0.0, 1.0)
    if mode == "case":
        if maps.ndim < 2:
            raise ValueError(f"maps must have a case axis first, got shape {tuple(maps.shape)}")
        peak = maps.reshape(maps.shape[0], -1).amax(dim=1) if maps.numel() else maps.new_zeros(maps.shape[0])
        peak = torch.where(peak > 0, peak, torch.ones_like(peak))
        return (maps / peak.reshape(-1, *([1] * (maps.ndim - 1)))).clamp(0.0, 1.0)
    raise ValueError(f"normalise must be one of {NORMALISE_MODES}, got {mode!r}")


# ------------------------------------------------------------------------------------------ explainer
class GradCAMPlusPlusExplainer:
    """Grad-CAM++ of the multimodal model (see the module docstring); use as a context manager::

        with GradCAMPlusPlusExplainer(model) as cam:
            result = cam(images, clin_values, clin_missing, slice_mask=mask, target_class=1)
        heat = result.normalised("model", scale)              # (B, S, H, W) in [0, 1]

    Args:
        model: a :class:`~mmxai_core.model.MultimodalClassifier` with an image branch.
        target_layer: a module inside ``model.image_encoder`` or its dotted name; default the CNN trunk's
            last feature map ``model.image_encoder.cam_layer``. A module returning a tuple (a transformer
            block) is read at element 0.
        reshape_transform: turns the layer output into (n, C, h, w): ``None`` (already so), ``"tokens"``
            (:func:`tokens_to_grid`, for transformer blocks), or a callable ``(tensor, grid) -> tensor``.
        slice_chunk: slices per image-encoder call (default the model's ``config.slice_chunk``).
        feature_budget_mib: how many MiB of CNN feature maps a volume may keep between the passes (default
            :data:`FEATURE_BUDGET_MIB`); the chunks beyond it run the CNN again (about 1.3x their time),
            so the memory an explanation needs stops growing with the volume there. 0 = never keep.
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str | None = None,
                 reshape_transform: ReshapeTransform | str | None = None, slice_chunk: int | None = None,
                 feature_budget_mib: float = FEATURE_BUDGET_MIB):
        if not getattr(model, "uses_image", False):
            raise ValueError(f"model variant {getattr(model, 'variant', '?')!r} has no image branch to explain")
        self.model = model
        if target_layer is None:
            target_layer = model.gradcam_layer
        elif isinstance(target_layer, str):
            target_layer = model.get_submodule(target_layer)
        if not any(target_layer is m for m in model.image_encoder.modules()):
            raise ValueError("the Grad-CAM++ target layer must be a module inside model.image_encoder")
        self.target_layer = target_layer
        self.layer_name = next(n for n, m in model.named_modules() if m is target_layer)
        if reshape_transform == "tokens":
            reshape_transform = tokens_to_grid
        elif isinstance(reshape_transform, str):
            raise ValueError(f"reshape_transform must be None, 'tokens' or a callable, got {reshape_transform!r}")
        self.reshape_transform = reshape_transform
        chunk = model.config.slice_chunk if slice_chunk is None else int(slice_chunk)
        if chunk < 1:
            raise ValueError(f"slice_chunk must be >= 1, got {chunk}")
        self.slice_chunk = chunk
        if not float(feature_budget_mib) >= 0:
            raise ValueError(f"feature_budget_mib must be >= 0, got {feature_budget_mib!r}")
        self.feature_budget_mib = float(feature_budget_mib)
        self._handle = None
        self._entered = False
        self._armed = False
        self._captured: list[tuple[Tensor, int]] = []

    # -------------------------------------------------------------- hooks
    def __enter__(self) -> "GradCAMPlusPlusExplainer":
        self._attach()
        self._entered = True
        return self

    def __exit__(self, *exc: Any) -> bool:
        self._entered = False
        self._detach()
        return False

    def close(self) -> None:
        """Remove the hook (what leaving the ``with`` block does)."""
        self._entered = False
        self._detach()

    def _attach(self) -> None:
        if self._handle is None:
            self._handle = self.target_layer.register_forward_hook(self._hook)

    def _detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._captured.clear()
        self._armed = False

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self._armed:
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            self._captured.append((tensor, tensor._version))

    def _take_capture(self) -> Tensor:
        if len(self._captured) != 1:
            raise RuntimeError(f"the target layer {self.layer_name!r} ran {len(self._captured)} times in one "
                               "image-encoder call; choose a layer that runs once")
        tensor, version = self._captured.pop()
        if tensor._version != version:
            raise RuntimeError(f"the output of the target layer {self.layer_name!r} was modified in place by a "
                               "later operation; choose another layer")
        return tensor

    # -------------------------------------------------------------- main
    def __call__(self, images: Tensor, clin_values: Tensor | None = None, clin_missing: Tensor | None = None,
                 *, slice_mask: Tensor | None = None, image_present: Tensor | None = None,
                 target_class: int | Sequence[int] | Tensor | None = None,
                 return_attentions: bool = False) -> CamResult:
        """Grad-CAM++ maps of a batch.

        Args:
            images: (B, S, 1, H, W) or (B, 1, H, W) float, the preprocessed model input.
            clin_values, clin_missing: (B, F) or (1, F) clinical arrays (``None`` for ``image_only``).
            slice_mask: (B, S) bool, True = real slice (default all); image_present: (B,) bool.
            target_class: ``None`` = the positive class (1) of a binary model, the predicted class
                otherwise; an int for all cases; or one class per case.
            return_attentions: also keep the image self-attentions (for attention rollout).
        """
        model = self.model
        device = _device(model)
        images, slice_mask, present = _normalise_inputs(images, slice_mask, image_present, device)
        bound = ClinicalBoundModel(model, clin_values, clin_missing, slice_mask, present, self.slice_chunk)
        was_training = model.training
        own_hook = not self._entered
        model.eval()
        if own_hook:
            self._attach()
        try:
            b_idx, s_idx = (slice_mask & present[:, None]).nonzero(as_tuple=True)
            if len(b_idx) and self.target_layer is model.image_encoder.cam_layer:
                out, targets, score, cams, grid, enc = self._from_features(bound, images, slice_mask, present,
                                                                           target_class, return_attentions)
            elif len(b_idx) <= self.slice_chunk:
                out, targets, score, cams, grid, enc = self._one_pass(bound, images, slice_mask, present,
                                                                      b_idx, target_class, return_attentions)
            else:
                out, targets, score, cams, grid, enc = self._chunked(bound, images, slice_mask, present,
                                                                     b_idx, s_idx, target_class, return_attentions)
        finally:
            self._armed = False
            self._captured.clear()
            if own_hook:
                self._detach()
            model.train(was_training)
        b, s = slice_mask.shape
        raw = torch.zeros(b, s, *grid, dtype=torch.float32)
        if len(b_idx):
            raw[b_idx.cpu(), s_idx.cpu()] = cams.detach().float().cpu()
        return CamResult(raw=raw, target_class=targets.cpu(), score=score.detach().float().cpu(),
                         output=_detached(out), slice_mask=(slice_mask & present[:, None]).cpu(), grid=grid,
                         input_size=(int(images.shape[-2]), int(images.shape[-1])), layer=self.layer_name,
                         encoding=ImageEncoding(enc.tokens.detach(), enc.slice_mask, enc.image_present, enc.grid,
                                                None))

    def _grid_maps(self, act: Tensor, grad: Tensor, grid: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        if self.reshape_transform is not None:
            act, grad = self.reshape_transform(act, grid), self.reshape_transform(grad, grid)
        if act.ndim != 4:
            raise ValueError(f"target layer activations must be (n, C, h, w) after reshape_transform, got "
                             f"{tuple(act.shape)}; tokens need reshape_transform='tokens'")
        return cam_from_gradients(act.detach(), grad.detach()), (int(act.shape[-2]), int(act.shape[-1]))

    def _one_pass(self, bound, images, slice_mask, present, b_idx, target_class, return_attentions):
        """All real slices in one encoder call: one forward, one backward to the target layer."""
        model = self.model
        n = len(b_idx)
        x = images.detach().requires_grad_(n > 0)  # a graph even if the parameters are frozen
        self._captured.clear()
        self._armed = n > 0
        with torch.enable_grad():
            enc = model.encode_image(x, slice_mask, present, return_attentions=return_attentions,
                                     slice_chunk=max(n, 1))
            self._armed = False
            out = bound.decode(enc)
            targets = resolve_targets(target_class, out.logits)
            score = out.logits.gather(1, targets[:, None]).squeeze(1)
            if n == 0:
                return out, targets, score, None, enc.grid, enc
            act = self._take_capture()
            (grad,) = torch.autograd.grad(score.sum(), act)
        cams, grid = self._grid_maps(act, grad, enc.grid)
        return out, targets, score, cams, grid, enc

    def _from_features(self, bound, images, slice_mask, present, target_class, return_attentions):
        """The default target (the CNN output): memory bounded by one chunk's graph; the CNN never builds one.

        Pass 1, chunk by chunk of real slices: the CNN feature map A (no graph; kept while the kept maps fit
        in ``feature_budget_mib``), the encoder above it and the per-slice half of the decoder (fusion,
        token pooling: ``model.slice_embeddings``) give each slice's embedding e_s (D,); tokens and maps go
        straight into their (B, S, ...) result tensors; only the LAST chunk keeps its graph, from its leaf A.
        Pass 2: the per-case half (slice pooling, head) on all e_s -> score -> d score / d A of the last
        chunk and d score / d e_s of the others. Pass 3: for every other chunk, A again (kept, or the CNN
        re-run where it did not fit the budget), the encoder above the CNN and the slice half with a graph,
        and the vector-Jacobian product of d score / d e_s back to A. By the chain rule this is the gradient
        of one backward pass through the whole case (tested); a case of at most ``slice_chunk`` slices is one
        forward and one backward pass.
        """
        model, encoder, chunk = self.model, self.model.image_encoder, self.slice_chunk
        real = slice_mask & present[:, None]
        b_idx, s_idx = real.nonzero(as_tuple=True)
        clin = model.clinical_tokens(*bound.rows(images.shape[0]))    # (B, F, D) or None
        starts = list(range(0, len(b_idx), chunk))
        acts, pooled, leaves = [], [], []
        enc = maps = None
        kept_bytes, budget = 0, self.feature_budget_mib * 2 ** 20
        self._armed = False
        for k, start in enumerate(starts):
            sel = slice(start, start + chunk)
            rows = (b_idx[sel], s_idx[sel])
            last = k == len(starts) - 1
            act = self._features(images[rows]).requires_grad_(last)
            with torch.set_grad_enabled(last):
                toks, grid, att = encoder.tokens_from_features(act, return_attentions)
                emb, mp = model.slice_embeddings(toks, clin, b_idx[sel])
            if enc is None:                         # the result tensors, filled chunk by chunk (no copies)
                enc = model.encoding_buffer(images, slice_mask, present, toks.shape[1], toks.dtype,
                                            return_attentions, grid)
                maps = {key: None if v is None else v.new_zeros(*slice_mask.shape, *v.shape[1:])
                        for key, v in mp.items()}
            with torch.no_grad():
                enc.tokens[rows] = toks
                for full, part in zip(enc.self_attentions or [], att or []):
                    full[rows] = part
                for key, v in mp.items():
                    if v is not None:
                        maps[key][rows] = v
            if not last:
                emb = emb.detach().requires_grad_(True)       # a leaf: pass 2 gives d score / d e_s
            keep = last or kept_bytes + act.nbytes <= budget
            kept_bytes += act.nbytes if keep and not last else 0
            acts.append(act if keep else None)
            pooled.append(emb)
            leaves.append(act if last else emb)
            del toks, att, mp
        with torch.enable_grad():
            emb_all = _with_missing_image_slices(model, enc, real, clin, pooled, maps)
            image_embedding, extra = model.pool_slices(emb_all, maps, enc.slice_mask, enc.grid,
                                                       enc.self_attentions, maps_scattered=True)
            out = model.finish(image_embedding, extra, clin, enc.image_present)
            targets = resolve_targets(target_class, out.logits)
            score = out.logits.gather(1, targets[:, None]).squeeze(1)
            grads = torch.autograd.grad(score.sum(), leaves)
        parts = []
        for k, g in enumerate(grads):
            act, acts[k] = acts[k], None                       # release each feature map once used
            if k < len(starts) - 1:
                sel = slice(starts[k], starts[k] + chunk)
                if act is None:                                 # beyond the feature budget: the CNN again
                    act = self._features(images[b_idx[sel], s_idx[sel]])
                act = act.detach().requires_grad_(True)
                with torch.enable_grad():
                    toks, _, _ = encoder.tokens_from_features(act)
                    emb, _ = model.slice_embeddings(toks, clin, b_idx[sel])
                    (g,) = torch.autograd.grad(emb, act, grad_outputs=g)
            cams, grid = self._grid_maps(act, g, enc.grid)
            parts.append(cams)
        return out, targets, score, torch.cat(parts), grid, enc

    def _features(self, x: Tensor) -> Tensor:
        """The CNN feature maps A (n, C, h, w) of n slices (n, 1, H, W), without a graph; on a CPU a few
        slices per call (``CPU_CNN_BATCH``)."""
        trunk, cam_layer = self.model.image_encoder.trunk, self.model.image_encoder.cam_layer
        step = len(x) if x.device.type != "cpu" else CPU_CNN_BATCH
        with torch.no_grad():
            if step >= len(x):
                return cam_layer(trunk(x)[-1])
            return torch.cat([cam_layer(trunk(x[i:i + step])[-1]) for i in range(0, len(x), step)])

    def _chunked(self, bound, images, slice_mask, present, b_idx, s_idx, target_class, return_attentions):
        """A target layer other than the default, in chunks. Pass 1: encode without a graph; pass 2: d score /
        d tokens; pass 3: per chunk, re-encode with a graph and pull the token gradient back to the layer
        (vector-Jacobian product)."""
        model, chunk = self.model, self.slice_chunk
        self._captured.clear()
        self._armed = False
        with torch.no_grad():
            enc = model.encode_image(images, slice_mask, present, return_attentions=return_attentions,
                                     slice_chunk=chunk)
        tokens = enc.tokens.detach().requires_grad_(True)
        with torch.enable_grad():
            out = bound.decode(ImageEncoding(tokens, enc.slice_mask, enc.image_present, enc.grid,
                                             enc.self_attentions))
            targets = resolve_targets(target_class, out.logits)
            score = out.logits.gather(1, targets[:, None]).squeeze(1)
            (token_grad,) = torch.autograd.grad(score.sum(), tokens)
        parts, grid = [], enc.grid
        for start in range(0, len(b_idx), chunk):
            sel = slice(start, start + chunk)
            x = images[b_idx[sel], s_idx[sel]].detach().requires_grad_(True)
            self._captured.clear()
            self._armed = True
            with torch.enable_grad():
                toks, tok_grid, _ = model.image_encoder(x)
                self._armed = False
                act = self._take_capture()
                (grad,) = torch.autograd.grad(toks, act, grad_outputs=token_grad[b_idx[sel], s_idx[sel]])
            cams, grid = self._grid_maps(act, grad, tok_grid)
            parts.append(cams)
        return out, targets, score, torch.cat(parts), grid, enc


def _with_missing_image_slices(model: nn.Module, enc: ImageEncoding, real: Tensor, clin: Tensor | None,
                               pooled: list[Tensor], maps: dict) -> Tensor:
    """Slice embeddings of every slice in ``enc.slice_mask`` (row-major): the real slices' from ``pooled``
    (chunk order = row-major order of ``real``) and, for cases without an image, those of the missing-image
    token (computed here, their maps written into the (B, S, ...) ``maps``; no gradient is needed through
    them)."""
    emb = torch.cat(pooled)
    extra = enc.slice_mask & ~real
    if not bool(extra.any()):
        return emb
    mb, ms = extra.nonzero(as_tuple=True)
    with torch.no_grad():
        m_emb, m_maps = model.slice_embeddings(enc.tokens[mb, ms], clin, mb)
        for key, v in m_maps.items():
            if v is not None:
                maps[key][mb, ms] = v
    where_real = real[enc.slice_mask]                # (n_mask,) True where the mask entry is a real slice
    full = emb.new_zeros(len(where_real), *emb.shape[1:])
    full[where_real] = emb
    full[~where_real] = m_emb
    return full


def gradcam_plus_plus(model: nn.Module, images: Tensor, clin_values: Tensor | None = None,
                      clin_missing: Tensor | None = None, **kwargs: Any) -> CamResult:
    """One-shot :class:`GradCAMPlusPlusExplainer` call; ``kwargs`` go to the constructor (``target_layer``,
    ``reshape_transform``, ``slice_chunk``) or the call (``slice_mask``, ``image_present``,
    ``target_class``, ``return_attentions``)."""
    ctor = {k: kwargs.pop(k) for k in ("target_layer", "reshape_transform", "slice_chunk") if k in kwargs}
    with GradCAMPlusPlusExplainer(model, **ctor) as cam:
        return cam(images, clin_values, clin_missing, **kwargs)


def resolve_targets(target_class: int | Sequence[int] | Tensor | None, logits: Tensor) -> Tensor:
    """(B,) int64 target classes: ``None`` -> 1 for a binary model, else the argmax of ``logits``."""
    b, c = logits.shape
    if target_class is None:
        targets = torch.ones(b, dtype=torch.long) if c == 2 else logits.detach().argmax(1).cpu()
    elif isinstance(target_class, (int, np.integer)):
        targets = torch.full((b,), int(target_class), dtype=torch.long)
    else:
        targets = torch.as_tensor(target_class, dtype=torch.long).reshape(-1).cpu()
        if targets.numel() != b:
            raise ValueError(f"target_class gives {targets.numel()} classes for a batch of {b} (one per case)")
    if bool(((targets < 0) | (targets >= c)).any()):
        raise ValueError(f"target_class {targets.tolist()} outside 0..{c - 1}")
    return targets.to(logits.device)


# ------------------------------------------------------------------------------------------ scale
def calibrate_cam_scale(model: nn.Module, cases: Iterable[Any], *, percentile: float = DEFAULT_PERCENTILE,
                        target_class: int | None = None, target_layer: nn.Module | str | None = None,
                        reshape_transform: ReshapeTransform | str | None = None,
                        slice_chunk: int | None = None) -> float:
    """The model's fixed Grad-CAM++ normalisation scale: the ``percentile`` of all raw map values.

    Args:
        cases: batches (validation cases), each a mapping or object with ``images``, ``clin_values``,
            ``clin_missing`` and optionally ``slice_mask``, ``image_present`` (a
            :class:`~mmxai_core.data.dataset.Batch` fits), or a tuple ``(images, clin_values, clin_missing)``.
        percentile: in (0, 100]; pooled over the raw feature-resolution map values of every real slice
            of every case with an image.
        target_class: as in :meth:`GradCAMPlusPlusExplainer.__call__` (default: the positive class).

    Returns:
        The scale (> 0, logit units); store it as ``explain.cam_scale`` in the checkpoint metadata. If the
        percentile is 0 (mostly empty maps), the maximum is used.

    Raises:
        ValueError: no case with an image, or every map is zero.
    """
    if not 0.0 < float(percentile) <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    values: list[np.ndarray] = []
    with GradCAMPlusPlusExplainer(model, target_layer, reshape_transform, slice_chunk) as cam:
        for case in cases:
            images, clin_values, clin_missing, slice_mask, present = _case_fields(case)
            result = cam(images, clin_values, clin_missing, slice_mask=slice_mask, image_present=present,
                         target_class=target_class)
            values.append(result.raw[result.slice_mask].reshape(-1).numpy())
    pooled = np.concatenate(values) if values else np.zeros(0, np.float32)
    if pooled.size == 0:
        raise ValueError("calibrate_cam_scale: no case with an image")
    scale = float(np.percentile(pooled, float(percentile)))
    if not scale > 0:
        scale = float(pooled.max())
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError("calibrate_cam_scale: every Grad-CAM++ map is zero (untrained or dead model?)")
    return scale


def cam_scale_from_metadata(metadata: Mapping[str, Any]) -> float | None:
    """``explain.cam_scale`` from checkpoint metadata (nested ``{"explain": {"cam_scale": x}}`` or the
    dotted key), or ``None`` when absent."""
    value = None
    explain = metadata.get("explain") if isinstance(metadata, Mapping) else None
    if isinstance(explain, Mapping):
        value = explain.get("cam_scale")
    if value is None and isinstance(metadata, Mapping):
        value = metadata.get(CAM_SCALE_KEY)
    if value is None:
        return None
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"checkpoint metadata '{CAM_SCALE_KEY}' must be a positive number, got {value!r}")
    return value


# ------------------------------------------------------------------------------------------ helpers
def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _normalise_inputs(images: Tensor, slice_mask: Tensor | None, image_present: Tensor | None,
                      device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """images -> (B, S, 1, H, W) float on ``device``; default slice mask and presence (all True)."""
    images = torch.as_tensor(images)
    if images.ndim == 4:
        images = images.unsqueeze(1)
    if images.ndim != 5 or images.shape[2] != 1:
        raise ValueError(f"images must be (B, S, 1, H, W) or (B, 1, H, W), got {tuple(images.shape)}")
    images = images.to(device=device, dtype=torch.float32)
    b, s = images.shape[:2]
    mask = torch.ones(b, s, dtype=torch.bool) if slice_mask is None else torch.as_tensor(slice_mask)
    present = torch.ones(b, dtype=torch.bool) if image_present is None else torch.as_tensor(image_present)
    if tuple(mask.shape) != (b, s):
        raise ValueError(f"slice_mask must be (B, S) = {(b, s)}, got {tuple(mask.shape)}")
    if tuple(present.shape) != (b,):
        raise ValueError(f"image_present must be (B,) = ({b},), got {tuple(present.shape)}")
    return images, mask.to(device=device, dtype=torch.bool), present.to(device=device, dtype=torch.bool)


def _case_fields(case: Any) -> tuple[Any, Any, Any, Any, Any]:
    if isinstance(case, (tuple, list)):
        if len(case) != 3:
            raise ValueError("a case tuple must be (images, clin_values, clin_missing)")
        return case[0], case[1], case[2], None, None
    get = case.get if isinstance(case, Mapping) else (lambda k, d=None: getattr(case, k, d))
    if get("images") is None:
        raise ValueError("each case needs 'images'")
    return get("images"), get("clin_values"), get("clin_missing"), get("slice_mask"), get("image_present")


def _detached(out: ModelOutput) -> ModelOutput:
    def cut(v: Any) -> Any:
        if isinstance(v, Tensor):
            return v.detach().cpu()
        if isinstance(v, list):
            return [cut(t) for t in v]
        return v
    return ModelOutput(**{f.name: cut(getattr(out, f.name)) for f in dataclasses.fields(out)})


__all__ = ["ClinicalBoundModel", "GradCAMPlusPlusExplainer", "CamResult", "gradcam_plus_plus",
           "gradcampp_weights", "cam_from_gradients", "tokens_to_grid", "upsample_maps", "normalise_maps",
           "resolve_targets", "calibrate_cam_scale", "cam_scale_from_metadata", "GRADCAMPP_EPS",
           "NORMALISE_MODES", "CAM_SCALE_KEY", "FEATURE_BUDGET_MIB"]
