"""Permutation estimate of Shapley values, for games too large to enumerate (research use only).

For a permutation pi of the d players, the marginal contribution of player i is
v(players before i in pi, plus i) - v(players before i). Its mean over uniformly random permutations is
the Shapley value. Antithetic sampling draws pi together with its reverse (a player early in one is late
in the other), which cancels much of the variance from coalition size; the pair mean is one sample.

Properties of the estimate:

* Efficiency holds exactly (up to rounding) for every single permutation, because its marginal
  contributions telescope to v(all) - v(none); so it holds for the mean. The residual is still reported.
* Standard error per player: the sample standard deviation of the per-pair means over sqrt(pairs).
* Every permutation visits d + 1 prefixes; prefixes shared between permutations (the empty and the full
  coalition always, small and large ones often) are evaluated once: the value function sees each unique
  coalition once, in one call (it chunks internally).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

#: Default number of permutations (antithetic: half of them are the reverses of the other half).
DEFAULT_PERMUTATIONS = 256


@dataclasses.dataclass
class PermutationEstimate:
    """values (d,), standard_errors (d,), v_empty = v(no player), v_full = v(all players),
    n_permutations (including reverses), n_evaluations (unique coalitions evaluated),
    efficiency_residual = v_full - v_empty - sum(values)."""

    values: np.ndarray
    standard_errors: np.ndarray
    v_empty: float
    v_full: float
    n_permutations: int
    n_evaluations: int

    @property
    def efficiency_residual(self) -> float:
        return float(self.v_full - self.v_empty - self.values.sum())


def _prefix_coalitions(perms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """perms (P, d) -> (members (P, d+1, d) bool: prefix j of permutation p, rank (P, d) position of each
    player in its permutation)."""
    p, d = perms.shape
    rank = np.empty_like(perms)
    np.put_along_axis(rank, perms, np.broadcast_to(np.arange(d), (p, d)), axis=1)
    members = rank[:, None, :] < np.arange(d + 1)[None, :, None]
    return members, rank


def permutation_shapley(value_fn: Callable[[np.ndarray], np.ndarray], d: int, *,
                        n_permutations: int = DEFAULT_PERMUTATIONS, antithetic: bool = True,
                        seed: int | np.random.Generator | None = 0) -> PermutationEstimate:
    """Estimate the Shapley values of ``value_fn(coalitions (R, d) bool) -> (R,)``.

    ``n_permutations`` is rounded up to an even number when ``antithetic`` (pairs); at least 2 samples
    (pairs, or permutations without antithetic sampling) are needed for a standard error.
    """
    if d < 0:
        raise ValueError(f"d must be >= 0, got {d}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if d == 0:
        v = np.asarray(value_fn(np.zeros((1, 0), dtype=bool)), dtype=np.float64).reshape(-1)
        return PermutationEstimate(np.zeros(0), np.zeros(0), float(v[0]), float(v[0]), 0, 1)
    n_samples = max(2, -(-int(n_permutations) // 2) if antithetic else int(n_permutations))
    perms = np.argsort(rng.random((n_samples, d)), axis=1)
    if antithetic:
        perms = np.concatenate([perms, perms[:, ::-1]])
    members, rank = _prefix_coalitions(perms)                      # (P, d+1, d), (P, d)
    flat = members.reshape(-1, d)
    keys = np.packbits(flat, axis=1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    v_unique = np.asarray(value_fn(flat[first]), dtype=np.float64).reshape(-1)
    if v_unique.shape != first.shape:
        raise ValueError(f"value_fn returned {v_unique.shape}, expected ({len(first)},)")
    v = v_unique[inverse.reshape(-1)].reshape(len(perms), d + 1)  # value of each prefix
    step = np.diff(v, axis=1)                                      # (P, d): contribution at position j
    marginal = np.take_along_axis(step, rank, axis=1)              # (P, d): contribution of player i
    samples = (marginal[:n_samples] + marginal[n_samples:]) / 2 if antithetic else marginal
    values = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    return PermutationEstimate(values=values, standard_errors=se, v_empty=float(v[0, 0]), v_full=float(v[0, -1]),
                               n_permutations=len(perms), n_evaluations=len(first))


__all__ = ["DEFAULT_PERMUTATIONS", "PermutationEstimate", "permutation_shapley"]
