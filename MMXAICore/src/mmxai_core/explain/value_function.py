"""The model-bound value function of the clinical-field game (research use, not for diagnosis).

For one case, with the image held fixed:

    v(S) = the model's output for the explained class when the clinical fields in S keep their entered
           values and every other field is set to "unknown" (``clin_missing=True``, the field's learned
           unknown embedding; DESIGN.md "Absent means unknown").

The output is, by default, the **probability** of the explained class (``output="probability"``), the
number the panel shows; ``output="log_odds"`` gives ``log p_t - log(1 - p_t)`` instead (for a binary model
the logit difference ``logits[1] - logits[0]``), additive on the scale the head works on.

Cost: the image is encoded ONCE (``model.encode_image``, or the caller hands in the encoding it already
has, e.g. from the Grad-CAM++ forward pass), then every coalition is one cheap row through the clinical
branch, fusion, pooling and head, many rows at a time in chunks of at most ``max_rows_per_chunk`` rows.
For the ``attention`` variant the rows go through :mod:`.coalition_decoder` (each field has only two
states, so its keys, values and output projections are computed once; a row mixes them and runs the FFN,
pooling and head; it sizes its own row steps and takes the slices a chunk at a time, so memory does not
grow with the volume); other variants, or rows with arbitrary values (:meth:`CoalitionValue.evaluate_rows`),
use ``model.decode``.

Players are the fields the user entered (known fields), in model field order; a field the user left
unknown is unknown in every row, so it is a null player and is not part of the game.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

OUTPUTS = ("probability", "log_odds")

#: Default chunk size aims at about this many elements per (rows, slices, tokens, dim) tensor (4 MB float32):
#: measured on 2 CPU cores, 128-256 rows of 64 tokens x 64 dims decode ~25% faster per row than 1,024 at once.
_ROW_ELEMENT_BUDGET = 1 << 20
#: Upper bound of the default chunk size.
_MAX_DEFAULT_ROWS = 4096


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (no dropout) for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _as_tensor(x, dtype: torch.dtype, device: torch.device) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def _one_row(x, name: str, n_fields: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(F,) or (1, F) -> (1, F) tensor."""
    t = _as_tensor(x, dtype, device)
    if t.ndim == 1:
        t = t[None]
    if t.shape != (1, n_fields):
        raise ValueError(f"{name} must be (F,) or (1, F) with F = {n_fields} model field(s), "
                         f"got {tuple(t.shape)}")
    return t


def class_value(logits: Tensor, target: int, output: str) -> np.ndarray:
    """Logits (R, C) -> (R,) float64: probability or log-odds of class ``target`` (computed in float64)."""
    z = logits.detach().to(torch.float64)
    logp = torch.log_softmax(z, dim=-1)[:, target]
    if output == "probability":
        return logp.exp().cpu().numpy()
    others = torch.cat([z[:, :target], z[:, target + 1:]], dim=-1)
    return (z[:, target] - torch.logsumexp(others, dim=-1)).cpu().numpy()


class CoalitionValue:
    """v for one case: ``vf(coalitions (R, d) bool) -> (R,) float64``, d = number of known fields.

    Args:
        model: a :class:`~mmxai_core.model.MultimodalClassifier` (any variant); evaluated in eval mode
            (its train/eval mode is restored after every call) without gradients.
        images: one case as the model takes it, (1, S, 1, H, W) or (1, 1, H, W); None = no image.
        clin_values: (F,) or (1, F) preprocessed values (categorical codes as floats), model field order.
        clin_missing: (F,) or (1, F) bool, True = unknown; default: NaN values are unknown.
        slice_mask: (1, S) or (S,) bool, real slices (default all).
        image_present: bool; False = use the missing-image token (default: True where images are given).
        target: the explained class; default: class 1 for a binary model (the positive class), the
            predicted class (argmax of f(x)) for more classes.
        output: ``"probability"`` (default) or ``"log_odds"``.
        max_rows_per_chunk: most clinical rows per decode call; default: sized from the encoding so that
            one (rows, slices, tokens, dim) tensor holds about 1M elements (at most 4096 rows); the two-state
            decoder sizes its own steps (:mod:`.coalition_decoder`) unless this is given.
        fast: use the two-state decoder where it applies (default); False = always ``model.decode`` (the
            reference the decoder is tested against).
        encoding: the case's :class:`~mmxai_core.model.outputs.ImageEncoding` (batch 1) when the caller has
            it already; then ``images``, ``slice_mask`` and ``image_present`` are not used.

    Attributes:
        field_names: (F,) names of the model's clinical fields.
        entered_missing: (F,) bool, the fields the user left unknown.
        players: (d,) int, model field indices of the known fields (the players, in order).
        n_evaluations: clinical rows decoded so far (every coalition counts, also repeats).
        encode_seconds, eval_seconds: time spent encoding the image / decoding rows.
    """

    def __init__(self, model: nn.Module, images: Tensor | None = None, clin_values=None, clin_missing=None, *,
                 slice_mask: Tensor | None = None, image_present: bool | None = None, target: int | None = None,
                 output: str = "probability", max_rows_per_chunk: int | None = None, fast: bool = True,
                 encoding: Any = None):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.model = model
        self.output = output
        self.field_names: tuple[str, ...] = tuple(f.name for f in model.config.clinical_fields)
        n_fields = len(model.config.clinical_fields)
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
        if clin_values is None:
            if n_fields:
                raise ValueError("clin_values (F,) is required for a model with clinical fields")
            clin_values = np.zeros((1, 0), np.float32)
        values = _one_row(clin_values, "clin_values", n_fields, dtype, device)
        if clin_missing is None:
            missing = torch.isnan(values)
        else:
            missing = _one_row(clin_missing, "clin_missing", n_fields, torch.bool, device)
        self.values = torch.where(missing, torch.zeros((), dtype=dtype, device=device), values)  # (1, F)
        self.entered_missing: np.ndarray = missing[0].cpu().numpy().astype(bool)
        if not getattr(model, "uses_clinical", False):  # no clinical branch: no field can matter
            self.entered_missing = np.ones(n_fields, dtype=bool)
        self.players: np.ndarray = np.flatnonzero(~self.entered_missing)
        self.n_evaluations = 0
        self.eval_seconds = 0.0
        self._device = device

        t0 = time.perf_counter()
        with eval_mode(model), torch.inference_mode():
            if encoding is not None:
                if getattr(encoding, "batch_size", None) != 1:
                    raise ValueError("encoding must be one case's ImageEncoding (batch 1)")
                self.encoding = encoding
            else:
                self.encoding = self._encode(images, slice_mask, image_present, device)
            self._missing_image = None
        self.encode_seconds = time.perf_counter() - t0
        self.max_rows_per_chunk = self._chunk_rows(max_rows_per_chunk)
        self._decoders: dict[bool, Any] = {}
        self.fast = fast

        num_classes = int(model.config.num_classes)
        if target is None:
            if num_classes == 2:
                target = 1
            else:
                full = np.ones((1, n_fields), dtype=bool)
                target = int(self._known_logits(full, image=True).argmax(dim=-1)[0])
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < num_classes:
            raise ValueError(f"target must be a class index in 0..{num_classes - 1}, got {target!r}")
        self.target = int(target)

    # ----------------------------------------------------------------------------------- setup
    def _encode(self, images, slice_mask, image_present, device):
        model = self.model
        if not getattr(model, "uses_image", False):
            return None
        if images is None:
            return model.encode_image(None, batch_size=1)
        images = _as_tensor(images, next(model.parameters()).dtype, device)
        if images.ndim not in (4, 5) or images.shape[0] != 1:
            raise ValueError("images must be one case, (1, S, 1, H, W) or (1, 1, H, W), "
                             f"got {tuple(images.shape)}")
        if slice_mask is not None:
            slice_mask = _as_tensor(slice_mask, torch.bool, device).reshape(1, -1)
        present = None
        if image_present is not None:
            present = torch.tensor([bool(image_present)], device=device)
        return model.encode_image(images, slice_mask, present)

    def _chunk_rows(self, requested: int | None) -> int:
        self._requested_rows = None
        if requested is not None:
            if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)) or requested < 1:
                raise ValueError(f"max_rows_per_chunk must be an integer >= 1, got {requested!r}")
            self._requested_rows = int(requested)
            return int(requested)
        if self.encoding is None:
            per_row = max(1, len(self.field_names)) * int(self.model.config.embed_dim)
        else:
            _, _, n_tok, dim = self.encoding.tokens.shape
            per_row = max(1, int(self.encoding.slice_mask.sum())) * n_tok * dim
        return int(min(_MAX_DEFAULT_ROWS, max(1, _ROW_ELEMENT_BUDGET // per_row)))

    @property
    def n_players(self) -> int:
        """d, the number of known fields."""
        return len(self.players)

    @property
    def player_names(self) -> tuple[str, ...]:
        return tuple(self.field_names[i] for i in self.players)

    def _encoding_for(self, image: bool):
        if image or self.encoding is None:
            return self.encoding
        if self._missing_image is None:
            self._missing_image = self.model.encode_image(None, batch_size=1)
        return self._missing_image

    # ----------------------------------------------------------------------------------- evaluation
    def _logits(self, values: Tensor, missing: Tensor, image: bool) -> Tensor:
        """values (R, F), missing (R, F) bool -> logits (R, C), decoded in chunks of max_rows_per_chunk."""
        rows = int(values.shape[0])
        out = []
        t0 = time.perf_counter()
        with eval_mode(self.model), torch.inference_mode():
            encoding = self._encoding_for(image)
            for start in range(0, rows, self.max_rows_per_chunk):
                sl = slice(start, start + self.max_rows_per_chunk)
                r = int(values[sl].shape[0])
                absent = torch.zeros(r, dtype=torch.bool, device=self._device)
                logits = self.model.decode(encoding, values[sl], missing[sl], image_present=absent).logits
                out.append(logits.expand(r, -1))  # a variant without clinical branch answers one row
        self.eval_seconds += time.perf_counter() - t0
        self.n_evaluations += rows
        if not out:
            return torch.zeros(0, int(self.model.config.num_classes), dtype=torch.float64)
        return torch.cat(out)

    def _decoder(self, image: bool):
        """The case's :class:`~.coalition_decoder.TwoStateDecoder` (image or missing-image token), or None."""
        if not self.fast:
            return None
        if image not in self._decoders:
            from mmxai_core.explain.coalition_decoder import two_state_decoder

            t0 = time.perf_counter()
            with eval_mode(self.model), torch.inference_mode():
                entered_missing = torch.as_tensor(self.entered_missing[None], device=self._device)
                self._decoders[image] = two_state_decoder(self.model, self._encoding_for(image), self.values,
                                                          entered_missing)
            self.eval_seconds += time.perf_counter() - t0
        return self._decoders[image]

    def _known_logits(self, known: np.ndarray, image: bool) -> Tensor:
        """known (R, F) bool -> logits (R, C) with entered values where known, unknown elsewhere."""
        part = torch.as_tensor(known & ~self.entered_missing[None, :], device=self._device)
        decoder = self._decoder(image)
        if decoder is None:
            return self._logits(self.values.expand(part.shape[0], -1), ~part, image)
        rows, out = int(part.shape[0]), []
        chunk = self._requested_rows or max(rows, 1)     # the decoder takes rows in steps it sizes itself
        t0 = time.perf_counter()
        with eval_mode(self.model), torch.inference_mode():
            for start in range(0, rows, chunk):
                out.append(decoder(part[start:start + chunk]))
        self.eval_seconds += time.perf_counter() - t0
        self.n_evaluations += rows
        if not out:
            return torch.zeros(0, int(self.model.config.num_classes), dtype=torch.float64)
        return torch.cat(out)

    def evaluate_known(self, known, *, image: bool = True) -> np.ndarray:
        """known (R, F) bool over ALL model fields (True = entered value kept) -> v (R,) float64.

        Fields the user left unknown stay unknown whatever ``known`` says. ``image=False`` replaces the
        image by the model's missing-image token (for the modality split).
        """
        known = np.asarray(known, dtype=bool)
        if known.ndim != 2 or known.shape[1] != len(self.field_names):
            raise ValueError(f"known must be (R, {len(self.field_names)}), got {known.shape}")
        return class_value(self._known_logits(known, image), self.target, self.output)

    def __call__(self, coalitions) -> np.ndarray:
        """coalitions (R, d) bool or 0/1 over the players (column j = field ``players[j]``) -> (R,) float64."""
        coalitions = np.asarray(coalitions)
        if coalitions.ndim != 2 or coalitions.shape[1] != self.n_players:
            raise ValueError(f"coalitions must be (R, d) with d = {self.n_players} known field(s), "
                             f"got {coalitions.shape}")
        known = np.zeros((coalitions.shape[0], len(self.field_names)), dtype=bool)
        known[:, self.players] = coalitions.astype(bool)
        return self.evaluate_known(known)

    def evaluate_rows(self, values, missing, *, image: bool = True) -> np.ndarray:
        """Arbitrary clinical rows with the case's image: values (R, F), missing (R, F) -> (R,) float64.

        For interventional explanations (background rows); the entered values of the case play no role.
        """
        values = _as_tensor(values, self.values.dtype, self._device)
        missing = _as_tensor(missing, torch.bool, self._device)
        n_fields = len(self.field_names)
        if values.ndim != 2 or values.shape[1] != n_fields or missing.shape != values.shape:
            raise ValueError(f"values and missing must both be (R, {n_fields}), got {tuple(values.shape)} "
                             f"and {tuple(missing.shape)}")
        values = torch.where(missing, torch.zeros((), dtype=values.dtype, device=values.device), values)
        return class_value(self._logits(values, missing, image), self.target, self.output)


__all__ = ["OUTPUTS", "CoalitionValue", "class_value", "eval_mode"]
