"""The synthetic cohort's label model, checked on large cohorts planned in memory (no files, no pixels)."""

import numpy as np
import pytest

from mmxai_core.data.synthetic import NOISE_FIELDS, sample_cohort
from mmxai_core.data.synthetic import label_model as lm
from mmxai_core.data.synthetic.fields import FIELD_BY_NAME, FIELDS

N = 12000


@pytest.fixture(scope="module")
def cohort():
    return sample_cohort(N, seed=11, kind="mixed")


def _design(cohort, with_interaction=False):
    """True clinical values as regression columns (categories one-hot vs the first), plus image score."""
    cols, names = [cohort.image_scores], ["image_score"]
    for f in FIELDS:
        v = cohort.values(f.name)
        if f.type == "categorical":
            for code, cat in enumerate(f.categories[1:], start=1):
                cols.append((v == code).astype(float))
                names.append(f"{f.name}={cat}")
        elif f.name == "ca15_3":
            cols.append(np.log(v / 18.0))
            names.append(f.name)
        elif f.type == "numeric":
            cols.append((v - v.mean()) / 10.0)
            names.append(f.name)
        else:
            cols.append(v)
            names.append(f.name)
    if with_interaction:
        cols.append(cohort.image_scores * (cohort.values("breast_density") - 1.5))
        names.append("image_x_density")
    return np.column_stack(cols), names


def _fit(x, y):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e6, max_iter=2000).fit(x, y)
    return model.coef_[0]


def test_label_depends_on_image_and_clinical_fields_in_the_declared_direction(cohort):
    x, names = _design(cohort, with_interaction=True)
    coef = dict(zip(names, _fit(x, cohort.labels)))
    assert coef["image_score"] == pytest.approx(lm.IMAGE_COEF, rel=0.15)
    assert coef["image_x_density"] == pytest.approx(lm.INTERACTION_COEF, abs=0.25)
    assert coef["image_x_density"] < -0.2
    c = lm.CLINICAL_COEFS
    assert coef["age"] == pytest.approx(c["age"]["coef"], rel=0.25)
    assert coef["breast_density"] == pytest.approx(c["breast_density"]["coef"], rel=0.35)
    assert coef["family_history"] == pytest.approx(c["family_history"]["coef"], rel=0.2)
    assert coef["ca15_3"] == pytest.approx(c["ca15_3"]["coef"], rel=0.2)
    assert coef["prior_biopsy"] == pytest.approx(c["prior_biopsy"]["coef"], rel=0.35)
    for cat in ("palpable_lump", "nipple_discharge", "breast_pain"):
        assert coef[f"presentation={cat}"] == pytest.approx(c["presentation"]["coef"][cat], abs=0.3)
    assert coef["presentation=palpable_lump"] > 1.0 and coef["presentation=breast_pain"] < -0.5


def _loglik(x, y):
    from sklearn.linear_model import LogisticRegression

    p = LogisticRegression(C=1e6, max_iter=2000).fit(x, y).predict_proba(x)[:, 1]
    return float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _lr_test_p(x, names, y, field):
    """p-value of the likelihood-ratio test for dropping every column of ``field``."""
    from scipy.stats import chi2

    keep = [i for i, n in enumerate(names) if n.split("=")[0] != field]
    stat = 2 * (_loglik(x, y) - _loglik(x[:, keep], y))
    return float(chi2.sf(stat, len(names) - len(keep)))


def test_noise_fields_have_no_effect(cohort):
    x, names = _design(cohort, with_interaction=True)
    y = cohort.labels
    assert sum(n.split("=")[0] in NOISE_FIELDS for n in names) == 1 + 3 + 1  # heart, blood (3), handed
    for field in NOISE_FIELDS:
        assert _lr_test_p(x, names, y, field) > 1e-3, field
    for field in ("age", "family_history", "presentation", "ca15_3"):  # the test can see real effects
        assert _lr_test_p(x, names, y, field) < 1e-6, field
    # and the ground-truth logit does not move when only noise fields change
    values = {f.name: cohort.values(f.name) for f in FIELDS}
    shuffled = dict(values)
    rng = np.random.default_rng(0)
    for name in NOISE_FIELDS:
        shuffled[name] = rng.permutation(values[name])
    np.testing.assert_allclose(lm.logit(cohort.image_scores, values),
                               lm.logit(cohort.image_scores, shuffled))
    np.testing.assert_allclose(lm.logit(cohort.image_scores, values), cohort.logits)


def test_aucs_of_true_scores_are_in_the_designed_ranges(cohort):
    y = cohort.labels
    img, clin, both = (lm.auc(cohort.image_scores, y), lm.auc(cohort.clinical_scores, y),
                       lm.auc(cohort.logits, y))
    assert 0.78 <= img <= 0.86
    assert 0.68 <= clin <= 0.77
    assert 0.89 <= both <= 0.95
    assert both > img + 0.05 and both > clin + 0.1
    assert 0.35 <= y.mean() <= 0.6


def test_discordant_cases_exist_are_marked_and_point_opposite_ways(cohort):
    disc = np.array([p.discordant for p in cohort.patients])
    inj = np.array([p.discordant_injected for p in cohort.patients])
    img_ev = np.array([p.image_evidence for p in cohort.patients])
    clin = cohort.clinical_scores
    assert 0.04 < disc.mean() < 0.2
    assert inj.sum() > 0 and np.all(disc[inj])
    assert np.all(np.sign(img_ev[disc]) != np.sign(clin[disc]))
    assert np.all(np.abs(img_ev[disc]) >= lm.DISCORDANT_IMAGE_MIN)
    assert np.all(np.abs(clin[disc]) >= lm.DISCORDANT_CLINICAL_MIN)
    # both directions occur: suspicious image with reassuring clinic, and the reverse
    assert (img_ev[disc] > 0).any() and (img_ev[disc] < 0).any()
    assert not lm.is_discordant(img_ev[~disc], clin[~disc]).any()


def test_missing_values_are_about_ten_percent_and_unrelated_to_the_label(cohort):
    y = cohort.labels.astype(bool)
    for f in FIELDS:
        miss = np.array([p.missing[f.name] for p in cohort.patients])
        assert 0.08 < miss.mean() < 0.12, f.name
        assert abs(miss[y].mean() - miss[~y].mean()) < 0.025, f.name


def test_clinical_values_follow_their_declared_types_and_ranges(cohort):
    for f in FIELDS:
        v = cohort.values(f.name)
        if f.type == "numeric":
            assert v.min() >= f.range[0] and v.max() <= f.range[1]
        elif f.type == "boolean":
            assert set(np.unique(v)) == {0.0, 1.0}
        else:
            assert set(np.unique(v)) == set(range(len(f.categories)))
    assert FIELD_BY_NAME["age"].dicom == "PatientAge"
    assert 8 <= len(FIELDS) <= 10


def test_image_score_is_what_the_lesion_shows(cohort):
    pats = cohort.patients[:3000]
    present = np.array([p.lesion.present for p in pats])
    score = np.array([p.image_score for p in pats])
    assert 0.08 < 1 - present.mean() < 0.2  # some patients show no lesion at all
    radius = np.array([p.lesion.radius_mm for p in pats])[present]
    contrast = np.array([p.lesion.contrast for p in pats])[present]
    spic = np.array([p.lesion.spiculation for p in pats])[present]
    for trait in (radius, contrast, spic):
        assert np.corrcoef(trait, score[present])[0, 1] > 0.7
    assert score[~present].max() < score[present].min() + 0.6


def test_same_seed_same_plan_and_different_seed_different_plan():
    a, b, c = sample_cohort(300, 5), sample_cohort(300, 5), sample_cohort(300, 6)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.logits, b.logits)
    assert [p.images[0].key for p in a.patients] == [p.images[0].key for p in b.patients]
    assert not np.array_equal(a.logits, c.logits)


@pytest.mark.parametrize("kind, modalities", [("2d", {"MG"}), ("3d", {"MR"}), ("mixed", {"MG", "MR"})])
def test_kind_selects_modalities_and_small_cohorts_have_variety(kind, modalities):
    c = sample_cohort(12, seed=2, kind=kind)
    assert {p.modality for p in c.patients} == modalities
    if "MG" in modalities:
        assert any(len(p.images) == 2 for p in c.patients)  # CC + MLO of one patient
    if "MR" in modalities:
        assert any(p.images[0].oblique for p in c.patients if p.modality == "MR")


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        sample_cohort(0)
    with pytest.raises(ValueError):
        sample_cohort(5, kind="4d")
