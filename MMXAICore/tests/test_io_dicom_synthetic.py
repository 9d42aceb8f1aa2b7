"""DICOM files and series built in tmp_path: sorting, geometry, series choice, MONOCHROME1, rescale, colour,
mammograms, enhanced multi-frame."""

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mmxai_core.errors import ImageReadError
from mmxai_core.io import Image, read_geometry, read_image
from mmxai_core.io.dicom_geometry import series_geometry
from mmxai_core.io.dicom_writer import dicom_dataset, write_dicom, write_dicom_series
from mmxai_core.io.meta import uid_hash


def rotation(angle_z_deg: float, angle_x_deg: float) -> np.ndarray:
    a, b = np.deg2rad(angle_z_deg), np.deg2rad(angle_x_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def oblique_stored(n: int = 6, seed: int = 0, dtype=np.int16) -> Image:
    """Stored values on an oblique (z 25 deg, x 15 deg), anisotropic (0.7 x 0.9 x 3.0 mm) grid."""
    rng = np.random.default_rng(seed)
    return Image(rng.integers(0, 2000, size=(n, 8, 9)).astype(dtype), spacing=(0.7, 0.9, 3.0),
                 origin=(-20.5, 14.25, 33.0), direction=rotation(25, 15))


def shuffled_names(n: int, seed: int = 1):
    order = np.random.default_rng(seed).permutation(n)
    return lambda k: f"IM{order[k]:03d}"  # no .dcm ending, order unrelated to position


def test_series_is_sorted_by_position_with_oblique_geometry(tmp_path):
    stored = oblique_stored()
    write_dicom_series(stored, tmp_path / "s", modality="MR", name=shuffled_names(stored.shape[0]),
                       tags={"PatientAge": "054Y", "PatientName": "Doe^Jane", "PatientID": "ID123",
                             "PatientBirthDate": "19700101", "ImageLaterality": "L"})
    image = read_image(tmp_path / "s")
    np.testing.assert_array_equal(image.array, stored.array)
    np.testing.assert_allclose(image.spacing, stored.spacing, atol=1e-6)
    np.testing.assert_allclose(image.origin, stored.origin, atol=1e-6)
    np.testing.assert_allclose(image.direction, stored.direction, atol=1e-6)
    assert image.meta["source_format"] == "dicom-series" and image.meta["n_files"] == 6
    assert image.meta["PatientAge"] == "054Y" and image.meta["ImageLaterality"] == "L"
    assert not {"PatientName", "PatientID", "PatientBirthDate"} & set(image.meta)
    assert "Doe" not in str(image.meta) and "19700101" not in str(image.meta)
    # the same as SimpleITK's own GDCM-sorted series reading
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    ref = reader.Execute()
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(ref))
    np.testing.assert_allclose(image.spacing, ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.origin, ref.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(image.direction.ravel(), ref.GetDirection(), atol=1e-6)
    # headers only: same grid
    assert read_geometry(tmp_path / "s").same_geometry(image, atol=1e-12)


def test_two_series_in_one_folder_need_a_series_uid(tmp_path):
    a, b = oblique_stored(4, seed=1), oblique_stored(3, seed=2)
    write_dicom_series(a, tmp_path, series_uid="1.2.3.4.1", name=lambda k: f"a{k}.dcm",
                       tags={"SeriesDescription": "T1 axial"})
    write_dicom_series(b, tmp_path, modality="CT", series_uid="1.2.3.4.2", name=lambda k: f"b{k}.dcm")
    for read in (read_image, read_geometry):
        with pytest.raises(ImageReadError) as info:
            read(tmp_path)
        message = str(info.value)
        assert str(tmp_path) in message and "\n" not in message
        assert f"{uid_hash('1.2.3.4.1')} (4 slices, MR, 'T1 axial')" in message
        assert f"{uid_hash('1.2.3.4.2')} (3 slices, CT)" in message and "1.2.3.4" not in message
    np.testing.assert_array_equal(read_image(tmp_path, "1.2.3.4.1").array, a.array)
    np.testing.assert_array_equal(read_image(tmp_path, series_uid="1.2.3.4.2").array, b.array)
    assert read_geometry(tmp_path, "1.2.3.4.2").shape == (3, 8, 9)
    with pytest.raises(ImageReadError, match=rf"hash {uid_hash('9.9.9')} is not in this folder.*"
                                             rf"{uid_hash('1.2.3.4.1')}"):
        read_image(tmp_path, "9.9.9")


def test_series_with_per_slice_rescale_keeps_every_value(tmp_path):
    stored = oblique_stored(3)
    paths = write_dicom_series(stored, tmp_path, rescale=(1.0, 0.0))
    slopes = [(1.0, 0.0), (0.5, -10.0), (2.0, 5.0)]
    for path, (slope, intercept) in zip(paths, slopes):
        ds = pydicom.dcmread(path)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.save_as(path)
    image = read_image(tmp_path)
    expected = np.stack([stored.array[k] * s + i for k, (s, i) in enumerate(slopes)])
    np.testing.assert_allclose(image.array, expected)
    assert image.meta["rescale_applied"] is True


def test_series_with_duplicate_positions_is_refused(tmp_path):
    stored = oblique_stored(3)
    write_dicom_series(stored, tmp_path, name=lambda k: f"a{k}.dcm", series_uid="1.2.3")
    write_dicom_series(stored, tmp_path, name=lambda k: f"b{k}.dcm", series_uid="1.2.3")
    with pytest.raises(ImageReadError, match="6 slices but only 3 distinct positions"):
        read_image(tmp_path)


def test_monochrome1_series_and_file_are_inverted_the_same_way(tmp_path):
    stored = Image(np.array([[[0, 1, 100, 4095], [7, 8, 9, 10]], [[5, 6, 7, 8], [4095, 0, 1, 2]]], np.uint16),
                   (0.1, 0.1, 1.0))
    write_dicom_series(stored, tmp_path / "series", modality="DX", rescale=(2.0, -100.0),
                       tags={"PhotometricInterpretation": "MONOCHROME1", "BitsStored": 12, "HighBit": 11})
    expected = (4095 - stored.array.astype(np.int32)) * 2 - 100  # high = bright, then rescale
    series = read_image(tmp_path / "series")
    single = read_image(sorted((tmp_path / "series").iterdir())[0])
    np.testing.assert_array_equal(series.array, expected)
    np.testing.assert_array_equal(single.array[0], expected[0])
    assert series.meta["monochrome1_inverted"] and single.meta["monochrome1_inverted"]
    assert single.meta["PhotometricInterpretation"] == "MONOCHROME1"


def test_monochrome1_and_fractional_rescale_on_one_file(tmp_path):
    stored = np.array([[0, 10, 1000], [2000, 3000, 4095]], np.uint16)
    ds = dicom_dataset(stored, modality="CR", photometric="MONOCHROME1", bits_stored=12,
                       rescale=(0.5, -1.0))
    path = write_dicom(ds, tmp_path / "m1.dcm")
    image = read_image(path)
    expected = (4095 - stored.astype(np.float64)) * 0.5 - 1.0
    assert image.array.dtype == np.float32
    np.testing.assert_allclose(image.array[0], expected)
    assert image.array[0, 0, 0] > image.array[0, 1, 2]  # stored 0 was white: now the brightest
    np.testing.assert_allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[0], expected)


def test_colour_dicom_is_refused_unless_luminance_is_asked_for(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    path = write_dicom(dicom_dataset(rgb, modality="US"), tmp_path / "rgb.dcm")
    with pytest.raises(ImageReadError, match=r"rgb\.dcm: is a colour image \(PhotometricInterpretation RGB"):
        read_image(path)
    image = read_image(path, color_to_luminance=True)
    assert image.shape == (1, 4, 5) and image.meta["converted_to_luminance"] is True
    assert np.all(image.array == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50))


def test_mammogram_reads_as_one_slice_with_imager_spacing_and_meta(tmp_path):
    stored = np.random.default_rng(3).integers(0, 4096, size=(30, 20)).astype(np.uint16)
    ds = dicom_dataset(stored, modality="MG", photometric="MONOCHROME1", bits_stored=12,
                       spacing=(0.065, 0.07), imager_spacing=True,
                       tags={"ImageLaterality": "R", "ViewPosition": "MLO", "PatientAge": "061Y",
                             "PatientSex": "F", "PresentationIntentType": "FOR PRESENTATION",
                             "PatientName": "Doe^Jane", "InstitutionName": "General Hospital"})
    path = write_dicom(ds, tmp_path / "mammo")
    image = read_image(path)
    assert image.shape == (1, 30, 20) and image.is_2d
    assert image.spacing == (0.065, 0.07, 1.0)
    np.testing.assert_array_equal(image.array[0], 4095 - stored)
    meta = image.meta
    assert meta["Modality"] == "MG" and meta["ImageLaterality"] == "R" and meta["ViewPosition"] == "MLO"
    assert meta["PatientAge"] == "061Y" and meta["spacing_source"] == "ImagerPixelSpacing"
    assert meta["geometry_defaulted"] is True
    assert set(meta["geometry_defaulted_fields"]) >= {"origin", "direction"}
    assert "PatientName" not in meta and "General Hospital" not in str(meta)
    geometry = read_geometry(path)
    assert geometry.same_geometry(image, atol=1e-12) and geometry.shape == (1, 30, 20)


def enhanced_multiframe(stored: Image, frame_order) -> Dataset:
    """An enhanced MR object whose frames are stored in ``frame_order`` (per-frame positions)."""
    ds = dicom_dataset(stored.array[0], modality="MR")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR
    ds.NumberOfFrames = len(frame_order)
    shared = Dataset()
    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing = [stored.spacing[1], stored.spacing[0]]
    measures.SliceThickness = stored.spacing[2]
    orientation.ImageOrientationPatient = [*stored.direction[:, 0], *stored.direction[:, 1]]
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, -100, "US"
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in frame_order:
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = [f"{v:.10g}" for v in stored.index_to_lps() @ [0, 0, k, 1]][:3]
        item.PlanePositionSequence = Sequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.ascontiguousarray(stored.array[list(frame_order)]).tobytes()
    return ds


def test_enhanced_multiframe_frames_sorted_by_per_frame_position(tmp_path):
    stored = oblique_stored(5, dtype=np.uint16)
    path = write_dicom(enhanced_multiframe(stored, [3, 0, 4, 1, 2]), tmp_path / "enh.dcm")
    image = read_image(path)
    np.testing.assert_array_equal(image.array, stored.array.astype(np.int32) - 100)
    np.testing.assert_allclose(image.spacing, stored.spacing, atol=1e-6)
    np.testing.assert_allclose(image.origin, stored.origin, atol=1e-6)
    np.testing.assert_allclose(image.direction, stored.direction, atol=1e-6)
    assert image.meta["frames_reordered"] is True and image.meta["SliceThickness"] == 3.0
    assert read_geometry(path).same_geometry(image, atol=1e-12)


def test_single_file_series_uid_must_match(tmp_path):
    path = write_dicom(dicom_dataset(np.zeros((2, 2), np.uint16), series_uid="1.2.5"), tmp_path / "x.dcm")
    assert read_image(path, series_uid="1.2.5").shape == (1, 2, 2)
    with pytest.raises(ImageReadError, match="does not match this file's series"):
        read_image(path, series_uid="1.2.6")


def test_absurd_header_dimensions_are_refused_before_allocating(tmp_path):
    ds = dicom_dataset(np.zeros((2, 2), np.uint16))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 100000
    path = write_dicom(ds, tmp_path / "huge.dcm")
    with pytest.raises(ImageReadError, match=r"huge\.dcm: header declares .* more than the limit"):
        read_image(path)
    with pytest.raises(ImageReadError, match="more than the limit"):
        read_image(write_dicom(dicom_dataset(np.zeros((4, 4), np.uint16)), tmp_path / "small.dcm"),
                   max_voxels=10)


@settings(max_examples=40, deadline=None)
@given(angles=st.tuples(*[st.floats(-180, 180)] * 3), spacing=st.tuples(*[st.floats(0.1, 5.0)] * 3),
       n=st.integers(2, 7), seed=st.integers(0, 10_000))
def test_series_geometry_recovers_any_oblique_grid_from_shuffled_headers(angles, spacing, n, seed):
    """Pure header test: slices of any rotation and spacing, in any order, give back the grid."""
    a, b, c = np.deg2rad(angles)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    grid = Image(np.zeros((n, 2, 3), np.uint16), spacing, (10.0, -20.0, 30.0), rz @ ry @ rx)
    permutation = np.random.default_rng(seed).permutation(n)
    headers = [dicom_dataset(grid.array[k], spacing=spacing[:2], direction=grid.direction,
                             origin=(grid.index_to_lps() @ [0, 0, k, 1])[:3]) for k in permutation]
    geometry = series_geometry(headers)
    assert [int(permutation[i]) for i in geometry.order] == list(range(n))
    np.testing.assert_allclose(geometry.spacing, spacing, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(geometry.origin, grid.origin, atol=1e-6)
    np.testing.assert_allclose(geometry.direction, grid.direction, atol=1e-8)
    assert geometry.warnings == [] and geometry.defaulted == []
