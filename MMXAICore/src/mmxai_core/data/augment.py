"""Seeded training augmentation of image slices with torchvision.transforms.v2.

Input: a float tensor of shape (S, 1, H, W): the S slices of one case (a mammogram is S = 1). One spatial
transform (affine, elastic) is drawn per call and applied to EVERY slice of the case, so the volume stays
coherent; an optional lesion mask of the same shape gets the same spatial transform (nearest neighbour)
and no intensity change. Intensity steps (gamma, contrast) work on the case rescaled to [0, 1] by its own
min/max and are mapped back, so they suit z-scored as well as [0, 1] inputs; Gaussian noise is added in
input units.

Reproducibility: pass ``seed`` (int) or ``generator`` (a ``torch.Generator``, advanced by one draw); the
same seed gives the same output. The transforms draw from torch's global RNG inside
``torch.random.fork_rng``, so the caller's global RNG state is left as it was; with neither ``seed`` nor
``generator`` the seed is one draw from the global RNG (reproducible under ``torch.manual_seed``).
On CUDA tensors the device's RNG is forked as well (the CUDA path is not covered by the CPU tests).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from mmxai_core.errors import PreprocessingError


@dataclasses.dataclass
class AugmentConfig:
    """Augmentation parameters; every ``p_*`` is the probability that the step runs for a case.

    Attributes:
        p_affine: probability of a random affine transform.
        degrees: rotation drawn from [-degrees, degrees] (degrees).
        translate: maximum shift as a fraction of W (x) and H (y).
        scale: (low, high) zoom factor range.
        p_elastic: probability of an elastic deformation (torchvision ``ElasticTransform``).
        elastic_alpha: displacement magnitude (pixels, torchvision's alpha).
        elastic_sigma: smoothness of the displacement field (pixels).
        p_gamma: probability of a gamma change ``x' = x ** gamma`` on the case rescaled to [0, 1].
        gamma_range: (low, high); gamma is drawn log-uniformly.
        p_contrast: probability of a contrast change about the case mean (torchvision
            ``adjust_contrast`` on the case rescaled to [0, 1]).
        contrast_range: (low, high) contrast factor range.
        p_noise: probability of additive Gaussian noise (torchvision ``GaussianNoise``, no clipping).
        noise_std: standard deviation of the noise, in input intensity units.
        fill: value outside the moved image; ``None`` = the case's minimum.
    """

    p_affine: float = 0.5
    degrees: float = 10.0
    translate: float = 0.05
    scale: tuple[float, float] = (0.9, 1.1)
    p_elastic: float = 0.2
    elastic_alpha: float = 30.0
    elastic_sigma: float = 5.0
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_contrast: float = 0.3
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_noise: float = 0.2
    noise_std: float = 0.05
    fill: float | None = None

    def __post_init__(self) -> None:
        for name in ("scale", "gamma_range", "contrast_range"):
            value = getattr(self, name)
            try:
                setattr(self, name, tuple(float(v) for v in value))
            except (TypeError, ValueError):
                _bad(name, "must be (low, high)", value)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`PreprocessingError` naming the first invalid parameter."""
        for name in ("p_affine", "p_elastic", "p_gamma", "p_contrast", "p_noise"):
            v = getattr(self, name)
            if not _num(v) or not 0.0 <= v <= 1.0:
                _bad(name, "must be a probability in [0, 1]", v)
        for name in ("degrees", "elastic_alpha", "elastic_sigma", "noise_std"):
            v = getattr(self, name)
            if not _num(v) or not math.isfinite(v) or v < 0:
                _bad(name, "must be a finite number >= 0", v)
        if not _num(self.translate) or not 0.0 <= self.translate <= 1.0:
            _bad("translate", "must be a fraction in [0, 1]", self.translate)
        for name in ("scale", "gamma_range", "contrast_range"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not (0 < lo_hi[0] <= lo_hi[1]) or not math.isfinite(lo_hi[1]):
                _bad(name, "must be (low, high) with 0 < low <= high", lo_hi)
        if self.fill is not None and (not _num(self.fill) or not math.isfinite(self.fill)):
            _bad("fill", "must be a finite number or null", self.fill)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AugmentConfig":
        """Build from :meth:`to_dict` output; missing keys take defaults, unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PreprocessingError(f"AugmentConfig: unknown parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


class Augmenter:
    """Draws and applies one random augmentation per call.

    Example::

        aug = Augmenter(AugmentConfig(p_elastic=0.0))
        x = aug(volume, seed=epoch * 100_000 + case_index)            # (S, 1, H, W) -> same shape
        x, m = aug.with_mask(volume, lesion_mask, generator=gen)     # same spatial transform for both
    """

    def __init__(self, config: AugmentConfig | None = None):
        self.config = config if config is not None else AugmentConfig()
        self.config.validate()

    def __call__(self, volume: torch.Tensor, *, seed: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment ``volume`` (S, 1, H, W) float; returns a new tensor of the same shape and dtype."""
        return self._run(volume, None, seed, generator)[0]

    def with_mask(self, volume: torch.Tensor, mask: torch.Tensor, *, seed: int | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment ``volume`` and a ``mask`` of the same shape (labels, any integer or bool dtype) with
        the same spatial transform; the mask is resampled by nearest neighbour and gets no intensity step."""
        out, out_mask = self._run(volume, mask, seed, generator)
        return out, out_mask

    # ---------------------------------------------------------------------------------------------
    def _run(self, volume, mask, seed, generator):
        _check(volume, "volume")
        if not volume.is_floating_point():
            raise PreprocessingError(f"Augmenter: volume must be a float tensor, got {volume.dtype}")
        if mask is not None:
            _check(mask, "mask")
            if mask.shape != volume.shape:
                raise PreprocessingError(f"Augmenter: mask shape {tuple(mask.shape)} differs from volume "
                                         f"shape {tuple(volume.shape)}")
        if seed is not None and generator is not None:
            raise PreprocessingError("Augmenter: give seed or generator, not both")
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        devices = [volume.device.index or 0] if volume.device.type == "cuda" else []
        fill = float(volume.min()) if self.config.fill is None else float(self.config.fill)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            pipeline = self._pipeline(fill)
            if mask is None:
                out = pipeline(tv_tensors.Image(volume))
                out_mask = None
            else:
                mask_dtype = mask.dtype
                m = mask.to(torch.uint8) if mask_dtype == torch.bool else mask
                out, out_mask = pipeline(tv_tensors.Image(volume), tv_tensors.Mask(m))
                out_mask = out_mask.as_subclass(torch.Tensor).to(mask_dtype)
                if out_mask.data_ptr() == mask.data_ptr():
                    out_mask = out_mask.clone()
        out = out.as_subclass(torch.Tensor)
        if out.data_ptr() == volume.data_ptr():
            out = out.clone()
        return out, out_mask

    def _pipeline(self, fill: float) -> v2.Compose:
        c = self.config
        fills = {tv_tensors.Image: fill, tv_tensors.Mask: 0}
        steps = [
            v2.RandomApply([v2.RandomAffine(degrees=c.degrees, translate=(c.translate, c.translate),
                                            scale=c.scale, interpolation=v2.InterpolationMode.BILINEAR,
                                            fill=fills)], p=c.p_affine),
            v2.RandomApply([v2.ElasticTransform(alpha=c.elastic_alpha, sigma=c.elastic_sigma,
                                                interpolation=v2.InterpolationMode.BILINEAR,
                                                fill=fills)], p=c.p_elastic),
            v2.RandomApply([_CaseGamma(c.gamma_range)], p=c.p_gamma),
            v2.RandomApply([_CaseContrast(c.contrast_range)], p=c.p_contrast),
            v2.RandomApply([v2.GaussianNoise(mean=0.0, sigma=c.noise_std, clip=False)], p=c.p_noise),
        ]
        return v2.Compose(steps)


class _CaseIntensity(v2.Transform, abc.ABC):
    """Rescale the whole case to [0, 1] by its min/max, apply ``_apply``, map back. Images only
    (masks and other inputs pass through unchanged)."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, value_range: tuple[float, float]):
        super().__init__()
        self.value_range = value_range

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        x = inpt.as_subclass(torch.Tensor)
        lo, hi = x.amin(), x.amax()
        span = (hi - lo).clamp_min(torch.finfo(x.dtype).tiny)
        y = self._apply((x - lo) / span, params) * span + lo
        return tv_tensors.wrap(y.to(x.dtype), like=inpt)

    @abc.abstractmethod
    def _apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """The intensity change on the case scaled to [0, 1] (same shape)."""


class _CaseGamma(_CaseIntensity):
    """``x' = x ** gamma`` on the case in [0, 1] (torchvision ``adjust_gamma``), gamma log-uniform."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        lo, hi = math.log(self.value_range[0]), math.log(self.value_range[1])
        return {"gamma": math.exp(float(torch.empty(1).uniform_(lo, hi)))}

    def _apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return F.adjust_gamma(x, params["gamma"])


class _CaseContrast(_CaseIntensity):
    """Contrast about the case mean (torchvision ``adjust_contrast``, clamped to the case range)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"factor": float(torch.empty(1).uniform_(*self.value_range))}

    def _apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        # view the case as one tall single-channel image so the mean is the case mean, not per slice
        s, ch, h, w = x.shape
        return F.adjust_contrast(x.reshape(1, ch, s * h, w), params["factor"]).reshape(s, ch, h, w)


def _check(t: Any, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise PreprocessingError(f"Augmenter: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 4 or t.shape[1] != 1 or min(t.shape) < 1:
        raise PreprocessingError(f"Augmenter: {name} must have shape (S, 1, H, W), got {tuple(t.shape)}")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _bad(name: str, what: str, value: Any) -> None:
    raise PreprocessingError(f"AugmentConfig.{name}: {what}, got {value!r}")
