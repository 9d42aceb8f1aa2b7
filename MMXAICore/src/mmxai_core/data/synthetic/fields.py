"""The clinical fields of the synthetic cohort: what they mean, how they are distributed, how they are
written to the manifest and declared in the schema.

Values are held as floats per field: numeric fields in their unit, ordinal / categorical fields as the
category code 0..K-1 (index into ``categories``), boolean fields as 0.0 / 1.0. All fields are drawn
independently of each other and of the image (except for the deliberately discordant cases, see
:mod:`.label_model`). Which field affects the label, and by how much, is defined in :mod:`.label_model`;
the three fields in :data:`NOISE_FIELDS` have no effect at all.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

MISSING_RATE = 0.10
"""Probability that a clinical cell is written empty (missing completely at random, per field)."""


@dataclasses.dataclass(frozen=True)
class SynthField:
    """One clinical field: schema declaration plus the distribution of its true value.

    ``dist`` is one of ``("normal", mean, sd)``, ``("lognormal", median, sigma)`` or
    ``("choice", p_0, ..., p_K-1)`` (category / boolean probabilities in code order).
    """

    name: str
    label: str
    type: str  # numeric | ordinal | categorical | boolean
    help: str
    dist: tuple
    unit: str | None = None
    range: tuple[float, float] | None = None
    categories: tuple[str, ...] | None = None
    dicom: str | None = None
    decimals: int = 0
    missing_rate: float = MISSING_RATE

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` true values (floats; codes for non-numeric fields)."""
        kind, *params = self.dist
        if kind == "normal":
            x = rng.normal(params[0], params[1], size=n)
        elif kind == "lognormal":
            x = params[0] * np.exp(rng.normal(0.0, params[1], size=n))
        elif kind == "choice":
            p = np.asarray(params, dtype=float)
            return rng.choice(len(p), size=n, p=p / p.sum()).astype(float)
        else:  # pragma: no cover - a programming error in FIELDS
            raise ValueError(f"unknown distribution {kind!r}")
        if self.range is not None:
            x = np.clip(x, self.range[0], self.range[1])
        return np.round(x, self.decimals)

    def cell(self, value: float) -> str:
        """The manifest cell text for one true value (never empty: missingness is applied by the caller)."""
        if self.type == "numeric":
            return f"{value:.{self.decimals}f}"
        if self.type == "boolean":
            return "true" if value >= 0.5 else "false"
        return self.categories[int(value)]  # type: ignore[index]

    def json_value(self, value: float) -> Any:
        """The true value as it goes into ``ground_truth.json``."""
        if self.type == "numeric":
            return round(float(value), self.decimals) if self.decimals else round(value)
        if self.type == "boolean":
            return bool(value >= 0.5)
        return self.categories[int(value)]  # type: ignore[index]

    def schema_entry(self) -> dict[str, Any]:
        """This field's entry in ``schema.yaml`` (keys as in CONVENTIONS.md)."""
        entry: dict[str, Any] = {"name": self.name, "label": self.label, "type": self.type}
        if self.unit:
            entry["unit"] = self.unit
        if self.range is not None:
            entry["range"] = [_num(self.range[0]), _num(self.range[1])]
        if self.categories is not None:
            entry["categories"] = list(self.categories)
        entry["help"] = self.help
        if self.dicom:
            entry["dicom"] = self.dicom
        return entry


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


FIELDS: tuple[SynthField, ...] = (
    SynthField("age", "Age", "numeric", "Age at imaging in years.", ("normal", 56.0, 11.0),
               unit="years", range=(25.0, 90.0), dicom="PatientAge"),
    SynthField("breast_density", "Breast density", "ordinal",
               "BI-RADS breast composition: A fatty, B scattered, C heterogeneously dense, D extremely dense.",
               ("choice", 0.10, 0.40, 0.40, 0.10), categories=("A", "B", "C", "D")),
    SynthField("family_history", "Family history", "boolean",
               "First-degree relative with breast or ovarian cancer.", ("choice", 0.80, 0.20)),
    SynthField("presentation", "Presentation", "categorical",
               "Why the patient was imaged.", ("choice", 0.55, 0.25, 0.10, 0.10),
               categories=("screening", "palpable_lump", "nipple_discharge", "breast_pain")),
    SynthField("ca15_3", "CA 15-3", "numeric", "Serum tumour marker CA 15-3.",
               ("lognormal", 18.0, 0.45), unit="U/mL", range=(2.0, 300.0), decimals=1),
    SynthField("prior_biopsy", "Prior benign biopsy", "boolean",
               "A previous breast biopsy with a benign result.", ("choice", 0.85, 0.15)),
    SynthField("heart_rate", "Resting heart rate", "numeric", "Resting heart rate (no effect on the label).",
               ("normal", 72.0, 9.0), unit="bpm", range=(40.0, 120.0)),
    SynthField("blood_group", "Blood group", "categorical", "ABO blood group (no effect on the label).",
               ("choice", 0.42, 0.44, 0.10, 0.04), categories=("A", "O", "B", "AB")),
    SynthField("left_handed", "Left-handed", "boolean", "Left-handedness (no effect on the label).",
               ("choice", 0.89, 0.11)),
)
"""All clinical fields, in schema (= manifest column) order."""

FIELD_BY_NAME: dict[str, SynthField] = {f.name: f for f in FIELDS}

NOISE_FIELDS: tuple[str, ...] = ("heart_rate", "blood_group", "left_handed")
"""Fields drawn like the others but with no effect on the label."""


def sample_clinical(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """True values of every field for ``n`` patients, drawn independently."""
    return {f.name: f.sample(rng, n) for f in FIELDS}


def sample_missing(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Boolean masks (True = written as an empty cell), independent of every value (MCAR)."""
    return {f.name: rng.random(n) < f.missing_rate for f in FIELDS}


def dicom_age(age_years: float) -> str:
    """DICOM Age String, e.g. ``057Y``."""
    return f"{math.floor(age_years):03d}Y"
