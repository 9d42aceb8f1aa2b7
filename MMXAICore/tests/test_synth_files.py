"""The synthetic cohort on disk: DICOM headers and geometry, masks, manifest, schema, ground truth,
determinism and overwrite rules."""

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_dilation

from mmxai_core.data.synthetic import GENERATOR_VERSION, render_image, sample_cohort, write_cohort
from mmxai_core.data.synthetic import label_model as lm
from mmxai_core.data.synthetic import output as synth_output
from mmxai_core.data.synthetic.fields import FIELDS
from mmxai_core.errors import MMXAIError

N, SEED = 24, 3


def _write(out, n=N, seed=SEED, kind="mixed", **kw):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synth_output, "REFERENCE_N", 500)
        return write_cohort(out, n=n, seed=seed, kind=kind, **kw)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "cohort"
    cohort = _write(out)
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return out, cohort, rows


def _images(cohort, modality):
    return [(p, i, im) for p in cohort.patients for i, im in enumerate(p.images) if im.modality == modality]


def _read_series(folder: Path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _same_geometry(a, b, atol=1e-4):
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=atol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=atol)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6))


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ layout
def test_manifest_lists_every_image_with_the_documented_columns(written):
    out, cohort, rows = written
    assert list(rows[0])[:5] == ["patient_id", "image", "label", "mask", "dataset"]
    assert list(rows[0])[5:] == [f.name for f in FIELDS]
    assert len(rows) == cohort.n_images() > N  # some patients have two views
    per_patient = {}
    for r in rows:
        per_patient.setdefault(r["patient_id"], []).append(r)
        assert (out / r["image"]).exists()
        assert r["label"] in ("benign", "malignant")
        assert r["dataset"] in ("synth-mg", "synth-mr")
        if r["mask"]:
            assert (out / r["mask"]).is_file()
    assert any(len(v) == 2 and len({r["label"] for r in v}) == 1 for v in per_patient.values())
    assert {r["label"] for r in rows} == {"benign", "malignant"}
    no_lesion = {p.patient_id for p in cohort.patients if not p.lesion.present}
    assert all((r["mask"] == "") == (r["patient_id"] in no_lesion) for r in rows)
    cells = [r[f.name] for r in rows for f in FIELDS]
    assert 0.03 < cells.count("") / len(cells) < 0.2  # missing values are empty cells
    assert not list(out.parent.glob(".cohort.*"))  # no temporary folders left behind


def test_mammograms_have_plausible_headers_and_read_back_with_their_geometry(written):
    out, cohort, _ = written
    mg = _images(cohort, "MG")
    assert mg
    for patient, idx, image in mg:
        path = out / image.image_path
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2" == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID):
            assert pydicom.uid.UID(uid).is_valid
        assert ds.Modality == "MG" and ds.PatientSex == "F"
        assert ds.ViewPosition == image.view in ("CC", "MLO")
        assert ds.ImageLaterality == image.laterality
        assert re.fullmatch(r"\d{3}Y", ds.PatientAge) and int(ds.PatientAge[:3]) == int(patient.clinical["age"])
        assert str(ds.PatientName).startswith("SYNTH^") and ds.PatientID.startswith("SYNTH")
        assert list(ds.ImagerPixelSpacing) == list(ds.PixelSpacing)
        assert ds.pixel_array.dtype == np.uint16 and ds.pixel_array.shape == image.size
        img = sitk.ReadImage(str(path))
        expected = render_image(cohort.seed, patient, idx)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(img), expected.stored)
        assert img.GetSpacing() == pytest.approx(expected.spacing)
        arr = ds.pixel_array.astype(float)
        half = arr.shape[1] // 2
        left, right = arr[:, :half].mean(), arr[:, half:].mean()
        assert (left > right) == (image.laterality == "L")  # the breast hangs from its own side
        if patient.lesion.present:
            mask = sitk.ReadImage(str(out / image.mask_path))
            assert _same_geometry(img, mask)


def test_mr_series_read_back_sorted_with_oblique_anisotropic_geometry(written):
    out, cohort, _ = written
    mr = _images(cohort, "MR")
    assert len(mr) >= 2
    assert any(im.oblique for _, _, im in mr)
    assert len({im.n_slices for _, _, im in mr}) > 1
    shuffled = 0
    for patient, idx, image in mr:
        folder = out / image.image_path
        vol = _read_series(folder)
        assert vol.GetSize() == (image.size[1], image.size[0], image.n_slices)
        np.testing.assert_allclose(vol.GetSpacing(), image.spacing, atol=1e-3)
        assert image.spacing[2] > image.spacing[0]  # anisotropic
        np.testing.assert_allclose(vol.GetOrigin(), image.origin, atol=1e-4)
        direction = np.array(vol.GetDirection()).reshape(3, 3)
        np.testing.assert_allclose(direction, image.rotation, atol=1e-6)
        assert np.allclose(direction, np.eye(3)) != image.oblique
        expected = render_image(cohort.seed, patient, idx)
        np.testing.assert_allclose(sitk.GetArrayFromImage(vol), expected.values, atol=1e-6)  # slice order
        names = sorted(p.name for p in folder.iterdir())
        positions = [float(np.dot(pydicom.dcmread(folder / n, stop_before_pixels=True).ImagePositionPatient,
                                  image.rotation[:, 2])) for n in names]
        shuffled += positions != sorted(positions) and positions != sorted(positions, reverse=True)
        ds = pydicom.dcmread(folder / names[0])
        assert ds.Modality == "MR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert len(ds.ImageOrientationPatient) == 6 and float(ds.SliceThickness) == image.spacing[2]
        assert ("RescaleSlope" in ds) == (image.rescale != (1.0, 0.0))
        if patient.lesion.present:
            mask = sitk.ReadImage(str(out / image.mask_path))
            assert _same_geometry(vol, mask)
    assert shuffled == len(mr)  # file names never sort in slice order
    assert any(im.rescale != (1.0, 0.0) for _, _, im in mr)


def test_masks_cover_the_bright_lesion(written):
    out, _, rows = written
    checked = 0
    for r in rows:
        if not r["mask"]:
            continue
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / r["mask"]))).astype(bool)
        path = out / r["image"]
        img = _read_series(path) if path.is_dir() else sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img).astype(float)
        assert mask.sum() >= 20
        ring = binary_dilation(mask, iterations=4) & ~binary_dilation(mask, iterations=1)
        assert arr[mask].mean() > arr[ring].mean(), r["image"]
        checked += 1
    assert checked >= N // 2


def test_read_image_gives_the_same_geometry_for_image_and_mask(written):
    io = pytest.importorskip("mmxai_core.io")
    if not hasattr(io, "read_image"):
        pytest.skip("mmxai_core.io.read_image not available")
    out, cohort, _ = written
    oblique_seen = False
    for patient, idx, image in _images(cohort, "MG")[:2] + _images(cohort, "MR"):
        if not patient.lesion.present:
            continue
        img = io.read_image(out / image.image_path)
        mask = io.read_image(out / image.mask_path)
        assert img.same_geometry(mask)
        if image.oblique:
            oblique_seen = True
            np.testing.assert_allclose(img.direction, image.rotation, atol=1e-6)
    assert oblique_seen


def test_manifest_validates_against_the_written_schema(written):
    schema_mod = pytest.importorskip("mmxai_core.data.schema")
    manifest_mod = pytest.importorskip("mmxai_core.data.manifest")
    out, cohort, _ = written
    schema = schema_mod.load_schema(out / "schema.yaml")
    assert list(schema.classes) == ["benign", "malignant"]
    assert schema.names == [f.name for f in FIELDS]
    manifest = manifest_mod.load_manifest(out / "manifest.csv", schema)
    assert len(manifest) == cohort.n_images()


def test_ground_truth_records_model_scores_and_discordant_cases(written):
    out, _, rows = written
    gt = json.loads((out / "ground_truth.json").read_text())
    assert gt["generator"] == "mmxai-synth" and gt["generator_version"] == GENERATOR_VERSION
    assert gt["seed"] == SEED and gt["n_patients"] == N and gt["n_images"] == len(rows)
    model = gt["label_model"]
    assert model["image_coef"] == lm.IMAGE_COEF and model["intercept"] == lm.INTERCEPT
    assert model["interaction"]["field"] == "breast_density" and model["interaction"]["coef"] < 0
    assert set(model["noise_fields"]) == {"heart_rate", "blood_group", "left_handed"}
    assert model["clinical"]["age"]["coef"] > 0
    cases = {c["patient_id"]: c for c in gt["cases"]}
    for r in rows:
        assert cases[r["patient_id"]]["label"] == r["label"]
    assert gt["discordant_cases"] == [c["patient_id"] for c in gt["cases"] if c["discordant"]]
    for c in gt["cases"]:
        assert {"image_score", "clinical_score", "logit", "p_malignant", "clinical_true", "missing"} <= set(c)
        assert c["logit"] == pytest.approx(lm.INTERCEPT + c["image_evidence"] + c["clinical_score"], abs=1e-5)
    assert set(gt["auc_reference"]) >= {"image_score", "clinical_score", "logit_both"}


# ---------------------------------------------------------------------------- determinism, overwrite
def test_same_seed_writes_identical_files_and_another_seed_differs(written, tmp_path):
    out, _, _ = written
    again = tmp_path / "again"
    _write(again)
    assert _tree_hashes(again) == _tree_hashes(out)
    other = tmp_path / "other"
    _write(other, seed=SEED + 1)
    h_out, h_other = _tree_hashes(out), _tree_hashes(other)
    assert h_out["manifest.csv"] != h_other["manifest.csv"]
    dcm_out = {h for k, h in h_out.items() if k.endswith(".dcm")}
    dcm_other = {h for k, h in h_other.items() if k.endswith(".dcm")}
    assert dcm_out and dcm_other and not dcm_out & dcm_other


def test_refuses_a_foreign_folder_and_replaces_previous_output(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(MMXAIError, match="not empty"):
        _write(foreign, n=2, kind="2d")
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(MMXAIError, match="not a folder"):
        _write(a_file, n=2, kind="2d")

    _write(foreign, n=2, kind="2d", force=True)
    assert not (foreign / "notes.txt").exists() and (foreign / "manifest.csv").exists()
    _write(foreign, n=3, kind="2d", seed=9)  # a previous synth output: replaced without --force
    gt = json.loads((foreign / "ground_truth.json").read_text())
    assert gt["n_patients"] == 3 and gt["seed"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "mine"]  # nothing left over


def test_a_failure_leaves_no_partial_output(tmp_path, monkeypatch):
    out = tmp_path / "out"

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth_output, "write_patient", boom)
    with pytest.raises(RuntimeError):
        _write(out, n=2, kind="2d")
    assert list(tmp_path.iterdir()) == []


def test_sample_cohort_matches_what_write_cohort_wrote(written):
    _, cohort, _ = written
    again = sample_cohort(N, SEED, "mixed")
    assert np.array_equal(again.labels, cohort.labels)
