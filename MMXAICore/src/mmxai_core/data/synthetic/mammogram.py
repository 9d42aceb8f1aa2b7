"""Mammogram-like 2-D phantoms (CC and MLO views).

The image is drawn with the chest wall at column 0 (a left breast, as DICOM's ``PatientOrientation
A\\R`` for LCC puts it) and mirrored for a right breast, so the breast always hangs from the side named by
``ImageLaterality``. Content: a half-elliptical compressed breast with a soft skin edge and thinner
periphery, fatty background with smooth texture, fibroglandular tissue whose amount follows breast
density, a pectoral muscle wedge on MLO views, the lesion, and quantum noise. Values are in 0..1
(1 = 4095 stored).
"""

from __future__ import annotations

import numpy as np

from mmxai_core.data.synthetic.lesion_model import Lesion
from mmxai_core.data.synthetic.lesion_render import render_lesion
from mmxai_core.data.synthetic.texture import glandular_tissue, smooth_noise


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def render_mammogram(rng: np.random.Generator, size: tuple[int, int], pixel_mm: float, view: str,
                     laterality: str, density_code: int, lesion: Lesion) -> tuple[np.ndarray, np.ndarray]:
    """Intensity (Y, X) float32 in 0..1 and lesion mask (Y, X) uint8 of one view."""
    h, w = size
    sp = (pixel_mm, pixel_mm)
    jj, ii = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = w * rng.uniform(0.74, 0.92)
    if view == "MLO":
        cy, half_h = h * rng.uniform(0.52, 0.58), h * rng.uniform(0.42, 0.47)
    else:
        cy, half_h = h * rng.uniform(0.46, 0.54), h * rng.uniform(0.36, 0.43)
    theta = np.arctan2((jj - cy) / half_h, ii / depth)
    wobble = 1.0 + 0.03 * np.cos(2 * theta + rng.uniform(0, 6.3)) + 0.02 * np.cos(3 * theta + rng.uniform(0, 6.3))
    rad = np.sqrt((ii / depth) ** 2 + ((jj - cy) / half_h) ** 2) / wobble
    breast = _sigmoid((1.0 - rad) * min(depth, half_h) / 1.2)
    inner = np.clip((1.0 - rad) / 0.12, 0.0, 1.0)
    weight = breast * inner * np.exp(-((ii / depth - 0.42) ** 2) / 0.12 - ((jj - cy) / half_h) ** 2 / 0.35)
    gland = glandular_tissue(rng, (h, w), sp, density_code, weight)
    thickness = 0.7 + 0.3 * np.clip((1.0 - rad) / 0.25, 0.0, 1.0)
    fat = 0.24 + 0.025 * smooth_noise(rng, (h, w), 5.0, sp)
    tissue = (fat + 0.24 * gland * inner + 0.02 * smooth_noise(rng, (h, w), 1.0, sp)) * thickness
    if view == "MLO":
        pw, ph = w * rng.uniform(0.22, 0.34), h * rng.uniform(0.45, 0.65)
        pect = _sigmoid((1.0 - ii / pw - jj / ph) * 12.0)
        tissue = tissue * (1 - pect) + pect * (0.52 + 0.02 * smooth_noise(rng, (h, w), 3.0, sp))
    else:
        pw = ph = 1e-6
    value = breast * tissue
    centre = _lesion_centre(view, lesion, depth, cy, half_h, pw, ph, pixel_mm)
    les, mask = render_lesion((h, w), sp, centre, lesion)
    value = value + les * breast
    value = value + rng.normal(0.0, 0.012, (h, w)) * (0.3 + breast)
    value = np.clip(value + 0.02, 0.0, 1.0).astype(np.float32)
    mask = mask.astype(np.uint8)
    if laterality == "R":
        value, mask = value[:, ::-1].copy(), mask[:, ::-1].copy()
    return value, mask


def _lesion_centre(view: str, lesion: Lesion, depth: float, cy: float, half_h: float, pw: float,
                   ph: float, pixel_mm: float) -> tuple[float, float]:
    """(row, column) of the lesion centre: same distance from the chest wall in both views, a different
    up-down position per view; kept inside the breast and off the pectoral muscle."""
    margin = min(lesion.radius_mm / pixel_mm + 2.0, 0.35 * depth) if lesion.present else 0.0
    x = lesion.depth * depth
    off = lesion.offset if view == "CC" else 0.15 - 0.8 * lesion.offset
    room = max(half_h * np.sqrt(max(1.0 - (x / depth) ** 2, 0.0)) - margin, 0.0)
    y = cy + off * room
    if view == "MLO":
        x = max(x, pw * (1.0 - y / ph) + margin)
    x = float(np.clip(x, margin, depth - margin))
    return float(y), x
