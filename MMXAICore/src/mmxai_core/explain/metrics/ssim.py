"""SSIM for 2D maps and 3D volumes, and a Pearson correlation that says when it is undefined.

Research use, not for diagnosis.

**SSIM** (Wang et al. 2004), computed exactly as scikit-image's ``structural_similarity`` with
``channel_axis=None`` (tested to 1e-6): for images x, y and a window w (Gaussian with ``sigma`` = 1.5 and
radius ``int(3.5 sigma + 0.5)`` = 5, i.e. 11 taps; or uniform ``win_size`` = 7),

    mu_x = w * x,  v_x = c (w * x^2 - mu_x^2),  v_xy = c (w * xy - mu_x mu_y),  c = NP / (NP - 1)
    (sample covariance, NP = win_size^ndim; c = 1 with ``use_sample_covariance=False``)
    S = (2 mu_x mu_y + C1)(2 v_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(v_x + v_y + C2)),
    C1 = (K1 L)^2, C2 = (K2 L)^2, K1 = 0.01, K2 = 0.03, L = ``data_range``

and the SSIM is the mean of S over the positions whose whole window lies inside the image (scikit-image
computes S everywhere with reflected borders and crops a border of ``(win_size - 1) // 2``; the cropped
values never see the padding, so a "valid" separable convolution gives the same numbers). The filter is
separable and runs in float64 with torch, batched over any leading axes.

Volumes (:func:`volume_ssim`): ``mode="slices"`` (default) = the mean of the 2D SSIM of the real slices
(any number of slices, anisotropic voxels are fine); ``mode="3d"`` = one 3D Gaussian (or cubic uniform)
window, scikit-image's nD SSIM of the (Z, H, W) array (needs Z >= win_size).

``mask`` restricts the average to the window centres where the mask is True (e.g. the part of a map that
is still inside the field of view after a rigid transform); with no mask it is exactly scikit-image's
mean.

**Pearson** (:func:`pearson`): r = cov(a, b) / (sd(a) sd(b)) over the last axis, computed in float64. It is
undefined when either vector is constant (zero spread) or has fewer than two entries: then r = NaN and
``constant`` = True (never a silent 0 or 1). "Constant" means ``max - min <= rtol * max(1, max |a|)``
(``rtol`` = 1e-12).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

VOLUME_MODES = ("slices", "3d")


@dataclasses.dataclass(frozen=True)
class SSIMSettings:
    """SSIM window and constants (defaults = Wang et al. 2004 = scikit-image with ``gaussian_weights=True``).

    gaussian_weights: Gaussian window (True) or uniform window (False).
    sigma:            Gaussian sigma in pixels (window radius ``int(3.5 sigma + 0.5)``).
    win_size:         uniform window side (odd); ``None`` = 7. Must be ``None`` with Gaussian weights
                      (the window follows from sigma, as in scikit-image).
    k1, k2:           stability constants.
    use_sample_covariance: normalise (co)variances by NP - 1 (scikit-image's default) or NP.
    """

    gaussian_weights: bool = True
    sigma: float = 1.5
    win_size: int | None = None
    k1: float = 0.01
    k2: float = 0.03
    use_sample_covariance: bool = True

    def __post_init__(self) -> None:
        if self.sigma <= 0:
            raise ValueError(f"SSIM sigma must be > 0, got {self.sigma}")
        if self.k1 < 0 or self.k2 < 0:
            raise ValueError("SSIM K1, K2 must be >= 0")
        if self.gaussian_weights and self.win_size is not None:
            raise ValueError("with gaussian_weights the window follows from sigma; leave win_size None")
        if self.win_size is not None and (self.win_size < 1 or self.win_size % 2 == 0):
            raise ValueError(f"SSIM win_size must be odd and >= 1, got {self.win_size}")

    @property
    def window(self) -> int:
        """Side of the window in pixels (11 for the default Gaussian)."""
        if self.gaussian_weights:
            return 2 * int(3.5 * self.sigma + 0.5) + 1
        return 7 if self.win_size is None else int(self.win_size)

    def kernel(self, device: torch.device | str = "cpu") -> Tensor:
        """1D taps (window,) float64, normalised to sum 1."""
        n = self.window
        if not self.gaussian_weights:
            return torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
        r = (n - 1) // 2
        x = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
        k = torch.exp(-0.5 * (x / self.sigma) ** 2)
        return k / k.sum()

    def to_dict(self) -> dict[str, Any]:
        return {"window": "gaussian" if self.gaussian_weights else "uniform",
                "sigma": self.sigma if self.gaussian_weights else None, "win_size": self.window,
                "K1": self.k1, "K2": self.k2, "use_sample_covariance": self.use_sample_covariance,
                "reference": "skimage.metrics.structural_similarity"}


DEFAULT_SSIM = SSIMSettings()


def _as_float64(x: Any) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach().to(torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _filter_valid(x: Tensor, kernel: Tensor, ndim: int) -> Tensor:
    """Separable "valid" correlation of the last ``ndim`` axes of x with the 1D ``kernel``."""
    taps = kernel.view(1, 1, -1)
    for axis in range(x.ndim - ndim, x.ndim):
        moved = x.movedim(axis, -1)
        shape = moved.shape
        out = F.conv1d(moved.reshape(-1, 1, shape[-1]), taps)
        x = out.reshape(*shape[:-1], out.shape[-1]).movedim(-1, axis)
    return x


def ssim_map(x: Any, y: Any, *, data_range: float, ndim: int = 2,
             settings: SSIMSettings = DEFAULT_SSIM) -> Tensor:
    """The SSIM map S at every valid window centre: (..., *spatial - window + 1) float64.

    Args:
        x, y: same shape (..., *spatial) with ``ndim`` spatial axes last (2 or 3); numpy or torch.
        data_range: L, the dynamic range of the values (1.0 for maps in [0, 1]); > 0.
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    a, b = _as_float64(x), _as_float64(y)
    if a.shape != b.shape:
        raise ValueError(f"SSIM inputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim < ndim:
        raise ValueError(f"SSIM input needs {ndim} spatial axes, got shape {tuple(a.shape)}")
    if not (float(data_range) > 0 and np.isfinite(float(data_range))):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    win = settings.window
    spatial = tuple(a.shape[-ndim:])
    if min(spatial) < win:
        raise ValueError(f"SSIM window {win} exceeds the image extent {spatial}; compare upsampled maps, "
                         "or use a smaller sigma or a uniform window")
    k = settings.kernel(a.device)
    b = b.to(a.device)
    ux, uy = _filter_valid(a, k, ndim), _filter_valid(b, k, ndim)
    uxx, uyy, uxy = _filter_valid(a * a, k, ndim), _filter_valid(b * b, k, ndim), _filter_valid(a * b, k, ndim)
    n_p = win ** ndim
    cov_norm = n_p / (n_p - 1) if settings.use_sample_covariance else 1.0
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (settings.k1 * float(data_range)) ** 2, (settings.k2 * float(data_range)) ** 2
    num = (2 * ux * uy + c1) * (2 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return num / den


def _bool(x: Any) -> Tensor:
    """numpy / torch / nested lists -> a CPU bool tensor."""
    return (x.detach() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))).to(torch.bool).cpu()


def _crop_mask(m: Tensor, shape: tuple[int, ...], ndim: int, win: int) -> Tensor:
    pad = (win - 1) // 2
    idx = tuple(slice(pad, n - pad) for n in shape[-ndim:])
    return m[(Ellipsis, *idx)]


def ssim(x: Any, y: Any, *, data_range: float, ndim: int = 2, settings: SSIMSettings = DEFAULT_SSIM,
         mask: Any = None) -> np.ndarray | float:
    """Mean SSIM of x and y over the last ``ndim`` axes (batched over leading axes).

    Args:
        x, y: (..., H, W) for ``ndim=2`` or (..., Z, H, W) for ``ndim=3``; numpy or torch, same shape.
        data_range: L (e.g. 1.0 for maps normalised to [0, 1]).
        settings: window and constants (:class:`SSIMSettings`, default Wang et al. / scikit-image Gaussian).
        mask: optional bool array broadcastable to x: only window centres where it is True are averaged
            (NaN where none is).

    Returns:
        float for unbatched input, else float64 array of the leading shape. Equals
        ``skimage.metrics.structural_similarity(x, y, data_range=L, gaussian_weights=..., sigma=...,
        use_sample_covariance=..., K1=..., K2=...)`` for each item when ``mask`` is None.
    """
    s = ssim_map(x, y, data_range=data_range, ndim=ndim, settings=settings)
    axes = tuple(range(s.ndim - ndim, s.ndim))
    if mask is None:
        out = s.mean(dim=axes)
    else:
        full_shape = tuple(_as_float64(x).shape)
        m = _crop_mask(_bool(mask).expand(full_shape), full_shape, ndim, settings.window)
        m = m.to(s.device, torch.float64)
        count = m.sum(dim=axes)
        out = (s * m).sum(dim=axes) / count
        out = torch.where(count > 0, out, torch.full_like(out, float("nan")))
    arr = out.cpu().numpy()
    return float(arr) if arr.ndim == 0 else arr


def volume_ssim(x: Any, y: Any, *, data_range: float, mode: str = "slices", slice_mask: Any = None,
                settings: SSIMSettings = DEFAULT_SSIM, mask: Any = None) -> np.ndarray | float:
    """SSIM of volumes (..., Z, H, W) (a 2D map is a volume of one slice).

    Args:
        mode: ``"slices"`` = mean over the real slices of the per-slice 2D SSIM; ``"3d"`` = one 3D window
            (scikit-image's SSIM of the 3D array; needs Z >= the window).
        slice_mask: (..., Z) bool, real slices (default all). In ``"3d"`` mode it restricts the averaged
            window centres to real slices (windows near them still see the neighbouring padded slices).
        mask: optional voxel mask (..., Z, H, W) of window centres to average (see :func:`ssim`).

    Returns:
        float for a single volume, else an array of the leading shape.
    """
    if mode not in VOLUME_MODES:
        raise ValueError(f"volume SSIM mode must be one of {VOLUME_MODES}, got {mode!r}")
    a, b = _as_float64(x), _as_float64(y)
    if a.ndim < 3:
        raise ValueError(f"volumes must be (..., Z, H, W), got {tuple(a.shape)}")
    z = int(a.shape[-3])
    sm = torch.ones(*a.shape[:-2], dtype=torch.bool) if slice_mask is None else \
        _bool(slice_mask).expand(*a.shape[:-2])
    if mode == "3d":
        vox = sm[..., None, None].expand(a.shape)
        if mask is not None:
            vox = vox & _bool(mask).expand(a.shape)
        use_mask = None if (mask is None and bool(sm.all())) else vox
        if z < settings.window:
            raise ValueError(f"3D SSIM needs at least {settings.window} slices, got {z}; use mode='slices'")
        return ssim(a, b, data_range=data_range, ndim=3, settings=settings, mask=use_mask)
    per_slice = ssim(a, b, data_range=data_range, ndim=2, settings=settings, mask=mask)   # (..., Z)
    per_slice = torch.as_tensor(np.asarray(per_slice, dtype=np.float64))
    w = sm.to(torch.float64) * torch.isfinite(per_slice)
    total = (torch.nan_to_num(per_slice) * w).sum(-1)
    count = w.sum(-1)
    out = torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan"))).numpy()
    return float(out) if out.ndim == 0 else out


def pearson(a: Any, b: Any, *, rtol: float = 1e-12) -> tuple[np.ndarray | float, np.ndarray | bool]:
    """Pearson correlation over the last axis, batched; returns ``(r, constant)``.

    ``r`` is NaN and ``constant`` True where either vector is constant (spread <= ``rtol * max(1, max|v|)``)
    or has fewer than two entries. Scalars come back for 1D input.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"pearson: shapes differ, {x.shape} vs {y.shape}")
    if x.ndim == 0:
        raise ValueError("pearson needs vectors, got scalars")
    n = x.shape[-1]

    def flat(v: np.ndarray) -> np.ndarray:
        if n == 0:
            return np.ones(v.shape[:-1], dtype=bool)
        spread = v.max(axis=-1) - v.min(axis=-1)
        scale = np.maximum(1.0, np.abs(v).max(axis=-1))
        return spread <= rtol * scale

    constant = flat(x) | flat(y) | (n < 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        xc = x - x.mean(axis=-1, keepdims=True) if n else x
        yc = y - y.mean(axis=-1, keepdims=True) if n else y
        num = (xc * yc).sum(axis=-1)
        den = np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
        r = np.clip(num / den, -1.0, 1.0)
    r = np.where(constant, np.nan, r)
    if np.ndim(r) == 0:
        return float(r), bool(constant)
    return r, constant


__all__ = ["SSIMSettings", "DEFAULT_SSIM", "VOLUME_MODES", "ssim", "ssim_map", "volume_ssim", "pearson"]
