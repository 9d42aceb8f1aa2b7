"""Batched inference over a dataset, and loading a released ``mmxai-train`` checkpoint for inference.

Research use, not for diagnosis.

* :func:`predict` runs the model in eval mode over a :class:`~mmxai_core.data.dataset.MultimodalDataset`
  in dataset order and returns :class:`Predictions` (probabilities, logits, labels, patient ids, case
  keys). In a process group each rank predicts its shard and :meth:`Runtime.gather_arrays` joins them
  (then rows are put back in dataset order by ``indices``).
* :func:`load_run_checkpoint` reads ``RUN_DIR/checkpoint`` (or the folder itself) and returns the model
  with everything needed to prepare a new case: the fitted clinical preprocessor, the image preprocessing
  config, class names and the validation threshold; it refuses a checkpoint that lacks any of these or
  whose parts disagree.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmxai_core.errors import CheckpointError

#: Metadata keys an ``mmxai-train`` checkpoint must have (besides the model checkpoint's own keys).
RUN_CHECKPOINT_KEYS = ("classes", "clinical_preprocessor", "image_preprocess", "threshold", "masking_rates",
                       "data_fingerprint", "versions")
RUN_CHECKPOINT_KIND = "mmxai-train"


@dataclasses.dataclass
class Predictions:
    """Model outputs for N cases in dataset order.

    probs (N, C) float64 softmax probabilities; logits (N, C) float32; labels (N,) int64 true class
    indices; patient_ids (N,) object; case_keys (N,) object; indices (N,) int64 dataset positions.
    """

    probs: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray
    case_keys: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def loss(self, class_weights: torch.Tensor | None = None) -> float:
        """Mean cross-entropy of the logits (weighted like the training loss when ``class_weights``)."""
        logits = torch.from_numpy(self.logits.astype(np.float32))
        w = None if class_weights is None else class_weights.detach().float().cpu()
        return float(F.cross_entropy(logits, torch.from_numpy(self.labels), weight=w))

    def rows(self, classes: list[str]) -> list[dict[str, Any]]:
        """One dict per case (``case``, ``patient_id``, ``label``, ``p_<class>`` ...) for a CSV."""
        out = []
        for i in range(len(self)):
            row = {"case": self.case_keys[i], "patient_id": self.patient_ids[i], "label": classes[self.labels[i]]}
            row.update({f"p_{c}": float(self.probs[i, k]) for k, c in enumerate(classes)})
            out.append(row)
        return out


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Any, runtime: Any, batch_size: int = 16,
            workers: int = 0) -> Predictions:
    """Probabilities for every case of ``dataset`` (eval mode, no augmentation, autocast per ``runtime``).

    ``dataset`` must not augment (build it with ``augment=None``). Returns rows in dataset order.
    """
    from mmxai_core.data.dataset import EpochSampler, make_loader

    if getattr(dataset, "augmenter", None) is not None:
        raise ValueError("predict() needs a dataset without augmentation")
    was_training = model.training
    model.eval()
    sampler = EpochSampler(len(dataset), shuffle=False, rank=runtime.rank, world_size=runtime.world_size)
    loader = make_loader(dataset, batch_size, sampler, workers=workers, pin_memory=runtime.device.type == "cuda")
    logits, indices = [], []
    try:
        for batch in loader:
            batch = batch.to(runtime.device, non_blocking=True)
            with runtime.autocast():
                out = model(batch.images, batch.slice_mask, batch.image_present, batch.clin_values,
                            batch.clin_missing)
            logits.append(out.logits.float().cpu())
            indices.append(batch.indices.cpu())
    finally:
        model.train(was_training)
    n_classes = int(getattr(getattr(model, "config", None), "num_classes", 2))
    arrays = {"logits": torch.cat(logits).numpy() if logits else np.zeros((0, n_classes), np.float32),
              "indices": torch.cat(indices).numpy() if indices else np.zeros(0, np.int64)}
    arrays = runtime.gather_arrays(arrays)
    idx, first = np.unique(arrays["indices"], return_index=True)  # dataset order; drops shard padding
    lg = arrays["logits"][first].astype(np.float32)
    probs = torch.softmax(torch.from_numpy(lg).double(), dim=1).numpy()
    keys = np.asarray(dataset.keys, dtype=object)
    return Predictions(probs=probs, logits=lg, labels=np.asarray(dataset.labels)[idx].astype(np.int64),
                       patient_ids=np.asarray(dataset.patient_ids, dtype=object)[idx], case_keys=keys[idx],
                       indices=idx.astype(np.int64))


# ---------------------------------------------------------------------------------------------- loading
@dataclasses.dataclass
class RunCheckpoint:
    """A released model ready for inference.

    model (eval mode); metadata (the whole metadata.json); clinical (fitted ClinicalPreprocessor);
    image_preprocess (ImagePreprocessConfig); classes (names, index order); threshold (binary: a case is
    class 1 when p(class 1) >= threshold; None for multi-class = argmax).
    """

    model: torch.nn.Module
    metadata: dict[str, Any]
    clinical: Any
    image_preprocess: Any
    classes: list[str]
    threshold: float | None

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Class index per row of ``probs`` (N, C): the threshold rule (binary) or argmax."""
        probs = np.asarray(probs, dtype=np.float64)
        if self.threshold is not None and probs.shape[1] == 2:
            return (probs[:, 1] >= self.threshold).astype(np.int64)
        return probs.argmax(1).astype(np.int64)


def load_run_checkpoint(directory: str | os.PathLike, device: str | torch.device = "cpu") -> RunCheckpoint:
    """Load an ``mmxai-train`` checkpoint (``RUN_DIR`` or ``RUN_DIR/checkpoint``) for inference.

    Raises:
        CheckpointError: anything :func:`mmxai_core.model.load_checkpoint` refuses, or a checkpoint that is
            not from mmxai-train, lacks one of :data:`RUN_CHECKPOINT_KEYS`, or whose parts disagree (class
            count vs the model, clinical fields vs the model's, an invalid preprocessing state).
    """
    from mmxai_core.data.clinical import ClinicalPreprocessor
    from mmxai_core.data.preprocess.config import ImagePreprocessConfig
    from mmxai_core.errors import MMXAIError
    from mmxai_core.model import load_checkpoint

    path = Path(directory)
    if (path / "checkpoint").is_dir() and not (path / "metadata.json").exists():
        path = path / "checkpoint"
    model, meta = load_checkpoint(path, device=device)
    where = path / "metadata.json"
    if meta.get("checkpoint_kind") != RUN_CHECKPOINT_KIND:
        raise CheckpointError(f"{where}: not an mmxai-train checkpoint ('checkpoint_kind' is "
                              f"{meta.get('checkpoint_kind')!r}); it lacks the preprocessing needed for inference")
    missing = [k for k in RUN_CHECKPOINT_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{where}: incomplete mmxai-train checkpoint, missing {', '.join(missing)}")
    try:
        clinical = ClinicalPreprocessor.from_json_dict(meta["clinical_preprocessor"])
        image_cfg = ImagePreprocessConfig.from_dict(dict(meta["image_preprocess"]))
    except (MMXAIError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: invalid preprocessing state: {str(exc).splitlines()[0]}") from None
    classes = [str(c) for c in meta["classes"]]
    if len(classes) != model.config.num_classes:
        raise CheckpointError(f"{where}: {len(classes)} class names but the model has {model.config.num_classes} "
                              "outputs")
    fields = [tuple(f) for f in clinical.model_fields()]
    model_fields = [(f.name, f.kind, f.cardinality if f.kind == "categorical" else 0)
                    for f in model.config.clinical_fields]
    if model.config.clinical_fields and fields != model_fields:
        raise CheckpointError(f"{where}: the clinical schema's fields {[f[0] for f in fields]} do not match the "
                              f"model's {[f[0] for f in model_fields]}")
    thr = meta["threshold"]
    value = thr.get("value") if isinstance(thr, dict) else None
    if len(classes) == 2 and value is None:
        raise CheckpointError(f"{where}: binary checkpoint without a threshold value")
    return RunCheckpoint(model=model, metadata=meta, clinical=clinical, image_preprocess=image_cfg,
                         classes=classes, threshold=None if value is None else float(value))


__all__ = ["Predictions", "predict", "RunCheckpoint", "load_run_checkpoint", "RUN_CHECKPOINT_KEYS",
           "RUN_CHECKPOINT_KIND"]
