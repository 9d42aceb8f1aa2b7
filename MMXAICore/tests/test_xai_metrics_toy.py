"""Explanation-quality metrics on toy explainers, toy models and toy games whose right answers are known:
rigid transforms and their inverse, stability, deletion, clinical deletion with exact Shapley values,
localisation with its baselines, coherence and its AUROC, and the report figures."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.explain.metrics.coherence import coherence_auroc, coherence_from_parts, modality_agreement
from mmxai_core.explain.metrics.faithfulness import clinical_deletion_curve, deletion_curve
from mmxai_core.explain.metrics.localisation import expected_random_iou, localisation, summarise_localisation
from mmxai_core.explain.metrics.ssim import volume_ssim
from mmxai_core.explain.metrics.stability import (RigidTransform, map_stability, shapley_stability_of_rows,
                                                  support_mask, unwarp, warp)
from mmxai_core.explain.shapley import coalition_matrix, shapley_from_table


def strict_json(d):
    return json.loads(json.dumps(d, allow_nan=False))


def blobs_image(size=64, slices=1, seed=0, centres=None):
    """(1, S, 1, size, size) Gaussian blobs on a zero background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    img = np.zeros((1, slices, 1, size, size), np.float32)
    for s in range(slices):
        for cy, cx in (centres or [tuple(rng.uniform(16, size - 16, 2)) for _ in range(3)]):
            img[0, s, 0] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0 ** 2))
    return torch.as_tensor(img)


# ------------------------------------------------------------------------------------------ transforms
def test_warp_moves_content_by_the_shift_and_rotates_about_the_centre():
    x = torch.zeros(1, 1, 20, 30)
    x[0, 0, 5, 7] = 1.0
    moved = warp(x, [RigidTransform((2.0, 3.0), 0.0)])
    assert (moved[0, 0] > 0.99).nonzero().tolist() == [[7, 10]]
    # +90 deg about the centre (row 9.5, col 14.5): (x=7, y=5) -> (x=19, y=2)
    turned = warp(x, [RigidTransform((0.0, 0.0), 90.0)])
    assert (turned[0, 0] > 0.99).nonzero().tolist() == [[2, 19]]
    # mapping back undoes it
    assert torch.allclose(unwarp(moved, [RigidTransform((2.0, 3.0), 0.0)]), x, atol=1e-5)


def test_unwarp_inverts_warp_on_the_support():
    img = blobs_image(48, seed=1)[0, :, 0]                                       # (1, 48, 48)
    trs = [RigidTransform((1.3, -2.2), 7.0), RigidTransform((-3.0, 0.0), -5.0)]
    x = img.expand(2, -1, -1, -1)
    back = unwarp(warp(x, trs), trs)
    valid = support_mask(trs, 48, 48)
    assert 0.7 < float(valid.float().mean()) < 1.0
    err = (back - x)[:, 0][valid].abs().max()
    assert float(err) < 0.03                                                   # two bilinear resamplings


# ------------------------------------------------------------------------------------------ stability
def test_constant_explainer_is_perfectly_stable():
    img = blobs_image(48)
    uniform = lambda imgs: torch.full((imgs.shape[0], imgs.shape[1], 48, 48), 0.3)  # noqa: E731
    out = map_stability(uniform, img, k=4, seed=0)
    for name in ("noise", "rigid"):
        assert out[name]["mean"] == pytest.approx(1.0, abs=1e-9)
        assert out[name]["min"] == pytest.approx(1.0, abs=1e-9)
    fixed = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    out = map_stability(lambda imgs: fixed.expand(imgs.shape[0], -1, -1, -1), img, k=4,
                        perturbations=("noise",))
    assert out["noise"]["mean"] == pytest.approx(1.0, abs=1e-9)
    assert "rigid" not in out


def test_noisy_maps_are_less_stable_and_more_noise_is_worse():
    img = blobs_image(48)
    follows_input = lambda imgs: imgs[:, :, 0].clamp(0, 1)  # noqa: E731  (map = the image)
    small = map_stability(follows_input, img, k=4, noise_fraction=0.02, perturbations=("noise",))
    large = map_stability(follows_input, img, k=4, noise_fraction=0.2, perturbations=("noise",))
    assert 1.0 > small["noise"]["mean"] > large["noise"]["mean"]
    assert small["parameters"]["noise_sigma"] == pytest.approx(0.02 * small["parameters"]["intensity_range"])


def test_equivariant_map_is_stable_after_mapping_back_and_not_before():
    """A map that moves with the image gives SSIM ~1 only if the inverse transform is right."""
    img = blobs_image(64, seed=2)
    follows_input = lambda imgs: imgs[:, :, 0]  # noqa: E731
    out = map_stability(follows_input, img, k=6, shift_px=4.0, rotation_deg=8.0, seed=3,
                        perturbations=("rigid",))
    assert out["rigid"]["min"] > 0.98, out["rigid"]
    # the same perturbed maps compared without the inverse transform are far less similar
    trs = [RigidTransform(tuple(t["shift_px"]), t["rotation_deg"]) for t in out["rigid"]["transforms"]]
    moved = warp(img[:, :, 0].expand(6, -1, -1, -1), trs)
    naive = volume_ssim(img[0, :, 0].expand(6, -1, -1, -1), moved, data_range=1.0)
    assert float(np.max(naive)) < 0.9
    # every shift has the stated length, every rotation the stated angle
    for t in out["rigid"]["transforms"]:
        assert math.hypot(*t["shift_px"]) == pytest.approx(4.0)
        assert abs(t["rotation_deg"]) == pytest.approx(8.0)


def test_volume_stability_uses_real_slices_and_is_seeded():
    img = blobs_image(40, slices=3, seed=4)
    img[0, 2] = 5.0                                                            # padded slice: ignored
    mask = torch.tensor([[True, True, False]])
    follows_input = lambda imgs: imgs[:, :, 0].clamp(0, 1)  # noqa: E731
    a = map_stability(follows_input, img, slice_mask=mask, k=3, seed=7)
    b = map_stability(follows_input, img, slice_mask=mask, k=3, seed=7)
    c = map_stability(follows_input, img, slice_mask=mask, k=3, seed=8)
    assert a["noise"]["values"] == b["noise"]["values"]
    assert a["noise"]["values"] != c["noise"]["values"]
    assert a["parameters"]["intensity_range"] < 5.0                           # padded slice not counted
    assert a["rigid"]["mean"] > 0.97


def test_stability_output_states_its_parameters():
    img = blobs_image(32)
    out = strict_json(map_stability(lambda imgs: imgs[:, :, 0].clamp(0, 1), img, k=2))
    params = out["parameters"]
    for key in ("k", "seed", "noise_fraction", "noise_sigma", "intensity_range", "shift_px", "rotation_deg",
                "ssim", "data_range", "volume_mode", "compared_at"):
        assert key in params, key
    assert params["ssim"]["win_size"] == 11 and params["k"] == 2
    assert len(out["noise"]["values"]) == 2 and len(out["rigid"]["valid_fraction"]) == 2


def test_shapley_stability_jitters_numeric_fields_only():
    w = np.array([0.3, -0.2, 0.5, 0.1])
    numeric = np.array([True, False, True, True])
    calls = []

    def rows_fn(values, missing):                                   # additive toy model
        calls.append(values.copy())
        return np.where(missing, 0.0, values * w).sum(1)

    values = np.array([0.5, 1.0, 0.4, 0.9])
    known = np.array([True, True, True, False])                     # field 3 unknown: stays unknown
    out = strict_json(shapley_stability_of_rows(rows_fn, values, known, numeric, k=5, jitter=0.05, seed=1,
                                                field_names=["a", "b", "c", "d"]))
    assert len(calls) == 1                                          # every row's coalitions in one call
    rows = calls[0]
    assert np.all(rows[:, 1] == 1.0)                                # categorical unchanged
    assert np.all(rows[:, 3] == 0.0)                                # unknown field: value 0 in every row
    assert np.all((rows[:, [0, 2]] >= 0) & (rows[:, [0, 2]] <= 1))
    assert out["parameters"]["jittered_fields"] == ["a", "c"]
    assert out["reference_values"] == pytest.approx({"a": 0.15, "b": -0.2, "c": 0.2})
    assert 0.9 < out["pearson"]["min"] <= 1.0
    zero = shapley_stability_of_rows(lambda v, m: np.zeros(len(v)), values, known, numeric, k=3)
    assert zero["n_constant"] == 3 and zero["pearson"]["n_nan"] == 3  # constant vectors: NaN, flagged


# ------------------------------------------------------------------------------------------ deletion
def linear_model(w):
    """score = sigmoid(sum(w x) - 2) of (N, 1, 1, H, W) images."""
    def fn(images):
        return torch.sigmoid((images[:, 0, 0] * w).sum(dim=(1, 2)) - 2.0)
    return fn


def test_deletion_of_true_importance_beats_random_and_reverse():
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(32, 32, generator=gen) ** 4 * 0.05
    x = torch.rand(1, 1, 1, 32, 32, generator=gen) + 0.5
    truth = (w * x[0, 0, 0]).numpy()                                   # each pixel's contribution
    kw = dict(removal="baseline", baseline_value=0.0, n_random=6, seed=1)
    good = deletion_curve(linear_model(w), x, truth, **kw)
    bad = deletion_curve(linear_model(w), x, -truth, **kw)
    rand = good["random"]["aopc"]["mean"]
    assert good["attributed"]["aopc"] > rand > bad["attributed"]["aopc"]
    assert good["aopc_difference"] > 0 and good["aopc_ratio"] > 1
    drops = good["attributed"]["drop"]
    assert drops[0] == 0.0 and all(b >= a - 1e-7 for a, b in zip(drops, drops[1:]))
    assert good["parameters"]["deleted_counts"] == [round(f * 1024) for f in good["parameters"]["fractions"]]
    strict_json(good)


def test_deletion_blur_and_parameters():
    img = blobs_image(32, seed=5)
    attribution = img[0, :, 0].numpy()
    score = lambda imgs: imgs[:, 0, 0].amax(dim=(1, 2))  # noqa: E731  (the brightest pixel)
    out = deletion_curve(score, img, attribution, n_random=3, blur_sigma_px=3.0)
    params = out["parameters"]
    assert params["removal"] == "blur" and params["blur_sigma_px"] == 3.0 and params["n_random"] == 3
    assert params["fractions"] == pytest.approx([0.05 * i for i in range(11)])
    assert out["attributed"]["aopc"] > out["random"]["aopc"]["mean"]
    with pytest.raises(ValueError, match="attribution must match"):
        deletion_curve(score, img, attribution[:, :16], n_random=0)


def test_clinical_deletion_with_exact_shapley_removes_the_most_important_field_first():
    w = np.array([0.05, 0.30, -0.10, 0.15, 0.40])
    known = np.array([True, True, True, True, False])                 # field 4 unknown: never a player

    def value_fn(keep):                                                # toy game with an interaction
        keep = keep & known
        return 0.2 + keep @ w + 0.05 * (keep[:, 0] & keep[:, 3])

    players = np.flatnonzero(known)
    table_keep = np.zeros((16, 5), bool)
    table_keep[:, players] = coalition_matrix(4)
    phi = np.zeros(5)
    phi[players] = shapley_from_table(value_fn(table_keep))
    out = clinical_deletion_curve(value_fn, phi, known, field_names=list("abcde"))
    assert out["removed_order"] == ["b", "d", "a", "c"]                  # most positive first
    drops = out["attributed"]["drop"]
    assert drops[1] == pytest.approx(0.30)                             # b removed first
    assert len(drops) == 5 and drops[0] == 0.0
    # d! = 24 > 16 random orders by default; with n_random >= 24 all orders are used: exact mean
    exact = clinical_deletion_curve(value_fn, phi, known, n_random=24)
    assert exact["parameters"]["random_orders"].startswith("all 24")
    full = np.ones((1, 5), bool)
    means = []
    for perm in itertools.permutations(players):
        keep = np.repeat(full, 5, 0)
        for j in range(5):
            keep[j, list(perm[:j])] = False
        means.append(np.mean(value_fn(full)[0] - value_fn(keep)))
    assert exact["random"]["aopc"]["mean"] == pytest.approx(np.mean(means))
    assert out["attributed"]["aopc"] > exact["random"]["aopc"]["mean"]
    by_abs = clinical_deletion_curve(value_fn, phi, known, rank_by="abs", field_names=list("abcde"))
    assert by_abs["removed_order"][:2] == ["b", "d"] and by_abs["parameters"]["rank_by"] == "abs"
    strict_json(out)


# ------------------------------------------------------------------------------------------ localisation
def peaked_map(centre, size=64, sigma=3.0):
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma ** 2))


def lesion(size=64, centre=(20, 20), radius=5):
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def test_map_peaked_inside_the_mask_hits_and_beats_the_baselines():
    mask = lesion()
    out = strict_json(localisation(peaked_map((21, 19)), mask, n_random=8))
    assert out["defined"]
    for key in ("pointing_game", "energy_in_mask", "iou"):
        assert out[key]["value"] > out[key]["baseline"], key
        assert out[key]["ratio"] > 2, key
    assert out["pointing_game"]["value"] == 1.0
    dilated = localisation(peaked_map((21, 19)), mask, n_random=0)["pointing_game"]["baseline"]
    from scipy import ndimage

    expected = float((ndimage.distance_transform_edt(~mask) <= 2.0).mean())
    assert dilated == pytest.approx(expected)
    assert out["energy_in_mask"]["baseline"] == pytest.approx(mask.mean())
    assert out["parameters"]["tolerance"] == 2.0 and out["parameters"]["iou_mode"] == "mask_area"


def test_map_peaked_outside_the_mask_misses_and_tolerance_counts():
    mask = lesion(radius=5)
    far = localisation(peaked_map((50, 50)), mask, n_random=0)
    assert far["pointing_game"]["value"] == 0.0
    assert far["pointing_game"]["value"] < far["pointing_game"]["baseline"]
    near = peaked_map((20, 27))                                         # 2 px outside the disc
    assert localisation(near, mask, tolerance=2.0, n_random=0)["pointing_game"]["value"] == 1.0
    assert localisation(near, mask, tolerance=0.0, n_random=0)["pointing_game"]["value"] == 0.0
    # anisotropic spacing: 2 voxels along x are 1 mm apart at 0.5 mm
    assert localisation(near, mask, tolerance=1.0, spacing=(1.0, 1.0, 0.5),
                        n_random=0)["pointing_game"]["value"] == 1.0


def test_flat_map_scores_exactly_the_pointing_baseline_and_monte_carlo_agrees():
    mask = lesion(radius=8)
    flat = localisation(np.ones((64, 64)), mask, n_random=0)
    assert flat["pointing_game"]["value"] == pytest.approx(flat["pointing_game"]["baseline"])
    assert flat["energy_in_mask"]["value"] == pytest.approx(flat["energy_in_mask"]["baseline"])
    mc = localisation(peaked_map((20, 20)), mask, n_random=64, random_sigma_px=2.0)
    for key in ("pointing_game", "energy_in_mask"):
        assert mc[key]["baseline_monte_carlo"]["mean"] == pytest.approx(mc[key]["baseline"], abs=0.1)


def test_expected_random_iou_matches_simulation():
    rng = np.random.default_rng(0)
    n, m, k = 200, 15, 30
    sims = []
    for _ in range(4000):
        chosen = rng.choice(n, k, replace=False)
        inter = np.sum(chosen < m)
        sims.append(inter / (k + m - inter))
    assert expected_random_iou(n, m, k) == pytest.approx(np.mean(sims), abs=0.005)


def test_localisation_of_volumes_empty_masks_and_summary():
    vol = np.zeros((3, 32, 32))
    vol[1] = peaked_map((10, 10), 32)
    mask = np.zeros((3, 32, 32), bool)
    mask[1] = lesion(32, (10, 10), 3)
    hit = localisation(vol, mask, n_random=4)
    assert hit["pointing_game"]["value"] == 1.0 and hit["n_foreground_voxels"] == 3 * 32 * 32
    empty = strict_json(localisation(vol, np.zeros_like(mask), n_random=4))
    assert not empty["defined"] and empty["pointing_game"]["value"] is None
    miss = localisation(np.roll(vol, 1, axis=0), mask, tolerance=0.0, n_random=0)   # right place, wrong slice
    assert miss["pointing_game"]["value"] == 0.0
    total = strict_json(summarise_localisation([hit, empty, miss]))
    assert total["n_defined"] == 2
    assert total["pointing_game"]["mean"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------ coherence
def test_modality_agreement_is_the_signed_weaker_contribution():
    assert modality_agreement(0.2, 0.3) == pytest.approx(0.2)
    assert modality_agreement(0.2, -0.3) == pytest.approx(-0.2)
    assert modality_agreement(-0.3, -0.1) == pytest.approx(modality_agreement(0.3, 0.1)) == pytest.approx(0.1)
    assert modality_agreement(-0.4, 0.1) == pytest.approx(modality_agreement(0.4, -0.1))   # class flip invariant
    assert abs(modality_agreement(0.3, -1e-4)) < 1e-3                  # one modality barely matters: neutral
    assert modality_agreement(0.3, 0.0) == 0.0


def toy_case(concordant, rng, grid=8):
    """Modality contributions and maps of one toy case: concordant cases have both modalities pushing the
    same way and the decisive field attending where the CAM is; discordant ones the opposite."""
    a = rng.uniform(0.05, 0.4) * rng.choice([-1, 1])
    b = abs(rng.uniform(0.05, 0.4)) * np.sign(a) * (1 if concordant else -1)
    yy, xx = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    cy, cx = rng.uniform(1, grid - 2, 2)
    cam = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0)[None]
    oy, ox = (cy, cx) if concordant else (grid - 1 - cy, grid - 1 - cx)
    att_top = 0.2 + 0.6 * np.exp(-((yy - oy) ** 2 + (xx - ox) ** 2) / 2.0)[None]
    att_other = 0.1 + 0.05 * rng.random((1, grid, grid))
    shap = {"age": 0.3, "er": -0.02}
    return a, b, cam, {"age": att_top, "er": att_other}, shap


def test_concordant_toy_cases_score_higher_and_auroc_is_one():
    rng = np.random.default_rng(0)
    scores, flags = [], []
    for i in range(40):
        concordant = i % 4 != 0
        a, b, cam, att, shap = toy_case(concordant, rng)
        out = coherence_from_parts(a, b, cam=cam, attention_maps=att, shapley=shap)
        assert out["components"]["spatial_used"]
        assert out["spatial"]["fields"] == ["age", "er"]
        scores.append(out["coherence"])
        flags.append(not concordant)
    scores, flags = np.array(scores), np.array(flags)
    assert scores[~flags].min() > scores[flags].max()
    result = strict_json(coherence_auroc(scores, flags, n_bootstrap=200))
    assert result["auroc"] == pytest.approx(1.0)
    assert result["n_discordant"] == 10 and result["n_other"] == 30
    assert result["direction"] == "lower coherence = discordant"


def test_coherence_components_and_fallback_without_maps():
    out = strict_json(coherence_from_parts(0.2, -0.1))
    assert out["components"]["spatial_used"] is False
    assert out["coherence"] == pytest.approx(out["components"]["modality_agreement"]) == pytest.approx(-0.1)
    assert out["parameters"]["alpha"] == 0.75 and out["parameters"]["units"].startswith("probability")
    # the spatial part modulates the size but never turns agreement into conflict (alpha > 1/2)
    cam = np.zeros((1, 8, 8))
    cam[0, 2, 2] = 1.0
    anti = {"a": 1.0 - cam}
    agree = coherence_from_parts(0.2, 0.1, cam=cam, attention_maps=anti, shapley={"a": 0.1})
    assert agree["components"]["spatial_colocation"] == pytest.approx(-1.0)
    assert agree["coherence"] == pytest.approx(0.1 * (0.75 - 0.25)) and agree["coherence"] > 0
    zero_cam = coherence_from_parts(0.2, 0.1, cam=np.zeros((1, 8, 8)), attention_maps={"a": np.random.rand(1, 8, 8)},
                                    shapley={"a": 0.1})
    assert zero_cam["components"]["spatial_used"] is False and zero_cam["spatial"]["constant"]


def test_coherence_auroc_equals_mann_whitney_and_handles_edge_cases():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    scores = rng.standard_normal(60)
    flags = rng.random(60) < 0.3
    scores[flags] -= 0.8
    result = coherence_auroc(scores, flags, n_bootstrap=300, seed=1)
    assert result["auroc"] == pytest.approx(roc_auc_score(flags, -scores))
    assert result["ci_low"] < result["auroc"] < result["ci_high"]
    with_nan = coherence_auroc(np.r_[scores, np.nan], np.r_[flags, True], n_bootstrap=0)
    assert with_nan["n_excluded"] == 1 and with_nan["auroc"] == pytest.approx(result["auroc"])
    assert coherence_auroc([0.1, 0.2], [False, False])["auroc"] is None


# ------------------------------------------------------------------------------------------ figures
def test_figures_are_written_atomically_with_the_notice(tmp_path):
    from mmxai_core.report.xai_plots import (metric_bars_figure, plot_deletion, plot_metric_bars, plot_sanity,
                                             plot_stability)

    gen = torch.Generator().manual_seed(0)
    w = torch.rand(32, 32, generator=gen) * 0.01
    x = torch.rand(1, 1, 1, 32, 32, generator=gen)
    image = deletion_curve(linear_model(w), x, (w * x[0, 0, 0]).numpy(), n_random=3)
    clin = clinical_deletion_curve(lambda keep: keep @ np.array([0.1, 0.2, 0.3]), np.array([0.1, 0.2, 0.3]),
                                   np.ones(3, bool), field_names=["a", "b", "c"])
    stab = map_stability(lambda imgs: imgs[:, :, 0].clamp(0, 1), blobs_image(32), k=3)
    sanity = {"curve": [{"stage": s, "ssim_per_case": v} for s, v in
                        [("trained", [1, 1]), ("head", [0.8, 0.6]), ("projection", [0.3, 0.4])]],
              "headline": {"stage": "projection", "ssim_mean": 0.35}}
    bars = {"pointing game": {"value": 0.8, "baseline": 0.1}, "AOPC": {"value": 0.2, "baseline": 0.05,
                                                                       "ci": [0.15, 0.25]}}
    paths = [plot_deletion(image, tmp_path / "del.png"), plot_deletion(clin, tmp_path / "clin.png"),
             plot_stability(stab, tmp_path / "stab.png"), plot_stability([stab, stab], tmp_path / "stab_all.png"),
             plot_sanity(sanity, tmp_path / "sanity.png"), plot_metric_bars(bars, tmp_path / "bars.png")]
    for path in paths:
        img = PILImage.open(path)
        assert img.info.get("Description") == RESEARCH_USE_NOTICE
        assert img.size[0] > 300 and np.asarray(img.convert("L")).std() > 5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)   # no temp files left
    fig = metric_bars_figure(bars)
    assert RESEARCH_USE_NOTICE in [t.get_text() for t in fig.texts]


def test_discordant_flags_read_the_synthetic_ground_truth(tmp_path):
    from mmxai_core.data.synthetic import ground_truth, sample_cohort
    from mmxai_core.explain.metrics.coherence import discordant_flags

    cohort = sample_cohort(300, seed=2)
    truth = ground_truth(cohort, reference_n=0)
    ids = [p.patient_id for p in cohort.patients][::-1]
    flags = discordant_flags(truth, ids)
    assert flags.tolist() == [p.discordant for p in cohort.patients][::-1] and flags.any()
    path = tmp_path / "ground_truth.json"
    path.write_text(json.dumps(truth))
    assert discordant_flags(path, ids[:5]).tolist() == flags[:5].tolist()
    with pytest.raises(ValueError, match="not in ground_truth"):
        discordant_flags(truth, ["nobody"])
    # the definition's form on the generator's own truth (image evidence and clinical score, which the
    # model's modality split estimates) separates the discordant cases almost perfectly
    scores = [modality_agreement(p.image_evidence, p.clinical_score) for p in cohort.patients]
    assert coherence_auroc(scores, [p.discordant for p in cohort.patients], n_bootstrap=0)["auroc"] > 0.98


def test_every_metric_output_names_its_parameters():
    img = blobs_image(32)
    w = torch.rand(32, 32, generator=torch.Generator().manual_seed(0)) * 0.01
    outputs = [
        map_stability(lambda imgs: imgs[:, :, 0].clamp(0, 1), img, k=2),
        shapley_stability_of_rows(lambda v, m: np.where(m, 0, v).sum(1), np.ones(3) * 0.5, np.ones(3, bool),
                                  np.ones(3, bool), k=2),
        deletion_curve(linear_model(w), img, img[0, :, 0].numpy(), n_random=2),
        clinical_deletion_curve(lambda keep: keep.sum(1) * 0.1, np.ones(3), np.ones(3, bool)),
        localisation(peaked_map((20, 20)), lesion(), n_random=2),
        coherence_from_parts(0.1, 0.2),
        coherence_auroc([0.1, 0.5, 0.9], [True, False, False], n_bootstrap=10),
    ]
    for out in outputs:
        assert isinstance(out.get("metric"), str) and out["metric"]
        assert isinstance(out.get("parameters"), dict) and out["parameters"], out["metric"]
        assert "seed" in out["parameters"] or out["metric"] == "crossmodal_coherence"
        strict_json(out)
