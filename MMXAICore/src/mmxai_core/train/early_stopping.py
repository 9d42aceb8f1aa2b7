"""Early stopping on the validation loss (the paper's protocol, section 3.7).

Research use, not for diagnosis.

An epoch *improves* when its validation loss is below ``best - min_delta``; after ``patience`` epochs in a
row without improvement, :attr:`EarlyStopping.should_stop` becomes True. The state is a few numbers
(JSON-able) so a resumed run continues the count.
"""

from __future__ import annotations

import math
from typing import Any


class EarlyStopping:
    """Track the best (lowest) validation loss and count epochs without improvement."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record the validation loss of ``epoch``; return True if it is the new best."""
        if not math.isfinite(value):
            raise ValueError(f"validation loss of epoch {epoch} is not finite ({value})")
        if self.best is None or value < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = float(value), int(epoch), 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "min_delta": self.min_delta, "best": self.best,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = None if state.get("best") is None else float(state["best"])
        self.best_epoch = None if state.get("best_epoch") is None else int(state["best_epoch"])
        self.bad_epochs = int(state.get("bad_epochs", 0))


__all__ = ["EarlyStopping"]
