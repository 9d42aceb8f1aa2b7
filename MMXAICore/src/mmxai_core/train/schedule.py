"""Learning-rate schedule per optimiser step: linear warm-up, then cosine decay to a floor.

Research use, not for diagnosis.

For step ``s`` (0-based, the step about to be taken), ``W`` warm-up steps and ``T`` total steps, the
multiplier of each parameter group's base learning rate is::

    s < W:       (s + 1) / W                                         (linear warm-up, reaches 1 at s = W-1)
    W <= s < T:  r + (1 - r) * 0.5 * (1 + cos(pi * (s - W) / (T - W)))   (cosine from 1 down towards r)
    s >= T:      r

with ``r = min_lr_ratio``. The state is the step count only, so resuming restores it exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """The learning-rate multiplier at ``step`` (formula: module docstring)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return min_ratio
    span = max(1, total_steps - warmup_steps)
    progress = (step - warmup_steps) / span
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineSchedule:
    """Sets ``lr`` of every parameter group of ``optimizer`` to ``base_lr * warmup_cosine(step, ...)``.

    Call :meth:`step` after each ``optimizer.step()``. The group's base rate is kept in
    ``group["initial_lr"]`` (set on construction from ``group["lr"]``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                 min_lr_ratio: float = 0.0):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps], got {warmup_steps}")
        self.optimizer = optimizer
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_lr_ratio = float(min_lr_ratio)
        self.step_count = 0
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._apply()

    def multiplier(self, step: int | None = None) -> float:
        return warmup_cosine(self.step_count if step is None else step, self.total_steps, self.warmup_steps,
                             self.min_lr_ratio)

    def _apply(self) -> None:
        m = self.multiplier()
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * m

    def step(self) -> None:
        """Advance one optimiser step and set the rate for the next one."""
        self.step_count += 1
        self._apply()

    @property
    def lr(self) -> float:
        """Current learning rate of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "min_lr_ratio": self.min_lr_ratio}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("total_steps", "warmup_steps"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(f"schedule state has {key}={state[key]}, this run has {getattr(self, key)}")
        self.step_count = int(state["step_count"])
        self._apply()


__all__ = ["warmup_cosine", "WarmupCosineSchedule"]
