"""Splits: grouped by patient, stratified, seeded, predefined splits win, saved files reused safely."""

from __future__ import annotations

import json
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmxai_core.data.manifest import load_manifest
from mmxai_core.data.schema import ClinicalSchema
from mmxai_core.data.splits import SplitError, load_splits, make_splits, save_splits
from mmxai_core.errors import ManifestError

SCHEMA = ClinicalSchema.from_dict({"fields": [{"name": "age", "type": "numeric"}]})


def cohort_manifest(folder: Path, rows: list[tuple[str, str, str]], name: str = "m.csv"):
    """Manifest of (patient_id, label, split) rows; no files are checked."""
    lines = ["patient_id,image,label,split"] + [f"{p},img{i}.png,{lab},{s}" for i, (p, lab, s) in enumerate(rows)]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return load_manifest(path, SCHEMA, check_files=False, min_cases_per_class=0)


def random_cohort(rng: np.random.Generator, n_patients: int, p_malignant: float = 0.3):
    rows = []
    for i in range(n_patients):
        label = "malignant" if rng.random() < p_malignant else "benign"
        rows += [(f"P{i:04d}", label, "")] * int(rng.integers(1, 4))
    return rows


def check_grouped(manifest, splits):
    assigned = splits.assign(manifest)
    by_patient = defaultdict(set)
    for pid, s in zip(manifest.patients, assigned):
        by_patient[pid].add(s)
    assert all(len(s) == 1 for s in by_patient.values())  # no patient in two splits
    assert set(splits.patients) == set(by_patient)
    return assigned


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_no_patient_in_two_splits(data):
    n = data.draw(st.integers(1, 30), label="patients")
    labels = data.draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n), label="labels")
    images = data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n), label="images")
    predefined = data.draw(st.lists(st.sampled_from(["", "", "", "train", "val", "test"]), min_size=n, max_size=n))
    mixed = data.draw(st.booleans(), label="a patient with two labels")
    rows = []
    for i in range(n):
        for k in range(images[i]):
            lab = labels[(i + k) % n] if mixed and k else labels[i]
            # a patient's rows may leave the split empty on some rows: they follow the predefined one
            rows.append((f"p{i}", lab, predefined[i] if k == 0 else ""))
    val = data.draw(st.sampled_from([0.0, 0.1, 0.2, 0.3]))
    test = data.draw(st.sampled_from([0.0, 0.1, 0.2, 0.3]))
    seed = data.draw(st.integers(0, 2**31 - 1))
    with tempfile.TemporaryDirectory() as tmp:
        m = cohort_manifest(Path(tmp), rows)
        try:
            splits = make_splits(m, val_fraction=val, test_fraction=test, seed=seed)
        except SplitError as e:  # an infeasible cohort is a clear error, never a crash
            assert e.problems and all(isinstance(msg, str) for _, _, msg in e.problems)
            return
    assigned = check_grouped(m, splits)
    for (pid, _, s), a in zip(rows, assigned):
        if s:
            assert a == s  # predefined split kept
    counts = Counter(zip(assigned, m.table["label"]))
    for s in set(assigned):  # every non-empty split holds every class
        assert all(counts[s, c] > 0 for c in m.classes)
    assert "train" in set(assigned)
    assert splits.seed == seed and sum(splits.patient_counts.values()) == len(set(m.patients))


def test_stratified_sizes_and_ratio(tmp_path):
    rows = random_cohort(np.random.default_rng(1), 300)
    m = cohort_manifest(tmp_path, rows)
    splits = make_splits(m, val_fraction=0.15, test_fraction=0.2, seed=3)
    assigned = check_grouped(m, splits)
    pc = splits.patient_counts
    assert pc["test"] == 60 and pc["val"] == 45 and pc["train"] == 195  # exact fractions of 300 patients
    patient_label = {p: lab for p, lab, _ in rows}
    overall = np.mean([lab == "malignant" for lab in patient_label.values()])
    for s in ("train", "val", "test"):
        members = [p for p, sp in splits.patients.items() if sp == s]
        ratio = np.mean([patient_label[p] == "malignant" for p in members])
        assert abs(ratio - overall) < 0.03, (s, ratio, overall)
    # counts are rows (images) per split and class
    assert sum(sum(c.values()) for c in splits.counts.values()) == len(m)
    assert splits.counts["test"]["malignant"] == sum(1 for (p, lab, _), a in zip(rows, assigned)
                                                     if a == "test" and lab == "malignant")


def test_deterministic_and_order_independent(tmp_path):
    rows = random_cohort(np.random.default_rng(2), 80)
    m = cohort_manifest(tmp_path, rows)
    a = make_splits(m, seed=7)
    assert make_splits(m, seed=7).patients == a.patients
    assert make_splits(m, seed=8).patients != a.patients
    shuffled = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    m2 = cohort_manifest(tmp_path, shuffled, name="shuffled.csv")
    assert make_splits(m2, seed=7).patients == a.patients


def test_predefined_split_wins(tmp_path):
    rows = random_cohort(np.random.default_rng(3), 60)
    official_test = {p for p, _, _ in rows[::5]}
    rows = [(p, lab, "test" if p in official_test else "") for p, lab, _ in rows]
    rows[1] = (rows[1][0], rows[1][1], "train") if rows[1][0] not in official_test else rows[1]
    m = cohort_manifest(tmp_path, rows)
    splits = make_splits(m, val_fraction=0.2, test_fraction=0.0, seed=0)
    for p in official_test:
        assert splits.patients[p] == "test"
    assert splits.patients[rows[1][0]] in ("train", "test")
    free = [p for p in splits.patients if p not in official_test]
    assert {splits.patients[p] for p in free} == {"train", "val"}  # test_fraction=0: no extra test patients
    check_grouped(m, splits)


def test_conflicting_predefined_splits_name_the_rows(tmp_path):
    rows = [("p1", "a", "train"), ("p1", "a", "test"), ("p2", "b", ""), ("p1", "a", "test"), ("p3", "a", "")]
    m = cohort_manifest(tmp_path, rows)
    with pytest.raises(SplitError) as info:
        make_splits(m)
    (r, c, msg), = info.value.problems
    assert (r, c) == (2, "split")
    assert "patient 'p1'" in msg and "'train' in rows 2" in msg and "'test' in rows 3, 5" in msg
    assert isinstance(info.value, ManifestError)


def test_empty_or_classless_splits(tmp_path):
    rows = [("p1", "a", ""), ("p2", "a", ""), ("p3", "b", ""), ("p4", "b", "")]
    m = cohort_manifest(tmp_path, rows)
    with pytest.raises(SplitError) as info:
        make_splits(m, val_fraction=0.25, test_fraction=0.25)
    text = str(info.value)
    assert "split 'val' has no case of class" in text or "split 'test' has no case of class" in text
    with pytest.raises(SplitError, match="too few"):
        make_splits(cohort_manifest(tmp_path, rows[:1], "one.csv"), val_fraction=0.3, test_fraction=0.3)
    # fractions 0: empty val and test are allowed
    s = make_splits(m, val_fraction=0.0, test_fraction=0.0)
    assert set(s.patients.values()) == {"train"} and s.patient_counts == {"train": 4, "val": 0, "test": 0}
    with pytest.raises(SplitError, match="split 'train' is empty"):
        make_splits(cohort_manifest(tmp_path, [(p, lab, "test") for p, lab, _ in rows], "t.csv"),
                    val_fraction=0.0, test_fraction=0.0)
    with pytest.raises(SplitError, match="val_fraction must be in"):
        make_splits(m, val_fraction=1.5)
    with pytest.raises(SplitError, match="must be < 1"):
        make_splits(m, val_fraction=0.5, test_fraction=0.5)


def test_save_load_and_reuse(tmp_path):
    rows = random_cohort(np.random.default_rng(4), 40)
    m = cohort_manifest(tmp_path, rows)
    splits = make_splits(m, seed=5)
    path = save_splits(splits, tmp_path / "splits.json")
    data = json.loads(path.read_text())
    assert data["seed"] == 5 and data["val_fraction"] == 0.15 and data["test_fraction"] == 0.15
    assert data["patients"] == splits.patients and set(data["counts"]) == {"train", "val", "test"}
    assert data["counts"]["train"].keys() == {"benign", "malignant"}
    again = load_splits(path)
    assert again.patients == splits.patients and again.counts == splits.counts
    np.testing.assert_array_equal(again.assign(m), splits.assign(m))
    idx = again.indices(m)
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(len(m)))
    # a subset of the cohort is fine
    sub = m.subset(np.arange(10))
    assert (again.assign(sub) == splits.assign(m)[:10]).all()
    # new patients: a clear error naming them and their rows
    m_new = cohort_manifest(tmp_path, rows + [("NEW1", "benign", ""), ("NEW1", "benign", ""),
                                              ("NEW2", "malignant", "")], name="new.csv")
    with pytest.raises(SplitError) as info:
        again.assign(m_new)
    probs = info.value.problems
    n = len(rows)
    assert [(r, c) for r, c, _ in probs] == [(n + 2, "patient_id"), (n + 4, "patient_id")]
    assert "patient 'NEW1' (rows %d, %d) is not in the split file %s" % (n + 2, n + 3, path) in probs[0][2]
    # a predefined split that disagrees with the file
    p0, lab0, _ = rows[0]
    other = "test" if splits.patients[p0] != "test" else "train"
    m_dis = cohort_manifest(tmp_path, [(p0, lab0, other)] + rows[1:], name="dis.csv")
    with pytest.raises(SplitError, match=f"row 2, column 'split': predefined split '{other}' disagrees"):
        again.assign(m_dis)


def test_load_splits_errors(tmp_path):
    with pytest.raises(SplitError, match="split file not found"):
        load_splits(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SplitError, match="cannot read the split file"):
        load_splits(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "x"}')
    with pytest.raises(SplitError, match="not a split file"):
        load_splits(tmp_path / "other.json")
    (tmp_path / "names.json").write_text(json.dumps({"format": "mmxai.splits", "version": 1, "seed": 0,
                                                     "val_fraction": 0.1, "test_fraction": 0.1,
                                                     "classes": ["a", "b"], "patients": {"p1": "holdout"}}))
    with pytest.raises(SplitError, match="unknown split name.*holdout"):
        load_splits(tmp_path / "names.json")
