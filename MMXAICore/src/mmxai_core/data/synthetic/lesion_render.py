"""Draw one lesion (see :mod:`.lesion_model`) into a 2-D or 3-D grid, in millimetres.

The same code serves mammograms (2-D) and MR volumes (3-D): the lesion body is an ellipsoid-like blob
whose radius is modulated by smooth random lobes (``irregularity``), with a soft margin
(``margin_mm``), a slightly domed interior, and thin radiating spicules whose length grows with
``spiculation``. Shape details come from a generator seeded with ``lesion.shape_phase``, so every view of
one patient shows the same lesion. Work is limited to bounding boxes (the body, each spicule).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mmxai_core.data.synthetic.lesion_model import Lesion

N_LOBES = 6
SPICULE_BRIGHTNESS = 0.75
"""Spicule peak brightness relative to the lesion body."""


@dataclasses.dataclass(frozen=True)
class _Shape:
    """Random shape details of one lesion in ``dim`` dimensions."""

    rot: np.ndarray
    lobe_dirs: np.ndarray
    lobe_k: np.ndarray
    lobe_phase: np.ndarray
    lobe_amp: np.ndarray
    spic_dirs: np.ndarray
    spic_len: np.ndarray
    spic_width: np.ndarray


def _shape(lesion: Lesion, dim: int) -> _Shape:
    rng = np.random.default_rng(lesion.shape_phase)
    rot, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    lobe_dirs = _unit_vectors(rng, N_LOBES, dim)
    lobe_k = rng.integers(2, 5, N_LOBES)
    lobe_phase = rng.uniform(0, 2 * np.pi, N_LOBES)
    lobe_amp = rng.normal(size=N_LOBES)
    spic_dirs = _unit_vectors(rng, lesion.n_spicules, dim)
    spic_len = (lesion.radius_mm * lesion.spicule_length * lesion.spiculation
                * rng.uniform(0.6, 1.45, lesion.n_spicules))
    spic_width = rng.uniform(0.45, 0.8, lesion.n_spicules)
    return _Shape(rot, lobe_dirs, lobe_k, lobe_phase, lobe_amp, spic_dirs, spic_len, spic_width)


def body_reach_mm(lesion: Lesion) -> float:
    """Largest distance (mm) from the centre at which the lesion body draws anything."""
    return lesion.radius_mm * (1.0 + lesion.eccentricity) * (1.0 + lesion.irregularity) + 5.0 * lesion.margin_mm


def render_lesion(shape: tuple[int, ...], spacing: tuple[float, ...], centre: tuple[float, ...],
                  lesion: Lesion) -> tuple[np.ndarray, np.ndarray]:
    """Intensity (in units of ``lesion.contrast``, float32) and body mask (bool) of ``lesion`` on a grid.

    ``shape``, ``spacing`` (mm) and ``centre`` (continuous index) are given in array axis order, e.g.
    (Y, X) or (Z, Y, X).
    """
    out = np.zeros(shape, np.float32)
    mask = np.zeros(shape, bool)
    if not lesion.present:
        return out, mask
    details = _shape(lesion, len(shape))
    reach = body_reach_mm(lesion)
    box = _box(shape, spacing, centre, np.full(len(shape), -reach), np.full(len(shape), reach))
    if box is not None:
        sl, offsets, grid_shape = box
        value, inside = _body(offsets, lesion, details)
        out[sl] = value.reshape(grid_shape)
        mask[sl] = inside.reshape(grid_shape)
    start = 0.5 * lesion.radius_mm
    for d, length, width in zip(details.spic_dirs, details.spic_len, details.spic_width):
        if length <= 0:
            continue
        end = lesion.radius_mm * (1.0 + lesion.eccentricity) + length
        ends = np.stack([start * d, end * d])
        box = _box(shape, spacing, centre, ends.min(0) - 3 * width, ends.max(0) + 3 * width)
        if box is None:
            continue
        sl, offsets, grid_shape = box
        along = offsets @ d
        perp2 = np.maximum((offsets * offsets).sum(axis=1) - along * along, 0.0)
        taper = np.clip((end - along) / (end - start), 0.0, 1.0) ** 0.7 * (along > start)
        line = SPICULE_BRIGHTNESS * taper * np.exp(-perp2 / (2.0 * width * width))
        np.maximum(out[sl], lesion.contrast * line.reshape(grid_shape).astype(np.float32), out=out[sl])
    return out, mask


def _box(shape, spacing, centre, lo_mm, hi_mm):
    """Slices, mm offsets from the centre (N, D) and grid shape of the index box covering lo..hi mm."""
    lo = [max(int(np.floor(c + a / s)), 0) for c, a, s in zip(centre, lo_mm, spacing)]
    hi = [min(int(np.ceil(c + b / s)) + 1, n) for c, b, s, n in zip(centre, hi_mm, spacing, shape)]
    if any(h <= l for l, h in zip(lo, hi)):
        return None
    axes = [((np.arange(l, h) - c) * s).astype(np.float32) for l, h, c, s in zip(lo, hi, centre, spacing)]
    grids = np.meshgrid(*axes, indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    return tuple(slice(l, h) for l, h in zip(lo, hi)), offsets, grids[0].shape


def _body(offsets: np.ndarray, lesion: Lesion, s: _Shape) -> tuple[np.ndarray, np.ndarray]:
    """Body intensity (units of contrast) and membership at ``offsets`` (N, D) mm from the centre."""
    p = offsets @ s.rot
    p[:, 0] = p[:, 0] / (1.0 + lesion.eccentricity)
    dist = np.sqrt((p * p).sum(axis=1))
    unit = p / np.maximum(dist, 1e-6)[:, None]
    lobes = np.cos(s.lobe_k[None, :] * np.pi * (unit @ s.lobe_dirs.T) + s.lobe_phase[None, :]) @ s.lobe_amp
    lobes = lobes / (np.abs(s.lobe_amp).sum() / 2.0)
    radius = lesion.radius_mm * (1.0 + lesion.irregularity * np.clip(lobes, -1.0, 1.0))
    body = 1.0 / (1.0 + np.exp(-(radius - dist) / lesion.margin_mm))
    dome = 0.8 + 0.2 * np.clip(1.0 - (dist / radius) ** 2, 0.0, 1.0)
    return (lesion.contrast * body * dome).astype(np.float32), dist < radius


def _unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.normal(size=(n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)
