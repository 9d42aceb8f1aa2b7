"""Patient-grouped, label-stratified, seeded train / val / test splits, saved as JSON.

Rules of :func:`make_splits`:

* **Grouped by patient**: every patient is in exactly one split, so no patient's images leak across splits.
* **A predefined ``split`` column wins**: a patient with a predefined split keeps it for all their rows
  (rows of that patient without a split follow it); two different predefined splits for one patient are
  an error naming the rows. Only the remaining patients are split, with the given fractions.
* **Stratified by label** at the patient level: each patient's stratum is their most frequent label
  (ties: the rarer class). scikit-learn's ``train_test_split(..., stratify=...)`` draws test, then val from
  the rest; when a stratum is too small to stratify (fewer than 2 patients, or fewer held-out patients
  than strata) that draw is unstratified.
* **Seeded and order-independent**: patients are sorted by id before splitting, so the same seed and the
  same cohort give the same splits whatever the row order.
* Every non-empty split must contain every class, train must not be empty, and val / test must not be
  empty unless their fraction is 0 (and no row predefines them).

The JSON file (:func:`save_splits`) holds the seed, the fractions, the class names, ``patient -> split`` and
counts per split and class; :meth:`Splits.assign` applies a saved file to a manifest and refuses
patients the file does not know.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mmxai_core.data.manifest import SPLIT_NAMES, Manifest
from mmxai_core.errors import ManifestError
from mmxai_core.utils.atomic import write_json_atomic

FORMAT = "mmxai.splits"
VERSION = 1


class SplitError(ManifestError):
    """A manifest cannot be split as asked, or a split file does not fit a manifest. ``path`` is the
    manifest (or split file); ``problems`` lists (row, column, message)."""


@dataclasses.dataclass
class Splits:
    """Assignment of patients to ``train`` / ``val`` / ``test``.

    Attributes:
        seed: random seed used.
        val_fraction, test_fraction: fractions of the patients without a predefined split.
        classes: class names of the manifest the splits were made from.
        patients: ``{patient_id: split}``.
        counts: ``{split: {class: number of rows (images)}}`` in the manifest the splits were made from.
        patient_counts: ``{split: number of patients}``.
        source: the file the splits were loaded from (not saved), for messages.
    """

    seed: int
    val_fraction: float
    test_fraction: float
    classes: list[str]
    patients: dict[str, str]
    counts: dict[str, dict[str, int]]
    patient_counts: dict[str, int]
    source: str | None = None

    def assign(self, manifest: Manifest) -> np.ndarray:
        """Split name per manifest row, object array (N,).

        Raises:
            SplitError: the manifest has patients the splits do not know (named with their rows), a
                predefined ``split`` cell disagrees with the splits, or the class names differ.
        """
        where = f"the split file {self.source}" if self.source else "the splits"
        problems: list[tuple[int | None, str | None, str]] = []
        if list(manifest.classes) != list(self.classes):
            problems.append((None, "label", f"classes {manifest.classes} differ from those of {where} "
                                            f"{self.classes}"))
        rows_of: dict[str, list[int]] = defaultdict(list)
        out = np.empty(len(manifest), dtype=object)
        for i, (pid, row, predefined) in enumerate(zip(manifest.table["patient_id"], manifest.table["row"],
                                                       manifest.table["split"])):
            split = self.patients.get(pid)
            if split is None:
                rows_of[pid].append(int(row))
                continue
            if predefined is not None and predefined != split:
                problems.append((int(row), "split", f"predefined split '{predefined}' disagrees with {where} "
                                                    f"(patient '{pid}' is in '{split}')"))
            out[i] = split
        for pid, rows in rows_of.items():
            problems.append((rows[0], "patient_id", f"patient '{pid}' (rows {_rows_text(rows)}) is not in {where}; "
                                                    f"make new splits for this manifest"))
        if problems:
            raise SplitError(manifest.path, problems)
        return out

    def indices(self, manifest: Manifest) -> dict[str, np.ndarray]:
        """``{split: row positions (int64)}`` of the manifest, for every split name."""
        assigned = self.assign(manifest)
        return {s: np.flatnonzero(assigned == s).astype(np.int64) for s in SPLIT_NAMES}

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "seed": self.seed, "val_fraction": self.val_fraction,
                "test_fraction": self.test_fraction, "classes": list(self.classes),
                "patients": dict(sorted(self.patients.items())), "counts": self.counts,
                "patient_counts": self.patient_counts}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | None = None) -> "Splits":
        where = source or "<splits>"

        def bad(msg: str) -> SplitError:
            return SplitError(where, [(None, None, msg)])

        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise bad(f"not a split file (expected \"format\": \"{FORMAT}\")")
        if d.get("version") != VERSION:
            raise bad(f"split file version {d.get('version')!r} is not supported (this is version {VERSION})")
        missing = [k for k in ("seed", "val_fraction", "test_fraction", "classes", "patients") if k not in d]
        if missing:
            raise bad(f"missing key(s) {', '.join(missing)}")
        patients = d["patients"]
        if not isinstance(patients, Mapping) or not patients:
            raise bad("'patients' must be a non-empty mapping of patient id to split")
        wrong = sorted({str(v) for v in patients.values() if v not in SPLIT_NAMES})
        if wrong:
            raise bad(f"unknown split name(s) {', '.join(wrong)}; use {', '.join(SPLIT_NAMES)}")
        return cls(seed=int(d["seed"]), val_fraction=float(d["val_fraction"]),
                   test_fraction=float(d["test_fraction"]), classes=[str(c) for c in d["classes"]],
                   patients={str(k): str(v) for k, v in patients.items()},
                   counts=dict(d.get("counts") or {}), patient_counts=dict(d.get("patient_counts") or {}),
                   source=source)


def _rows_text(rows: list[int], limit: int = 5) -> str:
    text = ", ".join(map(str, rows[:limit]))
    return text + (", ..." if len(rows) > limit else "")


def _n_held_out(fraction: float, n: int) -> int:
    """round(fraction * n), at least 1 when fraction > 0 and n > 0."""
    if fraction <= 0 or n == 0:
        return 0
    return max(1, int(math.floor(fraction * n + 0.5)))


def _draw(ids: list[str], strata: list[int], n_hold: int, seed: int) -> tuple[list[str], list[str]]:
    """Split ``ids`` into (kept, held-out) with ``n_hold`` held out, stratified by ``strata`` when
    scikit-learn can (every stratum >= 2 members, enough patients on both sides)."""
    from sklearn.model_selection import train_test_split

    if n_hold == 0:
        return list(ids), []
    if n_hold >= len(ids):
        return [], list(ids)
    counts = Counter(strata)
    n_strata = len(counts)
    can_stratify = (n_strata > 1 and min(counts.values()) >= 2 and n_hold >= n_strata
                    and len(ids) - n_hold >= n_strata)
    kept, held = train_test_split(list(ids), test_size=n_hold, random_state=seed, shuffle=True,
                                  stratify=list(strata) if can_stratify else None)
    return list(kept), list(held)


def make_splits(manifest: Manifest, val_fraction: float = 0.15, test_fraction: float = 0.15,
                seed: int = 0) -> Splits:
    """Split a manifest's patients into train / val / test (see the module docstring for the rules).

    Args:
        manifest: a loaded :class:`~mmxai_core.data.manifest.Manifest`.
        val_fraction, test_fraction: fractions (0 <= f, sum < 1) of the patients without a predefined
            split that go to val and test (rounded; at least one patient when the fraction is > 0).
        seed: random seed.

    Raises:
        SplitError: conflicting predefined splits (rows named), too few patients, an empty split, or a
            split missing a class (named).
    """
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise SplitError(manifest.path, [(None, None, f"{name} must be in [0, 1), got {f!r}")])
    if val_fraction + test_fraction >= 1:
        raise SplitError(manifest.path, [(None, None, f"val_fraction + test_fraction must be < 1, got "
                                                      f"{val_fraction} + {test_fraction}")])
    table = manifest.table
    pids = [str(p) for p in table["patient_id"]]
    labels = manifest.labels
    rows = [int(r) for r in table["row"]]
    predefined_col = list(table["split"]) if "split" in table else [None] * len(pids)

    # ----- predefined splits per patient
    predefined: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for pid, row, s in zip(pids, rows, predefined_col):
        if s is not None:
            predefined[pid][s].append(row)
    problems: list[tuple[int | None, str | None, str]] = []
    for pid, by_split in predefined.items():
        if len(by_split) > 1:
            desc = "; ".join(f"'{s}' in rows {_rows_text(r)}" for s, r in by_split.items())
            first = min(r for rs in by_split.values() for r in rs)
            problems.append((first, "split", f"patient '{pid}' has different predefined splits: {desc}"))
    if problems:
        raise SplitError(manifest.path, problems)
    assignment: dict[str, str] = {pid: next(iter(by_split)) for pid, by_split in predefined.items()}

    # ----- stratum per unassigned patient: most frequent label, ties -> rarer class
    class_totals = np.bincount(labels, minlength=len(manifest.classes))
    patient_labels: dict[str, Counter] = defaultdict(Counter)
    for pid, lab in zip(pids, labels):
        patient_labels[pid][int(lab)] += 1
    free = sorted(p for p in patient_labels if p not in assignment)
    strata = {p: max(patient_labels[p].items(), key=lambda kv: (kv[1], -class_totals[kv[0]], -kv[0]))[0]
              for p in free}

    n = len(free)
    n_test, n_val = _n_held_out(test_fraction, n), _n_held_out(val_fraction, n)
    if n and n_test + n_val > n:
        raise SplitError(manifest.path, [(None, "patient_id", f"{n} patient(s) without a predefined split are "
                                                              f"too few for val_fraction={val_fraction} and "
                                                              f"test_fraction={test_fraction}")])
    rest, test = _draw(free, [strata[p] for p in free], n_test, seed)
    train, val = _draw(rest, [strata[p] for p in rest], n_val, seed)
    for group, name in ((train, "train"), (val, "val"), (test, "test")):
        assignment.update({p: name for p in group})

    # ----- counts and checks
    counts = {s: {c: 0 for c in manifest.classes} for s in SPLIT_NAMES}
    for pid, lab in zip(pids, labels):
        counts[assignment[pid]][manifest.classes[int(lab)]] += 1
    patient_counts = {s: 0 for s in SPLIT_NAMES}
    for s in assignment.values():
        patient_counts[s] += 1
    problems = _check(counts, patient_counts, manifest.classes,
                      required={"train": True, "val": val_fraction > 0, "test": test_fraction > 0},
                      class_patients={c: sum(1 for p in patient_labels if patient_labels[p][k])
                                      for k, c in enumerate(manifest.classes)})
    if problems:
        raise SplitError(manifest.path, problems)
    return Splits(seed=int(seed), val_fraction=float(val_fraction), test_fraction=float(test_fraction),
                  classes=list(manifest.classes), patients=dict(sorted(assignment.items())), counts=counts,
                  patient_counts=patient_counts)


def _check(counts: dict[str, dict[str, int]], patient_counts: dict[str, int], classes: list[str],
           required: dict[str, bool], class_patients: dict[str, int]) -> list[tuple[int | None, str | None, str]]:
    problems: list[tuple[int | None, str | None, str]] = []
    for s in SPLIT_NAMES:
        if patient_counts[s] == 0:
            if required[s]:
                problems.append((None, "split", f"split '{s}' is empty; add patients or lower the other "
                                                f"fractions" + ("" if s == "train" else f" (or set {s}_fraction=0)")))
            continue
        for c in classes:
            if counts[s][c] == 0:
                problems.append((None, "split", f"split '{s}' has no case of class '{c}' ({class_patients[c]} "
                                                f"patient(s) of that class in all); add cases, change the "
                                                f"fractions or the seed"))
    return problems


def save_splits(splits: Splits, path: str | os.PathLike) -> Path:
    """Write the splits atomically as JSON; returns the path."""
    return write_json_atomic(path, splits.to_dict())


def load_splits(path: str | os.PathLike) -> Splits:
    """Read a split file written by :func:`save_splits`.

    Raises:
        SplitError: missing file, invalid JSON, or not a split file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SplitError(path, [(None, None, "split file not found")]) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SplitError(path, [(None, None, f"cannot read the split file ({e})")]) from None
    return Splits.from_dict(data, source=str(path))
