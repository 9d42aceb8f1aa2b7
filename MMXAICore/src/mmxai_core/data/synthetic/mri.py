"""Breast-MRI-like 3-D phantoms: a unilateral axial slab (fat-suppressed T1 after contrast).

Array axes (Z, Y, X) = (slice along the normal, row = toward posterior, column = toward the patient's
left) in the series' own frame; an oblique series is the same anatomy seen through a rotated grid.
Content: air in front, a breast mound whose height shrinks toward the slab ends, skin, dark suppressed fat
with smooth texture, fibroglandular tissue following breast density, the chest wall (pectoral muscle,
then dark lung), an enhancing lesion, a smooth coil bias field and Rician noise. Values are in about
0..1.2 (multiplied by ``PHYSICAL_SCALE`` before rescaling to stored integers).
"""

from __future__ import annotations

import numpy as np

from mmxai_core.data.synthetic.lesion_model import Lesion
from mmxai_core.data.synthetic.lesion_render import render_lesion
from mmxai_core.data.synthetic.texture import glandular_tissue, smooth_noise

PHYSICAL_SCALE = 2000.0
ENHANCEMENT = 1.4
"""Lesion contrast multiplier on MR (enhancing lesions stand out more than on mammograms)."""


def render_mri(rng: np.random.Generator, shape: tuple[int, int, int], spacing_xyz: tuple[float, float, float],
               laterality: str, density_code: int, lesion: Lesion) -> tuple[np.ndarray, np.ndarray]:
    """Intensity (Z, Y, X) float32 and lesion mask (Z, Y, X) uint8 of one series."""
    nz, ny, nx = shape
    sx, sy, sz = spacing_xyz
    sp = (sz, sy, sx)
    z = ((np.arange(nz) - (nz - 1) / 2.0) * sz)[:, None, None]
    y = (np.arange(ny) * sy)[None, :, None]
    x = ((np.arange(nx) - (nx - 1) / 2.0) * sx)[None, None, :]
    lateral = 1.0 if laterality == "L" else -1.0
    x0 = lateral * nx * sx * rng.uniform(0.0, 0.06)
    y_cw = ny * sy * rng.uniform(0.66, 0.74) + lateral * 0.08 * x
    half_w = nx * sx * rng.uniform(0.40, 0.47)
    b0 = y_cw.mean() - ny * sy * rng.uniform(0.06, 0.14)
    z_half = max(nz * sz * 0.62, 40.0)
    height = b0 * np.sqrt(np.clip(1.0 - (z / z_half) ** 2, 0.2, 1.0))
    u = (x - x0) / half_w
    v = (y_cw - y) / height
    r = np.sqrt(u ** 2 + v ** 2)
    mound = 1.0 / (1.0 + np.exp(-(1.0 - r) * 40.0)) * (v > 0)
    body = (y >= y_cw).astype(np.float32)
    skin = np.exp(-((1.0 - r) * height / 1.2) ** 2) * (v > 0) * 0.25
    weight = mound * np.clip((1.0 - r) / 0.15, 0, 1) * np.exp(-u ** 2 / 0.5 - (v - 0.45) ** 2 / 0.12)
    weight = np.broadcast_to(weight, shape)
    gland = glandular_tissue(rng, shape, sp, density_code, weight)
    fat = 0.14 + 0.025 * smooth_noise(rng, shape, 4.0, sp)
    breast_tissue = fat + 0.22 * gland
    depth_cw = y - y_cw
    muscle_t = rng.uniform(7.0, 12.0)
    chest = np.where(depth_cw < muscle_t, 0.30, np.where(depth_cw < muscle_t + 6.0, 0.12, 0.03))
    value = mound * breast_tissue + body * chest + skin
    centre = _lesion_centre(rng, lesion, shape, sp, x0, half_w, float(y_cw.mean()), b0, z_half)
    les, mask = render_lesion(shape, sp, centre, lesion)
    value = value + ENHANCEMENT * les * np.clip(mound + body, 0, 1)
    bias = 1.0 + 0.12 * smooth_noise(rng, shape, 40.0, sp)
    value = value * bias
    sigma = 0.015
    noise = rng.standard_normal((2, *shape), dtype=np.float32) * sigma
    value = np.sqrt((value + noise[0]) ** 2 + noise[1] ** 2)
    return value.astype(np.float32), mask.astype(np.uint8)


def _lesion_centre(rng: np.random.Generator, lesion: Lesion, shape: tuple[int, int, int],
                   sp: tuple[float, float, float], x0: float, half_w: float, y_cw: float, b0: float,
                   z_half: float) -> tuple[float, float, float]:
    """(k, j, i) of the lesion centre inside the breast mound, near the middle of the slab."""
    nz, _, nx = shape
    sz, sy, sx = sp
    zc_mm = rng.uniform(-0.2, 0.2) * nz * sz
    height = b0 * np.sqrt(np.clip(1.0 - (zc_mm / z_half) ** 2, 0.2, 1.0))
    r_mm = lesion.radius_mm if lesion.present else 0.0
    v = lesion.depth * 0.8
    u = lesion.offset * 0.6 * np.sqrt(max(1.0 - v ** 2, 0.0))
    x_mm = x0 + u * half_w
    y_mm = y_cw - v * height
    y_mm = float(np.clip(y_mm, r_mm * 0.6 + 2.0, y_cw))
    k = zc_mm / sz + (nz - 1) / 2.0
    j = y_mm / sy
    i = x_mm / sx + (nx - 1) / 2.0
    return float(k), float(j), float(i)
