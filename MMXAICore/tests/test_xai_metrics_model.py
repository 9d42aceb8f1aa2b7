"""Explanation-quality metrics on a tiny multimodal model trained (40 small steps, seeded) to find a dark
lesion next to a bright distractor, with one partly informative clinical field: Grad-CAM++ stability
(a constant model is perfectly stable), Shapley stability, image and clinical deletion, the sanity
cascade (which must leave the caller's model untouched), localisation of the model's own maps,
coherence, volumes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from mmxai_core.explain.gradcam import gradcam_plus_plus
from mmxai_core.explain.metrics.coherence import case_coherence
from mmxai_core.explain.metrics.faithfulness import clinical_deletion, image_deletion
from mmxai_core.explain.metrics.localisation import localisation
from mmxai_core.explain.metrics.sanity import HEADLINE_STAGE, randomisation_stages, sanity_cascade
from mmxai_core.explain.metrics.stability import gradcam_stability, shapley_stability
from mmxai_core.explain.modality import modality_split
from mmxai_core.explain.shapley import clinical_shapley
from mmxai_core.explain.value_function import CoalitionValue
from mmxai_core.model import create_model, model_config

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3), ("er", "categorical", 2), ("size", "numeric", 0)]
SIZE = 64


def cohort(n, seed):
    """Noise images, each with a bright distractor blob; class 1 also has a dark lesion blob (its mask is
    returned), so what the model learned differs from what a random CNN responds to most. ``er`` equals
    the label 75 % of the time."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    x = 0.3 * torch.randn(n, 1, 1, SIZE, SIZE, generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen)
    masks = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)

    def blob(cy, cx):
        return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0 ** 2))

    for i in range(n):
        cy, cx = torch.randint(12, SIZE // 2 - 4, (2,), generator=gen).float()
        if bool(torch.rand((), generator=gen) < 0.5):                    # distractor in one half ...
            cy, cx = cy + SIZE // 2, cx + SIZE // 2
        x[i, 0, 0] += 2.0 * blob(cy, cx)
        if y[i]:                                                         # ... the lesion in the other
            jitter = torch.randint(-4, 5, (2,), generator=gen).float()
            ly, lx = SIZE - 1 - cy + jitter[0], SIZE - 1 - cx + jitter[1]
            x[i, 0, 0] -= 2.0 * blob(ly, lx)
            masks[i] = blob(ly, lx) > 0.3
    flip = torch.rand(n, generator=gen) < 0.25
    er = torch.where(flip, 1 - y, y).float()
    values = torch.stack([torch.rand(n, generator=gen), torch.randint(0, 3, (n,), generator=gen).float(), er,
                          torch.rand(n, generator=gen)], 1)
    missing = torch.zeros(n, 4, dtype=torch.bool)
    return x, y, values, missing, masks


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on 2 shared cores next to other jobs, 2 threads thrash (measured 15x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained():
    cfg = dict(embed_dim=32, depth=1, num_heads=4, fusion_heads=4, mil_hidden=16, trunk_out_index=2,
               image_size=SIZE, dropout=0.0, slice_chunk=16)
    model = create_model(model_config("tiny", clinical_fields=FIELDS, **cfg), seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    x, y, v, m, _ = cohort(64, seed=1)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(40):
        idx = torch.randperm(64, generator=gen)[:16]
        loss = nn.functional.cross_entropy(model(x[idx], None, None, v[idx], m[idx]).logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y, v, m, masks = cohort(12, seed=7)
    with torch.no_grad():
        p = model(x, None, None, v, m).probs[:, 1]
        p_image = model(x, None, None, v, torch.ones_like(m)).probs[:, 1]
    assert float(((p_image > 0.5).long() == y).float().mean()) >= 0.9, "the toy model did not learn the lesion"
    pos = torch.nonzero((y == 1) & (p > 0.5)).flatten()
    assert len(pos) >= 2
    return model, x, y, v, m, masks, pos


def one(case_data, i):
    _, x, _, v, m, masks, _ = case_data
    return x[i:i + 1], v[i], m[i], masks[i]


def strict_json(d):
    return json.loads(json.dumps(d, allow_nan=False))


# ------------------------------------------------------------------------------------------ stability
def test_gradcam_stability_on_the_model(trained):
    model = trained[0]
    x, v, m, _ = one(trained, int(trained[6][0]))
    out = strict_json(gradcam_stability(model, x, v, m, k=3, seed=0))
    assert out["target_class"] == 1 and out["explainer"] == "Grad-CAM++"
    for name in ("noise", "rigid"):
        assert len(out[name]["values"]) == 3
        assert -1.0 <= out[name]["min"] <= out[name]["mean"] < 1.0
    assert out["noise"]["mean"] > 0.5
    params = out["parameters"]
    assert params["normalise"] == "case" and params["noise_fraction"] == 0.05
    assert params["shift_px"] == 3.0 and params["rotation_deg"] == 5.0 and params["k"] == 3
    assert out["rigid"]["valid_fraction"][0] > 0.5


def test_constant_model_is_perfectly_stable(trained):
    model = copy.deepcopy(trained[0])
    with torch.no_grad():
        model.head.fc.weight.zero_()                  # the output no longer depends on anything
    x, v, m, _ = one(trained, 0)
    out = gradcam_stability(model, x, v, m, k=2, seed=0)
    assert out["noise"]["min"] == pytest.approx(1.0, abs=1e-9)
    assert out["rigid"]["min"] == pytest.approx(1.0, abs=1e-9)


def test_shapley_stability_on_the_model(trained):
    model = trained[0]
    x, v, m, _ = one(trained, int(trained[6][0]))
    m = m.clone()
    m[3] = True                                       # 'size' unknown: stays unknown, no player
    out = strict_json(shapley_stability(model, x, v, m, k=4, seed=0))
    assert out["parameters"]["jittered_fields"] == ["age"]
    assert set(out["reference_values"]) == {"age", "grade", "er"}
    reference = clinical_shapley(model, x, v, m)
    for name, value in out["reference_values"].items():
        assert value == pytest.approx(float(reference.values[reference.field_names.index(name)]), abs=1e-6)
    assert out["pearson"]["n"] == 4 and -1.0 <= out["pearson"]["min"] <= 1.0
    assert out["parameters"]["shapley_method"] == "exact" and out["target"] == 1


# ------------------------------------------------------------------------------------------ faithfulness
def test_image_deletion_on_the_model(trained):
    model = trained[0]
    x, v, m, _ = one(trained, int(trained[6][0]))
    out = strict_json(image_deletion(model, x, v, m, fractions=(0.0, 0.05, 0.1, 0.2, 0.3), n_random=3, seed=0))
    assert out["attribution"].startswith("Grad-CAM++")
    assert out["attributed"]["drop"][0] == 0.0 and len(out["attributed"]["score"]) == 5
    assert out["random"]["aopc"]["n"] == 3
    # deleting the blob the model looks at lowers p(class 1) more than deleting random blobs
    assert out["aopc_difference"] > 0
    p = model(x, None, None, v[None], m[None]).probs[0, 1].item()
    assert out["p_original"] == pytest.approx(p, abs=1e-6)


def test_clinical_deletion_on_the_model_follows_the_shapley_order(trained):
    model = trained[0]
    x, v, m, _ = one(trained, int(trained[6][0]))
    shap = clinical_shapley(model, x, v, m)
    out = strict_json(clinical_deletion(model, x, v, m, shap, n_random=8))
    first = shap.field_names[int(np.argmax(shap.values))]
    assert out["removed_order"][0] == first
    vf = CoalitionValue(model, x, v, m)
    keep = np.ones((2, 4), bool)
    keep[1, shap.field_names.index(first)] = False
    full, without = vf.evaluate_known(keep)
    assert out["attributed"]["drop"][1] == pytest.approx(full - without, abs=1e-6)
    # all fields removed: the drop is f(x) - f(all unknown) = the sum of the Shapley values
    assert out["attributed"]["drop"][-1] == pytest.approx(float(np.sum(shap.values)), abs=1e-5)


# ------------------------------------------------------------------------------------------ sanity
def test_sanity_cascade_drops_and_leaves_the_model_untouched(trained):
    model = trained[0]
    pos = trained[6][:2]
    x, v, m = trained[1][pos], trained[3][pos], trained[4][pos]
    before = {k: t.clone() for k, t in model.state_dict().items()}
    model.train()                                     # the mode is restored too
    rng_state = torch.random.get_rng_state()
    try:
        out = strict_json(sanity_cascade(model, x, v, m, seed=0))
    finally:
        assert model.training
        model.eval()
    assert torch.equal(rng_state, torch.random.get_rng_state())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    stages = [c["stage"] for c in out["curve"]]
    assert stages[:3] == ["trained", "head", "pooling"] and HEADLINE_STAGE in stages
    assert stages[-1].startswith("cnn.")
    assert out["curve"][0]["ssim"]["mean"] == pytest.approx(1.0)
    ssim = [c["ssim"]["mean"] for c in out["curve"]]
    # randomising the layers above the CAM layer changes the map (with a linear head on mean-pooled tokens a
    # random head alone may not: any positive mix of the toy's channels still lights the one bright blob)
    assert min(ssim[1:stages.index(HEADLINE_STAGE) + 1]) < 0.8
    assert ssim[-1] < 0.6 and ssim[-1] < ssim[stages.index(HEADLINE_STAGE)]
    assert out["headline"]["stage"] == HEADLINE_STAGE and out["lowest"]["ssim_mean"] == pytest.approx(min(ssim[1:]))
    assert out["headline"]["ssim_mean"] == pytest.approx(ssim[stages.index(HEADLINE_STAGE)])
    assert out["parameters"]["target_class"] == [1, 1]
    assert [s for s, _ in randomisation_stages(model)] == stages[1:]


# ------------------------------------------------------------------------------------------ localisation
def test_the_models_own_map_localises_the_blob(trained):
    model = trained[0]
    pos = trained[6][:3]
    cam = gradcam_plus_plus(model, trained[1][pos], trained[3][pos], trained[4][pos])
    for j, i in enumerate(pos.tolist()):
        out = localisation(cam.upsampled()[j], trained[5][i][None].numpy(), n_random=0)
        assert out["pointing_game"]["value"] == 1.0                    # the dark lesion, not the distractor
        assert out["energy_in_mask"]["ratio"] > 1.5


# ------------------------------------------------------------------------------------------ coherence
def test_case_coherence_on_the_model(trained):
    model = trained[0]
    x, v, m, _ = one(trained, int(trained[6][0]))
    out = strict_json(case_coherence(model, x, v, m))
    split = modality_split(model, x, v, m)
    assert out["modality"]["phi_image"] == pytest.approx(split.image)
    assert out["modality"]["phi_clinical"] == pytest.approx(split.clinical)
    assert -1.0 <= out["coherence"] <= 1.0
    comp = out["components"]
    assert comp["spatial_used"] and -1.0 <= comp["spatial_colocation"] <= 1.0
    weaker = min(abs(split.image), abs(split.clinical))
    assert comp["modality_agreement"] == pytest.approx(np.sign(split.image * split.clinical) * weaker)
    expected = weaker * (0.75 * comp["sign_agreement"] + 0.25 * comp["spatial_colocation"])
    assert out["coherence"] == pytest.approx(expected)
    assert len(out["spatial"]["fields"]) == 3


# ------------------------------------------------------------------------------------------ volumes
def test_volume_metrics_use_real_slices_only(trained):
    model = trained[0]
    x, v, m, _ = one(trained, int(trained[6][0]))
    vol = torch.cat([x, x.flip(-1), torch.zeros_like(x)], dim=1)                # (1, 3, 1, H, W), slice 2 padded
    mask = torch.tensor([[True, True, False]])
    stab = gradcam_stability(model, vol, v, m, slice_mask=mask, k=2)
    assert stab["parameters"]["volume_mode"] == "slices" and stab["noise"]["n"] == 2
    dele = image_deletion(model, vol, v, m, slice_mask=mask, fractions=(0.0, 0.1, 0.2), n_random=1)
    assert dele["parameters"]["n_real_voxels"] == 2 * SIZE * SIZE
    with pytest.raises(ValueError, match="no image"):
        image_deletion(model, vol, v, m, slice_mask=mask, image_present=False)
