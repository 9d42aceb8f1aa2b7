"""Refit of the clinical "unknown" embeddings after training (``train.unknown_refit``).

Research use, not for diagnosis.

Why. The clinical Shapley values remove a field by making it "unknown" (DESIGN.md, "Absent means
unknown"). They describe what the model does with a field's *value* only if "unknown" means "some value of
this field, I do not know which": then hiding a field the model does not use changes nothing, in any
coalition of the other fields. Training does not guarantee that: a field's "unknown" embedding is trained
on the few rows where the field happens to be hidden, and on the synthetic cohort pure-noise fields moved
the prediction by the same amount in every case between "entered" and "unknown" (README, "Known
limitations"), so the Shapley values reported an offset, not a use of the field.

What. After training (best weights restored), every weight is frozen except the (F, D) "unknown" embeddings
of the clinical tokenizer. Over the training cases (no augmentation, eval mode: no dropout, no masking),
for every field f entered in a row and a coalition S of the other fields drawn with the Shapley weights
(its size uniform in 0..F-1, then a uniform subset; fields outside S and fields missing in the row are
unknown), the loss is

    || c(logits(S, f entered)) - c(logits(S, f unknown)) ||^2,     c(z) = z - mean over classes of z

(binary: half the squared change of the log-odds), the entered side detached; the gradient of a row about
field f reaches field f's embedding only (the other fields hidden by its coalition are unknown on both
sides of the difference; letting them learn from it would pull them towards whatever makes *f*'s
difference small, not their own). The minimiser makes hiding a field the model ignores change nothing in
any coalition (its Shapley value becomes 0), and for a field whose contribution to the log-odds is additive
it is that contribution averaged over the training rows, so the Shapley values become those of the
marginal ("interventional") game over the training cases. Only the "unknown" embeddings move: predictions
with every field entered do not change (tested).

Cost: per pass, one image-encoder forward per training case (no backward) and, ``STEPS_PER_BATCH`` times
per batch, two decodes (entered, unknown; fusion and head only) of the batch's (case, field) rows, one field
at a time; memory is one batch. The demo: 3 passes over 333 training cases in about 2.5 min on one thread.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch

from mmxai_core.data.dataset import EpochSampler, make_loader, mix_seed
from mmxai_core.explain.value_function import eval_mode

STEPS_PER_BATCH = 4
"""Coalition draws (optimiser steps) per batch and pass; the image is encoded once per batch and pass."""
LEARNING_RATE = 1e-2
"""Initial Adam step size on the "unknown" embeddings (entries O(0.1-1)); cosine decay to 0 over the refit."""


def _centred(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return logits - logits.mean(dim=1, keepdim=True)


def coalition_rows(missing: torch.Tensor, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The refit's rows of one batch, one per (case, field entered in that case): (case index (R,), field
    index (R,), missing mask with the field entered (R, F), missing mask with it unknown (R, F)).

    ``missing`` (B, F) bool. The other fields of each row are hidden outside a coalition drawn with the
    Shapley weights: coalition size k uniform in 0..F-1, the k fields kept are a uniform subset.
    """
    f = missing.shape[1]
    case, field = torch.nonzero(~missing, as_tuple=True)
    r = torch.arange(case.numel())
    size = torch.randint(0, f, (case.numel(),), generator=generator)
    rank = torch.rand(case.numel(), f, generator=generator)
    rank[r, field] = 2.0                                    # the field itself is never among the others
    order = rank.argsort(1).argsort(1)                      # 0 = first kept
    entered = missing[case] | (order >= size[:, None])
    entered[r, field] = False
    hidden = entered.clone()
    hidden[r, field] = True
    return case, field, entered, hidden


def _field_gradients(model: torch.nn.Module, unknown: torch.nn.Parameter, enc: Any, batch: Any, case: torch.Tensor,
                     field: torch.Tensor, entered: torch.Tensor, hidden: torch.Tensor) -> float:
    """Set ``unknown.grad`` to the gradient of the mean refit loss over the rows, where the rows of field j
    reach only field j's embedding (the other fields hidden in a row's coalition are unknown on both sides
    of its difference, and are not what that row is about); returns the summed loss."""
    grad = torch.zeros_like(unknown)
    total = 0.0
    for j in torch.unique(field).tolist():
        pick = field == j
        sub = None if enc is None else enc.select(case[pick])
        values, present = batch.clin_values[case[pick]], batch.image_present[case[pick]]
        with torch.no_grad():
            target = _centred(model.decode(sub, values, entered[pick], image_present=present).logits)
        out = _centred(model.decode(sub, values, hidden[pick], image_present=present).logits)
        loss = ((out - target) ** 2).sum()
        (g,) = torch.autograd.grad(loss, unknown)
        grad[j] = g[j]
        total += float(loss.detach())
    unknown.grad = grad / case.numel()
    return total


def _one_pass(model: torch.nn.Module, unknown: torch.nn.Parameter, loader: Any, optimizer: Any, schedule: Any,
              seed: int, done: int, device: torch.device | str) -> tuple[float, int, int]:
    """One pass over the loader: each batch encoded once, then ``STEPS_PER_BATCH`` coalition draws, one
    optimiser step each. Returns (summed loss, rows, steps taken)."""
    total, count, steps = 0.0, 0, 0
    for i, batch in enumerate(loader):
        batch = batch.to(device)
        missing = batch.clin_missing.to(torch.bool).cpu()
        with torch.no_grad():
            enc = model.encode_image(batch.images, batch.slice_mask, batch.image_present,
                                     batch_size=len(batch)) if model.uses_image else None
        for step in range(STEPS_PER_BATCH):
            gen = torch.Generator().manual_seed(mix_seed(seed, done, i, step, 0x0B1F))
            drawn = [t.to(device) for t in coalition_rows(missing, gen)]
            if drawn[0].numel() == 0:
                continue
            total += _field_gradients(model, unknown, enc, batch, *drawn)
            optimizer.step()
            schedule.step()
            steps += 1
            count += drawn[0].numel()
    return total, count, steps


def refit_unknown(model: torch.nn.Module, dataset: Any, passes: int, *, batch_size: int = 16, seed: int = 0,
                  device: torch.device | str = "cpu",
                  progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Refit ``model.clinical_encoder.unknown`` in place (module docstring); returns a JSON-able report.

    Args:
        model: a multimodal classifier whose clinical encoder has field tokens (``unknown`` (F, D)).
        dataset: the training cases *without augmentation* (a ``MultimodalDataset``).
        passes: passes over ``dataset`` (>= 1).
        progress: called after each pass with (pass number, mean loss of that pass).

    Report: ``passes``, ``steps``, ``rows`` (refit rows per pass), ``loss_first_pass`` / ``loss_last_pass``
    (mean loss of the first and the last pass), ``unknown_change`` (norm of each field's change, by field
    order), ``seconds``.
    """
    encoder = getattr(model, "clinical_encoder", None)
    unknown = getattr(encoder, "unknown", None)
    if not isinstance(unknown, torch.nn.Parameter):
        raise ValueError(f"unknown refit needs a model with clinical field tokens, not variant "
                         f"{getattr(model, 'variant', '?')!r}")
    if passes < 1:
        raise ValueError(f"unknown refit: passes must be >= 1, got {passes}")
    start = time.perf_counter()
    before = unknown.detach().clone()
    # only ``unknown`` gets gradients (torch.autograd.grad with it as the one input), and only it is optimised
    optimizer = torch.optim.Adam([unknown], lr=LEARNING_RATE)
    loader = make_loader(dataset, batch_size, EpochSampler(len(dataset), seed=seed, shuffle=True))
    total_steps = passes * len(loader) * STEPS_PER_BATCH
    # cosine decay to 0: Adam's steps are about lr per entry whatever the gradient, so a constant rate
    # would leave the embeddings jittering around the minimum
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total_steps) / total_steps)))
    losses, rows, steps = [], 0, 0
    with eval_mode(model):
        for done in range(1, passes + 1):
            loader.sampler.set_epoch(done)
            total, count, taken = _one_pass(model, unknown, loader, optimizer, schedule, seed, done, device)
            losses.append(total / max(count, 1))
            rows, steps = count // STEPS_PER_BATCH, steps + taken
            if progress is not None:
                progress(done, losses[-1])
    return {"passes": int(passes), "steps": steps, "steps_per_batch": STEPS_PER_BATCH, "lr": LEARNING_RATE,
            "rows": rows, "loss_first_pass": losses[0], "loss_last_pass": losses[-1],
            "unknown_change": [round(float(v), 6) for v in (unknown.detach() - before).norm(dim=1).cpu()],
            "seconds": round(time.perf_counter() - start, 3)}


__all__ = ["refit_unknown", "coalition_rows", "STEPS_PER_BATCH", "LEARNING_RATE"]
