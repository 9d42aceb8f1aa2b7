"""Plan a synthetic cohort in memory: patients, their images and geometry, clinical values, scores and
labels, without drawing a single pixel.

:func:`sample_cohort` is cheap (about ten thousand patients per second), so tests and studies of the
label model can use large cohorts; :mod:`.render` turns one planned image into pixels and a mask, and
:mod:`.output` writes everything to disk.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mmxai_core.data.synthetic import label_model as lm
from mmxai_core.data.synthetic._rng import (STREAM_CLINICAL, STREAM_DISCORDANT, STREAM_IMAGE_LATENT,
                                             STREAM_LABEL, STREAM_MISSING, STREAM_PLAN, rng_for)
from mmxai_core.data.synthetic.fields import FIELD_BY_NAME, FIELDS, sample_clinical, sample_missing
from mmxai_core.data.synthetic.lesion_model import Lesion, sample_lesions

KINDS = ("2d", "3d", "mixed")
CLASSES = ("benign", "malignant")

MG_SIZE = (160, 128)  # rows, columns
MR_SIZE = (96, 96)
MR_SLICES = (12, 32)
TWO_VIEW_RATE = 0.4
OBLIQUE_RATE = 0.35
RESCALE_RATE = 0.4


@dataclasses.dataclass
class ImageCase:
    """One planned image (a mammogram view or an MR series) of a patient.

    For MR, ``rotation`` is the 3x3 matrix whose columns are the LPS directions of the row (i), column (j)
    and slice-normal (k) axes; ``origin`` is the LPS centre of voxel [0, 0, 0] (the slice with the lowest
    position along the normal); ``descending`` says whether InstanceNumber runs against that order.
    """

    key: str
    modality: str
    laterality: str
    view: str | None = None
    size: tuple[int, int] = MG_SIZE  # rows, columns
    n_slices: int = 1
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rotation: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    oblique: bool = False
    oblique_deg: float = 0.0
    descending: bool = False
    rescale: tuple[float, float] = (1.0, 0.0)  # slope, intercept

    @property
    def image_path(self) -> str:
        """Path relative to the cohort folder: a file for MG, a folder of slices for MR."""
        return f"images/{self.key}.dcm" if self.modality == "MG" else f"images/{self.key}"

    @property
    def mask_path(self) -> str:
        """Mask path relative to the cohort folder."""
        return f"masks/{self.key}.nrrd"

    def to_json(self) -> dict[str, Any]:
        """Planned acquisition, for ``ground_truth.json``."""
        d: dict[str, Any] = {"key": self.key, "image": self.image_path, "modality": self.modality,
                             "laterality": self.laterality}
        if self.modality == "MG":
            d.update(view=self.view, size_rows_cols=list(self.size), pixel_spacing=self.spacing[0])
        else:
            d.update(size_rows_cols=list(self.size), n_slices=self.n_slices, spacing=list(self.spacing),
                     oblique=self.oblique, oblique_deg=round(self.oblique_deg, 3),
                     direction=np.round(self.rotation, 8).tolist(), origin=list(self.origin),
                     instance_order="descending" if self.descending else "ascending",
                     rescale_slope=self.rescale[0], rescale_intercept=self.rescale[1])
        return d


@dataclasses.dataclass
class PatientCase:
    """One patient: true clinical values, what is missing, lesion, scores, label and images."""

    index: int
    patient_id: str
    modality: str
    clinical: dict[str, float]
    missing: dict[str, bool]
    lesion: Lesion
    image_score: float
    image_evidence: float
    clinical_score: float
    logit: float
    probability: float
    label: int
    discordant: bool
    discordant_injected: bool
    age_days: int
    images: list[ImageCase]

    @property
    def label_name(self) -> str:
        """``benign`` or ``malignant``."""
        return CLASSES[self.label]


@dataclasses.dataclass
class Cohort:
    """A planned cohort; arrays over patients are available as properties."""

    seed: int
    kind: str
    patients: list[PatientCase]

    @property
    def labels(self) -> np.ndarray:
        """0 = benign, 1 = malignant, per patient."""
        return np.array([p.label for p in self.patients], dtype=int)

    @property
    def image_scores(self) -> np.ndarray:
        """Ground-truth image score per patient."""
        return np.array([p.image_score for p in self.patients])

    @property
    def clinical_scores(self) -> np.ndarray:
        """Ground-truth clinical score per patient."""
        return np.array([p.clinical_score for p in self.patients])

    @property
    def logits(self) -> np.ndarray:
        """Ground-truth logit per patient."""
        return np.array([p.logit for p in self.patients])

    def values(self, name: str, observed: bool = False) -> np.ndarray:
        """One field's values per patient (codes for categories); NaN where missing if ``observed``."""
        v = np.array([p.clinical[name] for p in self.patients], dtype=float)
        if observed:
            v[np.array([p.missing[name] for p in self.patients])] = np.nan
        return v

    def n_images(self) -> int:
        """Number of images (manifest rows)."""
        return sum(len(p.images) for p in self.patients)


def sample_cohort(n: int = 400, seed: int = 0, kind: str = "mixed") -> Cohort:
    """Plan ``n`` patients (deterministic for ``seed``); ``kind`` is ``2d``, ``3d`` or ``mixed``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    lesions = sample_lesions(rng_for(seed, STREAM_IMAGE_LATENT), n)
    score = np.array([les.image_score for les in lesions])
    values = sample_clinical(rng_for(seed, STREAM_CLINICAL), n)
    injected = _inject_discordance(rng_for(seed, STREAM_DISCORDANT), score, values)
    missing = sample_missing(rng_for(seed, STREAM_MISSING), n)
    img_ev = lm.image_evidence(score, values[lm.INTERACTION_FIELD])
    clin = lm.clinical_score(values)
    logit = lm.INTERCEPT + img_ev + clin
    prob = lm.sigmoid(logit)
    label = (rng_for(seed, STREAM_LABEL).random(n) < prob).astype(int)
    discordant = lm.is_discordant(img_ev, clin)
    plan_rng = rng_for(seed, STREAM_PLAN)
    modalities = _modalities(plan_rng, n, kind)
    patients = []
    for i in range(n):
        pid = f"P{i + 1:04d}"
        images = _plan_images(plan_rng, pid, modalities[i])
        patients.append(PatientCase(
            index=i, patient_id=pid, modality=modalities[i],
            clinical={f.name: float(values[f.name][i]) for f in FIELDS},
            missing={f.name: bool(missing[f.name][i]) for f in FIELDS},
            lesion=lesions[i], image_score=float(score[i]), image_evidence=float(img_ev[i]),
            clinical_score=float(clin[i]), logit=float(logit[i]), probability=float(prob[i]),
            label=int(label[i]), discordant=bool(discordant[i]), discordant_injected=bool(injected[i]),
            age_days=int(plan_rng.integers(0, 365)), images=images))
    _guarantee_variety(patients)
    return Cohort(seed=int(seed), kind=kind, patients=patients)


def _inject_discordance(rng: np.random.Generator, score: np.ndarray,
                        values: dict[str, np.ndarray]) -> np.ndarray:
    """Redraw the clinical values of some strong-image-evidence patients until discordant (in place)."""
    n = len(score)
    strong = np.abs(lm.image_evidence(score, values[lm.INTERACTION_FIELD])) >= lm.DISCORDANT_IMAGE_MIN
    chosen = strong & (rng.random(n) < lm.DISCORDANT_INJECT_RATE)
    done = np.zeros(n, dtype=bool)
    for _ in range(lm.DISCORDANT_MAX_REDRAWS):
        todo = np.flatnonzero(chosen & ~done)
        if todo.size == 0:
            break
        draw = sample_clinical(rng, todo.size)
        ok = lm.is_discordant(lm.image_evidence(score[todo], draw[lm.INTERACTION_FIELD]),
                              lm.clinical_score(draw))
        for name in draw:
            values[name][todo[ok]] = draw[name][ok]
        done[todo[ok]] = True
    return done


def _modalities(rng: np.random.Generator, n: int, kind: str) -> list[str]:
    if kind == "2d":
        return ["MG"] * n
    if kind == "3d":
        return ["MR"] * n
    mods = np.array(["MG"] * ((n + 1) // 2) + ["MR"] * (n // 2))
    return [str(m) for m in rng.permutation(mods)]


def _plan_images(rng: np.random.Generator, pid: str, modality: str) -> list[ImageCase]:
    side = "L" if rng.random() < 0.5 else "R"
    if modality == "MG":
        two = rng.random() < TWO_VIEW_RATE
        views = ["CC", "MLO"] if two else [("CC", "MLO")[int(rng.random() < 0.5)]]
        px = float(rng.choice([0.9, 1.0, 1.1]))
        return [ImageCase(key=f"{pid}_{side}_{v}", modality="MG", laterality=side, view=v, size=MG_SIZE,
                          spacing=(px, px, 1.0)) for v in views]
    n_slices = int(rng.integers(MR_SLICES[0], MR_SLICES[1] + 1))
    sxy = float(rng.choice([0.8, 0.9, 1.0]))
    sz = float(rng.choice([2.0, 2.5, 3.0]))
    oblique = bool(rng.random() < OBLIQUE_RATE)
    angle = float(rng.uniform(10.0, 25.0)) if oblique else 0.0
    axis = rng.normal(size=3)
    rot = _rotation(axis, np.deg2rad(angle))
    centre = np.array([60.0 if side == "L" else -60.0, -40.0, 0.0]) + rng.normal(0, 5, 3)
    extent = np.array([(MR_SIZE[1] - 1) * sxy, (MR_SIZE[0] - 1) * sxy, (n_slices - 1) * sz])
    origin = centre - rot @ (extent / 2.0)
    origin = tuple(float(v) for v in np.round(origin, 4))
    rescale = (1.0, 0.0)
    if rng.random() < RESCALE_RATE:
        rescale = (float(rng.choice([0.5, 1.5, 2.0])), float(rng.choice([0.0, -100.0])))
    return [ImageCase(key=f"{pid}_MR", modality="MR", laterality=side, size=MR_SIZE, n_slices=n_slices,
                      spacing=(sxy, sxy, sz), rotation=rot, origin=origin, oblique=oblique,
                      oblique_deg=angle, descending=bool(rng.random() < 0.5), rescale=rescale)]


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix (rounded to 8 decimals, re-orthonormalised, as written to DICOM)."""
    a = axis / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    r = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    row, col = np.round(r[:, 0], 8), np.round(r[:, 1], 8)
    return np.column_stack([row, col, np.cross(row, col)])


def _guarantee_variety(patients: list[PatientCase]) -> None:
    """Make sure a cohort with MG and MR patients has a two-view MG patient and an oblique MR series
    (small test cohorts need both)."""
    mg = [p for p in patients if p.modality == "MG"]
    if len(mg) >= 2 and not any(len(p.images) == 2 for p in mg):
        p = mg[0]
        first = p.images[0]
        other = "MLO" if first.view == "CC" else "CC"
        p.images.append(dataclasses.replace(first, key=f"{p.patient_id}_{first.laterality}_{other}",
                                            view=other))
        p.images.sort(key=lambda im: im.view != "CC")
    mr = [p for p in patients if p.modality == "MR"]
    if len(mr) >= 2 and not any(p.images[0].oblique for p in mr):
        im = mr[0].images[0]
        rot = _rotation(np.array([0.3, 1.0, 0.2]), np.deg2rad(20.0))
        extent = np.array([(im.size[1] - 1) * im.spacing[0], (im.size[0] - 1) * im.spacing[1],
                           (im.n_slices - 1) * im.spacing[2]])
        centre = np.asarray(im.origin) + im.rotation @ (extent / 2.0)
        origin = tuple(float(v) for v in np.round(centre - rot @ (extent / 2.0), 4))
        mr[0].images[0] = dataclasses.replace(im, rotation=rot, origin=origin, oblique=True, oblique_deg=20.0)


def field_names() -> list[str]:
    """Clinical field names in manifest column order."""
    return [f.name for f in FIELDS]


def observed_cell(patient: PatientCase, name: str) -> str:
    """The manifest cell of one field for one patient ('' when missing)."""
    if patient.missing[name]:
        return ""
    return FIELD_BY_NAME[name].cell(patient.clinical[name])
