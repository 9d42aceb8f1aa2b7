"""Missing data trained on purpose: random per-field masking and image dropout for training batches.

Without it the "unknown" embeddings and the missing-image token would only ever see the (few) truly
missing values and stay close to their random start; at inference any field may be unknown and the
explainers remove information by setting it to unknown. The rates live in the model config
(``clinical_mask_rate``, ``image_dropout_rate``) and so are recorded in the checkpoint.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _uniform(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """U(0, 1) on ``like``'s device, drawn on the generator's device (a CPU generator works for CUDA data)."""
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device).to(like.device)


def apply_missingness(clin_missing: Tensor, image_present: Tensor, clinical_mask_rate: float,
                      image_dropout_rate: float, generator: torch.Generator | None = None
                      ) -> tuple[Tensor, Tensor]:
    """Return new ``(clin_missing (B, F) bool, image_present (B,) bool)`` with extra missingness.

    * each known clinical value becomes missing with probability ``clinical_mask_rate``;
    * each present image is dropped with probability ``image_dropout_rate``, but only for a case that has
      at least one known clinical value (never drop both modalities);
    * a case left without an image keeps at least one of its known clinical values (if masking took them
      all, the one with the largest random draw is restored).

    Already-missing values and absent images stay so. The inputs are not modified. Random numbers come from
    ``generator`` (reproducible); rates of 0 change nothing.
    """
    if clin_missing.ndim != 2 or image_present.shape != clin_missing.shape[:1]:
        raise ValueError(f"clin_missing must be (B, F) and image_present (B,), got {tuple(clin_missing.shape)}"
                         f" and {tuple(image_present.shape)}")
    for name, rate in (("clinical_mask_rate", clinical_mask_rate), ("image_dropout_rate", image_dropout_rate)):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {rate}")
    missing, present = clin_missing.to(torch.bool), image_present.to(torch.bool)
    b, f = missing.shape
    known = ~missing
    u_image = _uniform((b,), missing, generator)
    u_field = _uniform((b, f), missing, generator)
    has_known = known.any(1)
    new_present = present & ~(has_known & (u_image < image_dropout_rate))
    extra = known & (u_field < clinical_mask_rate)
    wiped = ~new_present & has_known & ~(known & ~extra).any(1)
    if f and bool(wiped.any()):
        keep = torch.where(known, u_field, torch.full_like(u_field, -1.0)).argmax(1)
        restore = wiped[:, None] & (torch.arange(f, device=missing.device) == keep[:, None])
        extra = extra & ~restore
    return missing | extra, new_present
