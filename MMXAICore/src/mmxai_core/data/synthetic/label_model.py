"""The documented logistic label model of the synthetic cohort.

For patient *i* with image score ``S`` (see :mod:`.lesion_model`) and true clinical values::

    logit = b0
          + (b_img + b_int * (density_code - 1.5)) * S              # image term, modulated by density
          + b_age * (age - 56) / 10
          + b_density * (density_code - 1.5)                        # A=0 .. D=3
          + b_family * family_history
          + b_presentation[presentation]                            # screening = 0 (reference)
          + b_ca * ln(ca15_3 / 18)
          + b_biopsy * prior_biopsy
          - clinical_offset                                         # centres the clinical score
    P(malignant) = 1 / (1 + exp(-logit)),   label ~ Bernoulli(P)

``heart_rate``, ``blood_group`` and ``left_handed`` do not appear: they are noise. The interaction
``b_int < 0`` says that in denser breasts the lesion appearance matters less (masking by dense tissue).
The *clinical score* is the sum of the clinical terms minus ``clinical_offset`` (their population mean,
so 0 is a typical patient and the sign says which way the clinical facts point); the *image evidence* is
the image term ``(b_img + b_int (density_code - 1.5)) S`` (``S`` has about mean 0, SD 1).

Figures for this model (20,000 simulated patients, AUC of the true score against the label): image score
alone 0.82, clinical score alone 0.72, full logit 0.92; prevalence about 0.47; about 9 % of the patients
are discordant (4 % injected).

A case is **discordant** when image evidence and clinical score point opposite ways, each by at least
``DISCORDANT_IMAGE_MIN`` / ``DISCORDANT_CLINICAL_MIN`` logit units. Some occur by chance; in addition
``DISCORDANT_INJECT_RATE`` of the patients with strong image evidence get their clinical values redrawn
until the case is discordant ("injected"). Labels are still drawn from the model above, so the model stays
the true P(label | image, clinical) for every case.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mmxai_core.data.synthetic.fields import FIELD_BY_NAME, NOISE_FIELDS

INTERCEPT = -0.3
IMAGE_COEF = 2.6
INTERACTION_COEF = -0.6
INTERACTION_FIELD = "breast_density"
DENSITY_CENTER = 1.5

CLINICAL_COEFS: dict[str, dict[str, Any]] = {
    "age": {"coef": 0.95, "transform": "(age - 56) / 10", "center": 56.0, "scale": 10.0},
    "breast_density": {"coef": 0.60, "transform": "density_code - 1.5 (A=0, B=1, C=2, D=3)",
                       "center": DENSITY_CENTER},
    "family_history": {"coef": 1.70, "transform": "1 if true else 0"},
    "presentation": {"coef": {"screening": 0.0, "palpable_lump": 2.1, "nipple_discharge": 0.95,
                              "breast_pain": -1.25},
                     "transform": "coefficient of the category (screening is the reference)"},
    "ca15_3": {"coef": 2.10, "transform": "ln(ca15_3 / 18)", "center": 18.0},
    "prior_biopsy": {"coef": 0.85, "transform": "1 if true else 0"},
}
"""Coefficient of each clinical field with an effect, and the transform it multiplies."""

DISCORDANT_IMAGE_MIN = 2.5
DISCORDANT_CLINICAL_MIN = 2.0
DISCORDANT_INJECT_RATE = 0.12
DISCORDANT_MAX_REDRAWS = 200

FORMULA = ("logit = b0 + (b_img + b_int*(density_code-1.5))*image_score + b_age*(age-56)/10 "
           "+ b_density*(density_code-1.5) + b_family*family_history + b_presentation[presentation] "
           "+ b_ca*ln(ca15_3/18) + b_biopsy*prior_biopsy - clinical_offset; P(malignant) = sigmoid(logit); "
           "label ~ Bernoulli(P)")


def clinical_terms(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-field logit contribution of each clinical field with an effect (true values, codes for
    categories, 0/1 for booleans)."""
    c = CLINICAL_COEFS
    pres = FIELD_BY_NAME["presentation"].categories
    pres_coef = np.array([c["presentation"]["coef"][name] for name in pres])
    return {
        "age": c["age"]["coef"] * (values["age"] - 56.0) / 10.0,
        "breast_density": c["breast_density"]["coef"] * (values["breast_density"] - DENSITY_CENTER),
        "family_history": c["family_history"]["coef"] * values["family_history"],
        "presentation": pres_coef[values["presentation"].astype(int)],
        "ca15_3": c["ca15_3"]["coef"] * np.log(values["ca15_3"] / 18.0),
        "prior_biopsy": c["prior_biopsy"]["coef"] * values["prior_biopsy"],
    }


def _expected_terms() -> float:
    """Population mean of the sum of the clinical terms (numeric terms are centred at their mean or
    median already, so only the boolean and categorical terms contribute)."""
    c = CLINICAL_COEFS
    total = 0.0
    for name in ("family_history", "prior_biopsy"):
        total += c[name]["coef"] * FIELD_BY_NAME[name].dist[2]
    pres = FIELD_BY_NAME["presentation"]
    total += sum(p * c["presentation"]["coef"][cat] for p, cat in zip(pres.dist[1:], pres.categories))
    return float(total)


CLINICAL_OFFSET = _expected_terms()
"""Subtracted from the sum of the clinical terms so that a typical patient has clinical score 0."""


def clinical_score(values: dict[str, np.ndarray]) -> np.ndarray:
    """Sum of the clinical terms minus ``CLINICAL_OFFSET`` (logit units; > 0 points to malignant)."""
    return np.sum(list(clinical_terms(values).values()), axis=0) - CLINICAL_OFFSET


def image_evidence(image_score: np.ndarray, density_code: np.ndarray) -> np.ndarray:
    """The image term of the logit, including the density interaction."""
    return (IMAGE_COEF + INTERACTION_COEF * (density_code - DENSITY_CENTER)) * image_score


def logit(image_score: np.ndarray, values: dict[str, np.ndarray]) -> np.ndarray:
    """The full logit of P(malignant)."""
    return INTERCEPT + image_evidence(image_score, values[INTERACTION_FIELD]) + clinical_score(values)


def is_discordant(img_ev: np.ndarray, clin: np.ndarray) -> np.ndarray:
    """Image evidence and clinical score point opposite ways, both clearly."""
    return ((np.sign(img_ev) * np.sign(clin) < 0) & (np.abs(img_ev) >= DISCORDANT_IMAGE_MIN)
            & (np.abs(clin) >= DISCORDANT_CLINICAL_MIN))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def describe() -> dict[str, Any]:
    """Coefficients, formula, noise fields, interaction and discordance rule, for ``ground_truth.json``."""
    return {
        "formula": FORMULA,
        "intercept": INTERCEPT,
        "image_coef": IMAGE_COEF,
        "clinical_offset": round(CLINICAL_OFFSET, 6),
        "interaction": {
            "field": INTERACTION_FIELD, "coef": INTERACTION_COEF, "center": DENSITY_CENTER,
            "term": "b_int * (density_code - 1.5) * image_score",
            "meaning": "denser breasts: lesion appearance matters less (masking)",
        },
        "clinical": {name: dict(spec) for name, spec in CLINICAL_COEFS.items()},
        "noise_fields": list(NOISE_FIELDS),
        "discordant_rule": {
            "definition": "sign(image_evidence) != sign(clinical_score) and "
                          f"|image_evidence| >= {DISCORDANT_IMAGE_MIN} and "
                          f"|clinical_score| >= {DISCORDANT_CLINICAL_MIN}",
            "inject_rate": DISCORDANT_INJECT_RATE,
            "injected": "clinical values redrawn until discordant, for inject_rate of the patients "
                        f"with |image_evidence| >= {DISCORDANT_IMAGE_MIN}",
        },
    }


def auc(score: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN if one class is absent."""
    from scipy.stats import rankdata

    score = np.asarray(score, float)
    y = np.asarray(y).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
