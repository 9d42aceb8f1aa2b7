"""Real DICOM files (pydicom's bundled test files, pydicom-data) read like SimpleITK reads them."""

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from mmxai_core.io import read_geometry, read_image

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def data_store_file(name: str) -> Path:
    """A file shipped by the pydicom-data package (skips the test, saying why, if it is absent)."""
    try:
        import data_store
    except ImportError:
        pytest.skip("pydicom-data (package data_store) is not installed")
    path = Path(data_store.__file__).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"pydicom-data does not ship {name}")
    return path


def assert_same_as_sitk(path: Path, atol: float = 1e-6):
    """Voxels equal SimpleITK's (GDCM applies the modality rescale itself) and geometry within atol."""
    ours = read_image(path)
    ref = sitk.ReadImage(str(path))
    ref_array = sitk.GetArrayFromImage(ref)
    assert ours.shape == ref_array.shape
    np.testing.assert_array_equal(ours.array, ref_array)
    np.testing.assert_allclose(ours.spacing, ref.GetSpacing(), atol=atol)
    np.testing.assert_allclose(ours.origin, ref.GetOrigin(), atol=atol)
    np.testing.assert_allclose(ours.direction, np.reshape(ref.GetDirection(), (3, 3)), atol=atol)
    geometry = read_geometry(path)
    assert geometry.same_geometry(ours, atol=1e-12)
    return ours


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_single_slice_matches_simpleitk(name):
    path = TEST_FILES / name
    image = assert_same_as_sitk(path)
    ds = pydicom.dcmread(path)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    np.testing.assert_array_equal(image.array[0], ds.pixel_array * slope + intercept)
    assert image.meta["source_format"] == "dicom"
    assert image.meta["Modality"] == ds.Modality
    assert image.meta["geometry_defaulted"] is False
    # PixelSpacing is (row spacing, column spacing) = (sy, sx)
    assert image.spacing[:2] == (float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]))


def test_ct_rescale_gives_hounsfield_units():
    image = read_image(TEST_FILES / "CT_small.dcm")
    assert image.meta["rescale_applied"] is True
    assert image.array.min() < -800  # air in HU, the stored values are all positive
    assert np.issubdtype(image.array.dtype, np.signedinteger)


def test_multiframe_emri_small_matches_simpleitk():
    path = data_store_file("emri_small.dcm")
    image = assert_same_as_sitk(path)
    assert image.shape == (10, 64, 64)
    # The file's functional groups were stripped: its geometry is a default and says so.
    assert image.meta["geometry_defaulted"] is True
    assert "origin" in image.meta["geometry_defaulted_fields"]


def test_enhanced_ct_frames_are_ordered_along_the_normal_and_placed_where_the_header_says():
    path = data_store_file("eCT_Supplemental.dcm")
    image = read_image(path)
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.astype(np.int32) - 1024  # shared PixelValueTransformationSequence: slope 1, intercept -1024
    positions = [np.array(fg.PlanePositionSequence[0].ImagePositionPatient, float)
                 for fg in ds.PerFrameFunctionalGroupsSequence]
    assert image.spacing[2] > 0 and np.linalg.det(image.direction) > 0
    for stored_index, position in enumerate(positions):
        # find which k this frame landed on, via its physical position
        ks = [k for k in range(image.shape[0])
              if np.allclose((image.index_to_lps() @ [0, 0, k, 1])[:3], position, atol=1e-4)]
        assert len(ks) == 1
        np.testing.assert_array_equal(image.array[ks[0]], frames[stored_index])
    # SimpleITK keeps the stored order with a negative z spacing: same voxels in the same places.
    ref = sitk.ReadImage(str(path))
    for k in range(image.shape[0]):
        ijk = ref.TransformPhysicalPointToContinuousIndex(tuple((image.index_to_lps() @ [5, 7, k, 1])[:3]))
        np.testing.assert_allclose(ijk, (5, 7, round(ijk[2])), atol=1e-4)
        np.testing.assert_array_equal(image.array[k], sitk.GetArrayFromImage(ref)[round(ijk[2])])


def test_compressed_syntax_without_pydicom_plugin_is_decoded_by_gdcm():
    lossless = read_image(TEST_FILES / "MR_small_jpeg_ls_lossless.dcm")
    plain = read_image(TEST_FILES / "MR_small.dcm")
    np.testing.assert_array_equal(lossless.array, plain.array)
    assert lossless.same_geometry(plain, atol=1e-9)


def test_meta_keeps_no_identifiers_and_hashes_uids():
    path = TEST_FILES / "CT_small.dcm"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.PatientName and ds.PatientID and "PatientBirthDate" in ds  # the file does carry them
    for meta in (read_image(path).meta, read_geometry(path).meta):
        for key in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber",
                    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyDate"):
            assert key not in meta
        dumped = json.dumps(meta)
        for secret in (str(ds.PatientName), str(ds.PatientID),
                       ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID):
            assert secret not in dumped
        assert len(meta["series_uid_hash"]) == 16 and len(meta["study_uid_hash"]) == 16
        assert meta["PatientAge"] == ds.PatientAge and meta["PatientSex"] == ds.PatientSex
