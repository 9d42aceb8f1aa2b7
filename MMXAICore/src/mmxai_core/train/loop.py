"""The training loop: AdamW + warm-up/cosine per step, early stopping on validation loss, gradient
clipping, class weighting, mixed precision, training-time missingness, seeded, resumable.

Research use, not for diagnosis.

One optimiser step (:meth:`Trainer.train_epoch`)::

    batch -> model.simulate_missing(clin_missing, image_present, generator seeded by (seed, step))
          -> autocast forward -> cross-entropy (class weights) [+ the weighted unimodal losses,
             ``train.aux_image_only`` / ``train.aux_clinical_only``] -> (scaled) backward
          -> unscale + clip_grad_norm_(grad_clip) -> optimizer.step -> scaler.update -> schedule.step

An epoch ends with :func:`~mmxai_core.train.predict.predict` on the validation set (loss with the same class
weights as training, AUC), the early-stopping update, and the ``on_epoch_end`` callback (the run saves
the state and the log there). Everything random is seeded: weights by ``create_model(seed=)``, the case
order by (seed, epoch), augmentation by (seed, epoch, case), masking by (seed, step), dropout by the global
torch RNG, whose state is saved with each epoch. So on the CPU the same seed gives the same weights, and an
interrupted run resumed from its last epoch ends with the same weights as an uninterrupted one.

Timing per epoch: ``data_s`` (waiting for the loader, copying to the device), ``model_s`` (forward,
backward, step; the device is synchronised before the clock is read), ``eval_s`` (validation).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from mmxai_core.data.dataset import EpochSampler, make_loader, mix_seed
from mmxai_core.errors import MMXAIError
from mmxai_core.model.outputs import ImageEncoding
from mmxai_core.train.device import Runtime, synchronize
from mmxai_core.train.early_stopping import EarlyStopping
from mmxai_core.train.schedule import WarmupCosineSchedule
from mmxai_core.train.state import (capture_rng, optimizer_from_state, optimizer_to_state, restore_rng,
                                    state_dict_cpu)

LOG_COLUMNS = ("epoch", "step", "lr", "train_loss", "val_loss", "val_auc", "val_accuracy", "best_val_loss",
               "improved", "epoch_s", "data_s", "model_s", "eval_s", "cases_per_s", "slices_per_s")


class TrainingError(MMXAIError):
    """Training cannot go on (a non-finite loss, an empty split)."""


@dataclasses.dataclass
class EpochRecord:
    """One row of ``log.csv``: losses (mean cross-entropy per case), validation AUC / accuracy (threshold
    0.5 / argmax), the learning rate at the end of the epoch, wall times in seconds, training throughput
    (cases/s and image slices/s of the training pass only)."""

    epoch: int
    step: int
    lr: float
    train_loss: float
    val_loss: float
    val_auc: float | None
    val_accuracy: float | None
    best_val_loss: float
    improved: bool
    epoch_s: float
    data_s: float
    model_s: float
    eval_s: float
    cases_per_s: float
    slices_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def class_weights_from_labels(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``N / (C * n_c)`` (float32, (C,)); a class absent from ``labels`` is an
    error (it cannot be learned)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    if (counts == 0).any():
        raise TrainingError(f"class index(es) {np.flatnonzero(counts == 0).tolist()} have no training case")
    return torch.tensor(counts.sum() / (n_classes * counts), dtype=torch.float32)


class Trainer:
    """Owns the optimiser, schedule, scaler and early stopping of one run.

    Args:
        model: the classifier (on any device; moved to ``runtime.device``).
        train_set, val_set: :class:`~mmxai_core.data.dataset.MultimodalDataset` (train augments).
        config: the :class:`~mmxai_core.train.config.TrainConfig`.
        runtime: device, precision, rank.
        class_weights: (C,) cross-entropy weights or None.
    """

    def __init__(self, model: torch.nn.Module, train_set: Any, val_set: Any, config: Any, runtime: Runtime,
                 class_weights: torch.Tensor | None = None):
        from mmxai_core.model import parameter_groups

        if len(train_set) == 0 or len(val_set) == 0:
            raise TrainingError("training and validation sets must not be empty")
        self.cfg, self.runtime = config, runtime
        self.core = model.to(runtime.device)  # the classifier itself
        # what the training step calls: the classifier, or its DistributedDataParallel wrapper in a group
        self.model = runtime.wrap_model(self.core)
        self.train_set, self.val_set = train_set, val_set
        t, o = config.train, config.optim
        self.seed = int(t.seed)
        self.class_weights = None if class_weights is None else class_weights.to(runtime.device)
        self.sampler = EpochSampler(len(train_set), seed=self.seed, shuffle=True, rank=runtime.rank,
                                    world_size=runtime.world_size)
        self.loader = make_loader(train_set, t.batch_size, self.sampler, workers=config.data.loader_workers,
                                  pin_memory=runtime.device.type == "cuda")
        self.steps_per_epoch = math.ceil(len(self.sampler) / t.batch_size)
        total = self.steps_per_epoch * t.epochs
        warmup = min(total, int(round(o.warmup_epochs * self.steps_per_epoch)))
        fused = {"foreach": False} if runtime.device.type == "cpu" else {}
        self.optimizer = torch.optim.AdamW(parameter_groups(self.core, o.weight_decay), lr=o.lr,
                                           betas=(o.beta1, o.beta2), eps=o.eps, **fused)
        self.schedule = WarmupCosineSchedule(self.optimizer, total, warmup, o.min_lr_ratio)
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.uses_grad_scaler)
        self.stopper = EarlyStopping(t.patience, t.min_delta)
        self.epoch = 0            # epochs finished
        self.step = 0             # optimiser steps taken
        self.history: list[EpochRecord] = []
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None
        self.stopped_early = False
        self.last_val = None      # Predictions of the last validation pass
        self.calibration_weight = float(t.unknown_calibration)
        self.aux_image_weight = float(t.aux_image_only)
        self.aux_clinical_weight = float(t.aux_clinical_only)
        self.forward_in_halves = max(self.calibration_weight, self.aux_image_weight, self.aux_clinical_weight) > 0
        variant = getattr(self.core, "variant", "?")
        for key, weight in (("unknown_calibration", self.calibration_weight), ("aux_image_only", self.aux_image_weight),
                            ("aux_clinical_only", self.aux_clinical_weight), ("unknown_refit", t.unknown_refit)):
            if weight > 0 and runtime.world_size > 1:
                raise TrainingError(f"train.{key} is single-process only (it calls the model's halves outside the "
                                    "DistributedDataParallel wrapper); set it to 0 with torchrun")
        for key, weight in (("unknown_calibration", self.calibration_weight), ("unknown_refit", t.unknown_refit)):
            if weight > 0 and not hasattr(getattr(self.core, "clinical_encoder", None), "unknown"):
                raise TrainingError(f"train.{key} needs a model with clinical field tokens, not variant {variant!r}")
        if (self.aux_image_weight > 0 or self.aux_clinical_weight > 0) and \
                not (self.core.uses_image and self.core.uses_clinical):
            raise TrainingError(f"train.aux_image_only / train.aux_clinical_only need a model with both an image and "
                                f"a clinical branch, not variant {variant!r}")

    # ------------------------------------------------------------------ one epoch
    def _forward_in_halves(self, batch: Any, present: torch.Tensor, missing: torch.Tensor
                           ) -> tuple[Any, torch.Tensor | None, torch.Tensor | None]:
        """The training forward with the image encoded once and decoded up to three times:
        (output, "unknown"-calibration loss or None, weighted unimodal auxiliary loss or None)."""
        core = self.core
        enc = core.encode_image(batch.images, batch.slice_mask, present, batch_size=len(batch)) \
            if core.uses_image else None
        out = core.decode(enc, batch.clin_values, missing, image_present=present)
        calibration = self._calibration_loss(batch, present, missing, enc, out) \
            if self.calibration_weight > 0 else None
        aux = self._unimodal_loss(batch, present, missing, enc) \
            if self.aux_image_weight > 0 or self.aux_clinical_weight > 0 else None
        return out, calibration, aux

    def _unimodal_loss(self, batch: Any, present: torch.Tensor, missing: torch.Tensor, enc: ImageEncoding
                       ) -> torch.Tensor | None:
        """Weighted cross-entropy of the same model's two unimodal predictions (``train.aux_image_only``,
        ``train.aux_clinical_only``): the step's image encoding decoded with every clinical field unknown
        (rows with an image), and the clinical rows decoded with the missing-image token (rows with at least
        one known field). Both are predictions the model makes anyway (a case without clinical facts, a
        case without an image); the losses keep each branch predictive on its own, so that the stronger
        clinical branch does not leave the image branch under-trained (modality imbalance: Wang, Tran &
        Feiszli 2020, "What makes training multi-modal classification networks hard?"). None if no row
        qualifies."""
        core, terms = self.core, []
        if self.aux_image_weight > 0 and bool(present.any()):
            image_only = core.decode(enc.select(present), batch.clin_values[present],
                                     torch.ones_like(missing[present]))
            terms.append(self.aux_image_weight * self._loss(image_only.logits, batch.labels[present]))
        known = (~missing).any(1)
        if self.aux_clinical_weight > 0 and bool(known.any()):
            clinical_only = core(clin_values=batch.clin_values[known], clin_missing=missing[known])
            terms.append(self.aux_clinical_weight * self._loss(clinical_only.logits, batch.labels[known]))
        return torch.stack(terms).sum() if terms else None

    def _calibration_loss(self, batch: Any, present: torch.Tensor, missing: torch.Tensor,
                          enc: ImageEncoding | None, out: Any) -> torch.Tensor | None:
        """The "unknown"-calibration loss of one field (``train.unknown_calibration``): field j (drawn per
        step, seeded) is hidden in the rows where it is known; loss = sum over classes of (mean p(entered) -
        mean p(hidden))^2 over those rows, the entered side detached. None when no row has field j known."""
        core = self.core
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self.step, 0xCA11B))
        j = int(torch.randint(missing.shape[1], (1,), generator=gen))
        rows = ~missing[:, j]
        if not bool(rows.any()):
            return None
        hidden = missing.clone()
        hidden[:, j] = True
        sub = None if enc is None else enc.select(rows, detach=True)
        out_j = core.decode(sub, batch.clin_values[rows], hidden[rows], image_present=present[rows])
        entered = torch.softmax(out.logits[rows].float(), dim=-1).detach().mean(0)
        return ((entered - torch.softmax(out_j.logits.float(), dim=-1).mean(0)) ** 2).sum()

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, weight=self.class_weights)

    def train_epoch(self, progress: Callable[[int, float], None] | None = None) -> dict[str, float]:
        """Train one epoch (``self.epoch + 1``); returns loss, timings and counts."""
        epoch = self.epoch + 1
        model, rt = self.model, self.runtime
        model.train()
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        clip = self.cfg.optim.grad_clip
        total_loss = torch.zeros((), dtype=torch.float64)
        n_cases = n_slices = 0
        data_s = model_s = 0.0
        start = time.perf_counter()
        tick = start
        for i, batch in enumerate(self.loader):
            batch = batch.to(rt.device, non_blocking=True)
            t0 = time.perf_counter()
            data_s += t0 - tick
            gen = torch.Generator().manual_seed(mix_seed(self.seed, self.step, 0x3A55))
            missing, present = self.core.simulate_missing(batch.clin_missing, batch.image_present, generator=gen)
            calibration = aux = None
            with rt.autocast():
                if self.forward_in_halves:
                    out, calibration, aux = self._forward_in_halves(batch, present, missing)
                else:
                    out = model(batch.images, batch.slice_mask, present, batch.clin_values, missing)
            loss = self._loss(out.logits, batch.labels)
            total = loss if aux is None else loss + aux
            if not torch.isfinite(total):
                raise TrainingError(f"non-finite training loss at epoch {epoch}, step {self.step + 1}; lower "
                                    "optim.lr or check the inputs")
            self.optimizer.zero_grad(set_to_none=True)
            if calibration is not None:          # its gradient reaches the "unknown" embeddings only
                unknown = self.core.clinical_encoder.unknown
                (grad,) = torch.autograd.grad(self.calibration_weight * calibration, unknown)
                unknown.grad = grad * (self.scaler.get_scale() if self.scaler.is_enabled() else 1.0)
            self.scaler.scale(total).backward()
            if clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.schedule.step()
            self.step += 1
            value = float(loss.detach())  # synchronises the device
            synchronize(rt.device)
            tick = time.perf_counter()
            model_s += tick - t0
            total_loss += value * len(batch)
            n_cases += len(batch)
            n_slices += batch.n_slices
            if progress is not None:
                progress(i + 1, value)
        rt.sync_buffers(self.core)  # BatchNorm running statistics: rank 0's everywhere before validation
        sums = rt.all_reduce_sum(torch.tensor([float(total_loss), n_cases, n_slices], dtype=torch.float64))
        return {"train_loss": float(sums[0] / max(1.0, float(sums[1]))), "n_cases": int(sums[1]),
                "n_slices": int(sums[2]), "data_s": data_s, "model_s": model_s,
                "train_s": time.perf_counter() - start}

    def validate(self):
        """Predictions on the validation set (eval mode) and their loss (training class weights)."""
        from mmxai_core.train.predict import predict

        preds = predict(self.core, self.val_set, self.runtime, self.cfg.train.eval_batch_size,
                        workers=self.cfg.data.loader_workers)
        loss = preds.loss(self.class_weights)
        if not math.isfinite(loss):
            raise TrainingError(f"non-finite validation loss at epoch {self.epoch}; lower optim.lr or check the inputs")
        return preds, loss

    def run_epoch(self, progress: Callable[[int, float], None] | None = None) -> EpochRecord:
        """Train one epoch, validate, update early stopping and the best weights; returns the log row."""
        from mmxai_core.train.metrics import point_metrics

        start = time.perf_counter()
        stats = self.train_epoch(progress)
        self.epoch += 1
        t0 = time.perf_counter()
        preds, val_loss = self.validate()
        eval_s = time.perf_counter() - t0
        self.last_val = preds
        point = point_metrics(preds.labels, preds.probs) if len(np.unique(preds.labels)) > 1 else None
        auc = point["metrics"]["auc"] if point else None
        acc = point["metrics"]["accuracy"] if point else None
        improved = self.stopper.update(val_loss, self.epoch)
        if improved:
            self.best_epoch = self.epoch
            self.best_weights = state_dict_cpu(self.model) if self.cfg.train.restore_best else None
        self.stopped_early = self.runtime.agree(self.stopper.should_stop)
        train_s = max(stats["train_s"], 1e-9)
        record = EpochRecord(epoch=self.epoch, step=self.step, lr=self.schedule.lr, train_loss=stats["train_loss"],
                             val_loss=val_loss, val_auc=auc, val_accuracy=acc, best_val_loss=float(self.stopper.best),
                             improved=improved, epoch_s=time.perf_counter() - start, data_s=stats["data_s"],
                             model_s=stats["model_s"], eval_s=eval_s, cases_per_s=stats["n_cases"] / train_s,
                             slices_per_s=stats["n_slices"] / train_s)
        self.history.append(record)
        return record

    @property
    def finished(self) -> bool:
        return self.stopped_early or self.epoch >= self.cfg.train.epochs

    def final_weights(self) -> dict[str, torch.Tensor]:
        """The weights to release: the best validation loss's (``restore_best``) or the last ones."""
        if self.cfg.train.restore_best and self.best_weights is not None:
            return self.best_weights
        return state_dict_cpu(self.model)

    # ------------------------------------------------------------------ resumable state
    def state(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any], bool]:
        """``(tensor groups, JSON meta, best_is_current)`` after the current epoch, for
        :func:`~mmxai_core.train.state.save_training_state` (the best weights are the ``model`` file of
        the best epoch: ``best_is_current`` says whether that is this epoch)."""
        opt_tensors, opt_meta = optimizer_to_state(self.optimizer)
        groups = {"model": state_dict_cpu(self.model), "optimizer": opt_tensors}
        meta = {"step": self.step, "schedule": self.schedule.state_dict(), "early_stopping": self.stopper.state_dict(),
                "best_val_loss": self.stopper.best, "best_epoch": self.best_epoch, "stopped_early": self.stopped_early,
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {}, "optimizer": opt_meta,
                "rng": capture_rng(), "history": [r.to_dict() for r in self.history]}
        return groups, meta, self.best_epoch == self.epoch

    def load_state(self, meta: dict[str, Any], groups: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore what :meth:`state` saved (model, optimiser, schedule, scaler, early stopping, RNG)."""
        self.core.load_state_dict(groups["model"], strict=True)
        optimizer_from_state(self.optimizer, groups["optimizer"], meta["optimizer"])
        self.schedule.load_state_dict(meta["schedule"])
        if meta.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(meta["scaler"])
        self.stopper.load_state_dict(meta["early_stopping"])
        self.epoch, self.step = int(meta["epoch"]), int(meta["step"])
        self.best_epoch = meta.get("best_epoch")
        self.stopped_early = bool(meta.get("stopped_early", False))
        self.history = [EpochRecord(**r) for r in meta.get("history", [])]
        best = groups.get("best_model")
        self.best_weights = ({k: v.clone() for k, v in best.items()}
                             if best is not None and self.cfg.train.restore_best else None)
        restore_rng(meta["rng"])


def log_csv_text(history: list[EpochRecord]) -> str:
    """``log.csv`` content: header :data:`LOG_COLUMNS`, one row per epoch (empty cell = undefined)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    for rec in history:
        d = rec.to_dict()
        writer.writerow(["" if d[c] is None else (f"{d[c]:.6g}" if isinstance(d[c], float) else d[c])
                         for c in LOG_COLUMNS])
    return buf.getvalue()


__all__ = ["Trainer", "EpochRecord", "TrainingError", "LOG_COLUMNS", "class_weights_from_labels", "log_csv_text"]
