"""Optimiser parameter groups: the paper's Eq. 6 L2 term as AdamW weight decay.

Eq. 6 is ``L = CE(y, y_hat) + lambda * ||theta||^2``; with AdamW (the paper's Algorithm 1) the penalty is
applied as decoupled weight decay (``weight_decay`` = lambda) rather than added to the loss. As is usual
for transformers, biases, normalisation weights and learned tokens/embeddings (``model.no_weight_decay()``:
the clinical "unknown" and field embeddings, the missing-image token) are not decayed: decaying the
"unknown" embeddings would pull them towards zero in every batch where a field happens to be known.
"""

from __future__ import annotations

from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """``[{"params": decayed, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]``
    for ``torch.optim.AdamW(parameter_groups(model, wd), lr=...)``."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    return [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
