"""The CNN trunk of the image encoder: a timm model cut at one feature stage, one input channel.

Never downloads: ``pretrained=False`` always. A user may start the trunk from a local weights file
(``.safetensors``, or a PyTorch state dict read with ``torch.load(weights_only=True)``, which refuses
arbitrary pickled objects). A classification checkpoint of the same timm architecture fits: its head
(``fc.*``, ``classifier.*``, ...) is ignored, and an RGB first convolution is summed over its input
channels to take one grey channel (what timm does for ``in_chans=1``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from mmxai_core.errors import CheckpointError

_PREFIXES = ("module.", "model.", "trunk.", "backbone.")


def create_trunk(name: str, out_index: int = -1) -> nn.Module:
    """timm ``name`` with ``features_only=True, in_chans=1, pretrained=False, out_indices=(out_index,)``.

    The returned module maps (B, 1, H, W) to a list holding one feature map (B, C, h, w);
    ``trunk.feature_info.channels()[-1]`` is C and ``.reduction()[-1]`` the stride.
    """
    import timm

    try:
        return timm.create_model(name, features_only=True, in_chans=1, pretrained=False,
                                 out_indices=(out_index,))
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise ValueError(f"cannot create timm trunk {name!r}: {exc}") from exc
    except (IndexError, AssertionError) as exc:
        raise ValueError(f"timm trunk {name!r} has no feature stage {out_index}: {exc}") from exc


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file: safetensors, or ``torch.load(weights_only=True)``."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: trunk weights file not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except Exception as exc:  # safetensors raises its own error type, or OSError
            raise CheckpointError(f"{p}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{p}: cannot read as a weights-only PyTorch file ({exc})") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{p}: expected a state dict of tensors")
    return obj


def load_trunk_weights(trunk: nn.Module, path: str | os.PathLike) -> None:
    """Copy the tensors of ``path`` into ``trunk`` (every trunk tensor must be found with its shape)."""
    source = read_state_dict(path)
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        cleaned[key] = value
    target = trunk.state_dict()
    missing = [k for k in target if k not in cleaned]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} trunk tensor(s) not in the file, e.g. {missing[:3]}")
    new_state = {}
    for key, want in target.items():
        have = cleaned[key]
        if have.shape != want.shape and have.ndim == 4 and want.ndim == 4 and want.shape[1] == 1 \
                and have.shape[0] == want.shape[0] and have.shape[2:] == want.shape[2:]:
            have = have.sum(dim=1, keepdim=True)  # RGB first conv -> one grey channel
        if have.shape != want.shape:
            raise CheckpointError(f"{path}: tensor '{key}' has shape {tuple(have.shape)}, the trunk needs "
                                  f"{tuple(want.shape)}")
        new_state[key] = have.to(want.dtype)
    trunk.load_state_dict(new_state, strict=True)
