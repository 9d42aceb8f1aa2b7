"""Sanity check of the image maps: cascading model-parameter randomisation (Adebayo et al. 2018).

Research use, not for diagnosis.

On a **deep copy** of the model (the caller's model and its state are never touched), layers are
re-initialised from the top down, cumulatively, and after each stage the Grad-CAM++ map of the same cases
(same explained class as the trained model's) is compared with the trained model's map:

    trained -> head -> pooling (slice MIL + token pool) -> fusion (or the clinical summary) ->
    clinical encoder -> transformer block N-1 (+ final norm) -> ... -> block 0 -> token projection
    -> CNN stages, last to first (each timm trunk child that has parameters)

(stages a variant lacks are skipped; :func:`randomisation_stages` lists them for a model).

**Headline**: the SSIM after the stage ``projection``, i.e. with everything *above* the Grad-CAM++ layer
(the CNN's last feature map) randomised and the CNN itself still trained. At that point the activations A
are the trained ones and only the gradient weights come from random layers; a map that still looks the
same is explained by the image's features alone (edge detector behaviour), not by what the model
learned to decide. Low SSIM (say < 0.5) = the map depends on the learned decision layers. The curve then
continues through the CNN stages.

Re-initialisation: every module in the stage that has its own ``reset_parameters`` (Linear, Conv,
LayerNorm, BatchNorm incl. running statistics, ...) is reset with PyTorch's default initialiser; any other
parameter (learned tokens and embeddings) is redrawn from N(0, sd^2) with sd its trained standard deviation
(0.02 if that is 0). The RNG is seeded per stage (``seed + stage index``) inside a forked RNG, so the
global RNG is not disturbed.

Similarity: SSIM of the case-normalised maps (divided by the maximum over the case; a map that became all
zero stays zero) at the model input resolution, ``data_range`` 1, default Gaussian window; volumes: the
mean per-slice SSIM over real slices. Spearman's rank correlation of the map values (over the real
voxels) is reported alongside (Adebayo et al. report both).
"""

from __future__ import annotations

import copy
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from mmxai_core.explain.metrics._common import default_target, jsonable, model_device, summary
from mmxai_core.explain.metrics.ssim import DEFAULT_SSIM, SSIMSettings, pearson, volume_ssim

HEADLINE_STAGE = "projection"

Stage = tuple[str, list[str]]


def _has(model: nn.Module, path: str) -> bool:
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return False
    return any(True for _ in module.parameters())


def randomisation_stages(model: nn.Module) -> list[Stage]:
    """The cascade for ``model``: ``[(stage name, [module paths])]``, top (head) first.

    Works for any :class:`~mmxai_core.model.MultimodalClassifier` variant with an image branch.
    """
    stages: list[Stage] = []

    def add(name: str, paths: Sequence[str]) -> None:
        present = [p for p in paths if _has(model, p)]
        if present:
            stages.append((name, present))

    add("head", ["head"])
    add("pooling", ["slice_pool", "token_pool"])
    add("fusion", ["fusion", "reverse_fusion", "clinical_summary"])
    add("clinical_encoder", ["clinical_encoder"])
    blocks = model.image_encoder.blocks if hasattr(model, "image_encoder") else []
    for i in reversed(range(len(blocks))):
        add(f"transformer_block_{i}", [f"image_encoder.blocks.{i}"] + (["image_encoder.norm"] if
                                                                          i == len(blocks) - 1 else []))
    if not blocks:
        add("norm", ["image_encoder.norm"])
    add(HEADLINE_STAGE, ["image_encoder.proj"])
    if hasattr(model, "image_encoder"):
        for name, child in reversed(list(model.image_encoder.trunk.named_children())):
            if any(True for _ in child.parameters()):
                stages.append((f"cnn.{name}", [f"image_encoder.trunk.{name}"]))
    return stages


def randomise_(model: nn.Module, paths: Sequence[str], seed: int) -> int:
    """Re-initialise the modules at ``paths`` of ``model`` in place (see the module docstring); returns the
    number of parameters re-drawn."""
    count = 0
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(int(seed))
        for path in paths:
            root = model.get_submodule(path)
            done: set[int] = set()
            for module in root.modules():
                if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
                    module.reset_parameters()
                    for p in module.parameters(recurse=False):
                        done.add(id(p))
            for p in root.parameters():
                if id(p) not in done:
                    sd = float(p.detach().float().std()) if p.numel() > 1 else 0.0
                    sd = sd if sd > 0 else 0.02
                    p.copy_(torch.randn(p.shape, dtype=torch.float32).to(p.dtype).to(p.device) * sd)
            count += sum(p.numel() for p in root.parameters())
    return count


def _maps(model: nn.Module, images, values, missing, mask, present, target: torch.Tensor,
          cam_kwargs: dict[str, Any]) -> torch.Tensor:
    from mmxai_core.explain.gradcam import gradcam_plus_plus

    result = gradcam_plus_plus(model, images, values, missing, slice_mask=mask, image_present=present,
                               target_class=target, **cam_kwargs)
    return result.normalised("case")                                     # (B, S, H, W)


def _spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, bool]:
    from scipy.stats import rankdata     # here, not at import: scipy.stats costs 0.5 s of a click

    return pearson(rankdata(a), rankdata(b))


def sanity_cascade(model: nn.Module, images: Any, clin_values: Any = None, clin_missing: Any = None, *,
                   slice_mask: Any = None, image_present: Any = None, target_class: Any = None, seed: int = 0,
                   ssim_settings: SSIMSettings = DEFAULT_SSIM, volume_mode: str = "slices",
                   stages: Sequence[Stage] | None = None, **cam_kwargs: Any) -> dict[str, Any]:
    """Cascading randomisation of a deep copy of ``model``, Grad-CAM++ SSIM against the trained maps.

    Args:
        images: (B, S, 1, H, W) or (B, 1, H, W), B cases with images (processed together at every stage);
            clin_values / clin_missing (B, F); slice_mask (B, S).
        target_class: None (as Grad-CAM++: class 1 of a binary model, else the trained model's prediction),
            an int, or one class per case; kept fixed at every stage.
        stages: override :func:`randomisation_stages` (e.g. a shorter cascade).
        cam_kwargs: ``target_layer``, ``reshape_transform``, ``slice_chunk`` (paths resolved on the copy).

    Returns:
        JSON-ready dict: ``curve`` (one entry per stage, ``"trained"`` first: stage, modules,
        ``ssim`` summary over the cases, ``ssim_per_case``, ``spearman_per_case``, ``all_zero_maps``),
        ``headline`` (stage :data:`HEADLINE_STAGE`), ``final`` (everything randomised), ``lowest`` (the
        stage with the lowest mean SSIM), ``parameters``.
    """
    t0 = time.perf_counter()
    layer = cam_kwargs.get("target_layer")
    if isinstance(layer, nn.Module):      # a module of the caller's model -> its name, resolved on the copy
        names = [n for n, m in model.named_modules() if m is layer]
        if not names:
            raise ValueError("target_layer is not a module of the model")
        cam_kwargs = {**cam_kwargs, "target_layer": names[0]}
    work = copy.deepcopy(model)
    device = model_device(work)
    imgs = torch.as_tensor(images).to(device=device, dtype=torch.float32)
    if imgs.ndim == 4:
        imgs = imgs.unsqueeze(1)
    b, s = imgs.shape[:2]
    mask = torch.ones(b, s, dtype=torch.bool) if slice_mask is None else torch.as_tensor(slice_mask).to(torch.bool)
    mask = mask.reshape(b, s).to(device)
    present = torch.ones(b, dtype=torch.bool, device=device) if image_present is None else \
        torch.as_tensor(image_present).to(torch.bool).reshape(b).to(device)
    if not bool(present.all()):
        raise ValueError("every case needs an image for the sanity check (image_present is False for some)")
    values = missing = None
    if clin_values is not None:
        values = torch.as_tensor(np.asarray(clin_values, dtype=np.float32) if not isinstance(clin_values, torch.Tensor)
                                 else clin_values).to(device=device, dtype=torch.float32).reshape(b, -1)
        missing = torch.isnan(values) if clin_missing is None else \
            torch.as_tensor(clin_missing).to(device=device, dtype=torch.bool).reshape(b, -1)
        values = torch.where(missing, torch.zeros((), device=device), values)
    if target_class is None:
        targets = torch.tensor([default_target(work, imgs[i:i + 1], mask[i:i + 1], present[i:i + 1],
                                               None if values is None else values[i:i + 1],
                                               None if missing is None else missing[i:i + 1])
                                for i in range(b)], dtype=torch.long)
    elif isinstance(target_class, int):
        targets = torch.full((b,), int(target_class), dtype=torch.long)
    else:
        targets = torch.as_tensor(target_class, dtype=torch.long).reshape(b)
    stage_list = list(randomisation_stages(work) if stages is None else stages)
    real = mask.cpu().numpy()

    trained = _maps(work, imgs, values, missing, mask, present, targets, cam_kwargs)
    curve: list[dict[str, Any]] = []

    def record(name: str, paths: Sequence[str], maps: torch.Tensor, n_params: int) -> None:
        ssim_values = np.atleast_1d(volume_ssim(trained, maps, data_range=1.0, mode=volume_mode,
                                                slice_mask=mask.cpu(), settings=ssim_settings))
        spear = []
        for i in range(b):
            a = trained[i][torch.as_tensor(real[i])].numpy().reshape(-1)
            c = maps[i][torch.as_tensor(real[i])].numpy().reshape(-1)
            spear.append(_spearman(a, c)[0])
        curve.append({"stage": name, "modules": list(paths), "n_parameters_reset": int(n_params),
                      "ssim": summary(ssim_values), "ssim_per_case": [float(v) for v in ssim_values],
                      "spearman_per_case": [float(v) for v in spear],
                      "spearman_mean": float(np.nanmean(spear)) if np.isfinite(spear).any() else float("nan"),
                      "all_zero_maps": int(sum(float(maps[i].max()) == 0.0 for i in range(b)))})

    record("trained", [], trained, 0)
    for index, (name, paths) in enumerate(stage_list):
        n_params = randomise_(work, paths, int(seed) + index + 1)
        record(name, paths, _maps(work, imgs, values, missing, mask, present, targets, cam_kwargs), n_params)
    headline = next((c for c in curve if c["stage"] == HEADLINE_STAGE), curve[-1])
    return jsonable({
        "metric": "sanity_cascading_randomisation",
        "definition": "SSIM between the trained model's Grad-CAM++ map and the map after cascading "
                      "re-initialisation from the head down (Adebayo et al. 2018); low = the map reflects "
                      "what the model learned",
        "parameters": {"seed": int(seed), "ssim": ssim_settings.to_dict(), "data_range": 1.0,
                       "normalise": "case (maximum over the case)", "volume_mode": volume_mode,
                       "stages": [name for name, _ in stage_list], "n_cases": int(b),
                       "target_class": [int(t) for t in targets],
                       "reinitialisation": "reset_parameters() where a module has it, else N(0, sd_trained^2)",
                       "headline_stage": HEADLINE_STAGE,
                       "headline_definition": "everything above the Grad-CAM++ layer randomised, CNN trained"},
        "curve": curve,
        "headline": {"stage": headline["stage"], "ssim_mean": headline["ssim"]["mean"],
                     "spearman_mean": headline["spearman_mean"]},
        "final": {"stage": curve[-1]["stage"], "ssim_mean": curve[-1]["ssim"]["mean"]},
        "lowest": min(({"stage": c["stage"], "ssim_mean": c["ssim"]["mean"]} for c in curve[1:]),
                      key=lambda c: c["ssim_mean"], default=None),
        "seconds": time.perf_counter() - t0,
    })


__all__ = ["HEADLINE_STAGE", "randomisation_stages", "randomise_", "sanity_cascade"]
