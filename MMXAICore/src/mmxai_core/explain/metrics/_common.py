"""Helpers shared by the explanation-quality metrics (research use, not for diagnosis).

One case as the metrics take it: ``images`` (1, S, 1, H, W) or (1, 1, H, W) (one slice), ``slice_mask``
(1, S) bool (True = real slice), ``image_present`` bool, ``clin_values`` / ``clin_missing`` (F,) or (1, F).
Maps are (S, H, W) in model space (one per slice). Nothing here touches the model's weights.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mmxai_core.explain.value_function import eval_mode  # noqa: F401  (re-exported for the metrics)

DEFAULT_FRACTIONS = tuple(round(0.05 * i, 2) for i in range(11))
"""Deletion grid: 0, 5, ..., 50 % of the real pixels/voxels."""


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless module)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def one_case(images: Any, slice_mask: Any = None, image_present: Any = None,
             device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
    """Validate one case: -> images (1, S, 1, H, W) float32, slice_mask (1, S) bool, present (1,) bool."""
    images = torch.as_tensor(images)
    if images.ndim == 4:
        images = images.unsqueeze(1)
    if images.ndim != 5 or images.shape[0] != 1 or images.shape[2] != 1:
        raise ValueError("images must be one case, (1, S, 1, H, W) or (1, 1, H, W), got "
                         f"{tuple(images.shape)}")
    images = images.to(device=device, dtype=torch.float32)
    s = int(images.shape[1])
    if slice_mask is None:
        mask = torch.ones(1, s, dtype=torch.bool)
    else:
        mask = torch.as_tensor(slice_mask).to(torch.bool).reshape(1, -1)
        if mask.shape[1] != s:
            raise ValueError(f"slice_mask must have S = {s} entries, got {tuple(mask.shape)}")
    if not bool(mask.any()):
        raise ValueError("the case has no real slice (slice_mask is all False)")
    present = torch.ones(1, dtype=torch.bool) if image_present is None else \
        torch.as_tensor(image_present).to(torch.bool).reshape(1)
    return images, mask.to(device), present.to(device)


def clinical_row(values: Any, missing: Any, device: torch.device | str = "cpu"
                 ) -> tuple[Tensor | None, Tensor | None]:
    """(F,) or (1, F) clinical arrays -> (1, F) tensors (``None`` stays ``None``; missing defaults to NaN)."""
    if values is None:
        return None, None
    v = values.detach() if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values, dtype=np.float32))
    v = v.to(device=device, dtype=torch.float32).reshape(1, -1)
    if missing is None:
        m = torch.isnan(v)
    else:
        m = missing.detach() if isinstance(missing, Tensor) else torch.as_tensor(np.asarray(missing, dtype=bool))
        m = m.to(device=device, dtype=torch.bool).reshape(1, -1)
    v = torch.where(m, torch.zeros((), device=device), v)
    return v, m


def as_maps(maps: Any, name: str = "map") -> np.ndarray:
    """(H, W), (S, H, W) or (1, S, H, W) -> (S, H, W) float64 numpy array."""
    arr = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be (H, W), (S, H, W) or (1, S, H, W), got {arr.shape}")
    return arr


def summary(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Mean, spread and the values themselves, JSON-ready; NaNs are excluded and counted.

    ``std`` is the population standard deviation (ddof = 0) of the finite values.
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    ok = arr[np.isfinite(arr)]
    out: dict[str, Any] = {"n": int(arr.size), "n_nan": int(arr.size - ok.size)}
    if ok.size:
        out.update(mean=float(ok.mean()), std=float(ok.std(ddof=0)), min=float(ok.min()),
                   max=float(ok.max()), median=float(np.median(ok)))
    else:
        out.update(mean=math.nan, std=math.nan, min=math.nan, max=math.nan, median=math.nan)
    out["values"] = [float(x) for x in arr]
    return out


def to_json_float(x: float) -> float | None:
    """NaN/inf -> None (JSON has no NaN), else a plain float."""
    x = float(x)
    return x if math.isfinite(x) else None


def jsonable(obj: Any) -> Any:
    """A strict-JSON copy: numpy scalars/arrays -> Python, NaN/inf -> None, tuples -> lists
    (``json.dumps(jsonable(x), allow_nan=False)`` works)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, Tensor):
        return jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return to_json_float(obj)
    return obj


def default_target(model: nn.Module, images: Tensor, slice_mask: Tensor, present: Tensor,
                   clin_values: Tensor | None, clin_missing: Tensor | None) -> int:
    """The class Grad-CAM++ explains by default: 1 for a binary model, else the predicted class (one
    forward pass without gradients)."""
    num_classes = int(model.config.num_classes)
    if num_classes == 2:
        return 1
    with eval_mode(model), torch.no_grad():
        out = model(images, slice_mask, present, clin_values, clin_missing)
    return int(out.logits[0].argmax())


def image_case(model: nn.Module, images: Any, slice_mask: Any, image_present: Any, clin_values: Any,
               clin_missing: Any, target_class: int | None, no_image: str
               ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None, int]:
    """One case with an image, on the model's device, and the class to explain.

    Returns ``(images, slice_mask, present, values, missing, target_class)`` (:func:`one_case`,
    :func:`clinical_row`, :func:`default_target` when ``target_class`` is None). Raises ValueError
    ``"the case has no image (image_present is False): <no_image>"`` for a case without an image.
    """
    device = model_device(model)
    imgs, mask, present = one_case(images, slice_mask, image_present, device)
    if not bool(present[0]):
        raise ValueError(f"the case has no image (image_present is False): {no_image}")
    values, missing = clinical_row(clin_values, clin_missing, device)
    if target_class is None:
        target_class = default_target(model, imgs, mask, present, values, missing)
    return imgs, mask, present, values, missing, int(target_class)


# --------------------------------------------------------------------------------------- filtering
def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype=torch.float32,
                      device: torch.device | str = "cpu") -> Tensor:
    """Normalised 1D Gaussian taps ``exp(-x^2 / 2 sigma^2)``, x = -r..r, r = int(truncate sigma + 0.5)
    (scipy.ndimage's radius rule)."""
    r = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def blur_matrix(n: int, sigma: float, truncate: float = 4.0, dtype=torch.float32,
                device: torch.device | str = "cpu") -> Tensor:
    """(n, n) matrix B with ``x @ B`` = the 1D Gaussian blur of the last axis of x, edges replicated
    (the taps that fall outside are added to the edge sample), exactly what padding + convolution does."""
    k = gaussian_kernel1d(sigma, truncate, torch.float64)
    r = (k.numel() - 1) // 2
    src = (torch.arange(n)[None, :] + torch.arange(-r, r + 1)[:, None]).clamp(0, n - 1)   # (taps, n)
    out = torch.zeros(n, n, dtype=torch.float64)
    out.index_put_((src.reshape(-1), torch.arange(n).repeat(k.numel())), k.repeat_interleave(n), accumulate=True)
    return out.to(dtype=dtype, device=device)


def blur2d(x: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """In-plane Gaussian blur of (..., H, W) with ``sigma`` pixels, edges replicated (any image size).

    Separable, as two matrix products with :func:`blur_matrix` (fast on a CPU, where a thin convolution
    kernel is not). ``sigma <= 0`` returns a copy.
    """
    if sigma <= 0:
        return x.clone()
    h, w = x.shape[-2:]
    bw = blur_matrix(w, sigma, truncate, x.dtype, x.device)
    bh = blur_matrix(h, sigma, truncate, x.dtype, x.device)
    return bh.T @ (x @ bw)


def smooth_random_maps(n: int, shape: tuple[int, ...], sigma: float, generator: torch.Generator
                       ) -> Tensor:
    """(n, *shape) white Gaussian noise, blurred in-plane with ``sigma`` pixels (blob-shaped random maps;
    ``sigma = 0``: white noise). Drawn on the CPU from ``generator`` (reproducible on any device)."""
    noise = torch.randn(n, *shape, generator=generator, dtype=torch.float32)
    return blur2d(noise, sigma)


def top_n_mask(scores: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Bool mask of the ``n`` largest entries of ``scores`` (1D), ties at the boundary broken at random
    (``rng``); O(size) (a partition, no sort)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    size = scores.size
    chosen = np.zeros(size, dtype=bool)
    if n <= 0:
        return chosen
    if n >= size:
        chosen[:] = True
        return chosen
    kth = np.partition(scores, size - n)[size - n]              # the n-th largest value
    chosen = scores > kth
    ties = np.flatnonzero(scores == kth)
    chosen[rng.choice(ties, n - int(chosen.sum()), replace=False)] = True
    return chosen


def rank_order(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``scores`` (1D) from the largest to the smallest; ties broken at random (``rng``)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    tiebreak = rng.random(scores.size)
    return np.lexsort((tiebreak, -scores))


__all__ = ["DEFAULT_FRACTIONS", "default_target", "model_device", "eval_mode", "one_case", "clinical_row",
           "as_maps", "summary", "to_json_float", "jsonable", "gaussian_kernel1d", "blur_matrix", "blur2d",
           "smooth_random_maps", "top_n_mask", "rank_order"]
