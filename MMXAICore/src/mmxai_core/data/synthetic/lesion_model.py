"""What the image shows: lesion presence and appearance, and the ground-truth image score.

Each patient has a latent suspicion ``s ~ N(0, 1)``. Below ``NO_LESION_BELOW`` there is no visible lesion.
Otherwise three visible traits each get their own noisy copy of ``s`` (``u_size``, ``u_contrast``,
``u_shape``, each ``s + N(0, TRAIT_NOISE)``) and are rendered as

* size: radius ``7.5 + 2.5 u_size`` mm (clipped to 4.5..15 mm), i.e. about 9 to 30 pixels across;
* brightness: contrast ``0.32 + 0.12 u_contrast`` (fraction of the tissue intensity range, 0.14..0.7);
* shape: spiculation ``0.45 (u_shape + 0.3)`` (0..1: number-weighted length of thin radiating spicules),
  margin irregularity ``0.10 + 0.10 u_shape`` (0..0.4: lobulation of the outline) and margin blur
  ``0.5 + 0.4 (u_shape + 1)`` mm (0.5..1.7 mm: ill-defined margins).

So benign-looking lesions are small, faint, smooth round/oval blobs with sharp margins, malignant-looking
ones are larger, brighter, lobulated and spiculated. Orientation, eccentricity (oval shape), number of
spicules and position are nuisance traits with no relation to the label.

The **image score** is the mean of the three trait values, ``(u_size + u_contrast + u_shape) / 3``, i.e.
exactly what can be seen; a patient without a lesion gets the constant ``NO_LESION_SCORE``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

NO_LESION_BELOW = -1.1
"""Latent suspicion below which no lesion is drawn (about 13.5 % of patients)."""

NO_LESION_SCORE = -1.6
"""Image score of a patient without a lesion (about the mean latent suspicion of that group)."""

TRAIT_NOISE = 0.35
"""SD of the trait-specific noise around the latent suspicion."""


@dataclasses.dataclass(frozen=True)
class Lesion:
    """Visible appearance of one patient's lesion (or its absence). Lengths in mm."""

    present: bool
    image_score: float
    u_size: float = 0.0
    u_contrast: float = 0.0
    u_shape: float = 0.0
    radius_mm: float = 0.0
    contrast: float = 0.0
    spiculation: float = 0.0
    irregularity: float = 0.0
    margin_mm: float = 0.0
    eccentricity: float = 0.0
    n_spicules: int = 0
    spicule_length: float = 0.0
    depth: float = 0.5
    offset: float = 0.0
    shape_phase: int = 0

    def to_json(self) -> dict[str, Any]:
        """The appearance as it goes into ``ground_truth.json``."""
        if not self.present:
            return {"present": False}
        d = dataclasses.asdict(self)
        d.pop("image_score")
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def sample_lesions(rng: np.random.Generator, n: int) -> list[Lesion]:
    """Draw the latent suspicion and the appearance of ``n`` patients' lesions."""
    s = rng.normal(0.0, 1.0, n)
    traits = s[:, None] + rng.normal(0.0, TRAIT_NOISE, (n, 3))
    nuisance = rng.random((n, 6))
    n_spic = rng.integers(6, 15, n)
    phase = rng.integers(0, 2**31 - 1, n)
    out = []
    for i in range(n):
        if s[i] < NO_LESION_BELOW:
            out.append(Lesion(present=False, image_score=NO_LESION_SCORE))
            continue
        u_size, u_con, u_shape = (float(t) for t in traits[i])
        out.append(Lesion(
            present=True,
            image_score=float((u_size + u_con + u_shape) / 3.0),
            u_size=u_size, u_contrast=u_con, u_shape=u_shape,
            radius_mm=float(np.clip(7.5 + 2.5 * u_size, 4.5, 15.0)),
            contrast=float(np.clip(0.32 + 0.12 * u_con, 0.14, 0.7)),
            spiculation=float(np.clip(0.45 * (u_shape + 0.3), 0.0, 1.0)),
            irregularity=float(np.clip(0.10 + 0.10 * u_shape, 0.0, 0.4)),
            margin_mm=float(np.clip(0.5 + 0.4 * (u_shape + 1.0), 0.5, 1.7)),
            eccentricity=float(0.35 * nuisance[i, 0]),
            n_spicules=int(n_spic[i]),
            spicule_length=float(0.8 + 0.8 * nuisance[i, 2]),
            depth=float(0.25 + 0.5 * nuisance[i, 3]),
            offset=float(-0.6 + 1.2 * nuisance[i, 4]),
            shape_phase=int(phase[i]),
        ))
    return out
