"""Bad input raises ImageReadError naming the file and the problem, never a raw library error.

``BAD_INPUTS`` and ``make_bad_input`` are reused by test_cli_inspect.py.
"""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mmxai_core.errors import ImageReadError
from mmxai_core.io import Image, read_geometry, read_image, write_image
from mmxai_core.io.dicom_writer import dicom_dataset, write_dicom, write_dicom_series
from mmxai_core.io.meta import uid_hash

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _copy(name: str):
    def make(tmp: Path) -> Path:
        return Path(shutil.copy(TEST_FILES / name, tmp / name))
    return make


def _zero_bytes(tmp: Path) -> Path:
    path = tmp / "empty.dcm"
    path.write_bytes(b"")
    return path


def _text(name: str):
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_text("patient,age\nA,54\n" * 20)
        return path
    return make


def _empty_dir(tmp: Path) -> Path:
    path = tmp / "empty_series"
    path.mkdir()
    return path


def _dir_without_dicom(tmp: Path) -> Path:
    path = tmp / "notes"
    path.mkdir()
    (path / "readme.txt").write_text("no images here")
    shutil.copy(TEST_FILES / "rtplan.dcm", path / "plan.dcm")
    return path


def _two_series(tmp: Path) -> Path:
    path = tmp / "two"
    stored = Image(np.zeros((2, 3, 3), np.uint16))
    write_dicom_series(stored, path, series_uid="1.2.3.1", name=lambda k: f"a{k}")
    write_dicom_series(stored, path, series_uid="1.2.3.2", name=lambda k: f"b{k}")
    return path


def _truncated_series_slice(tmp: Path) -> Path:
    folder = tmp / "series"
    paths = write_dicom_series(Image(np.ones((3, 4, 5), np.uint16)), folder)
    paths[1].write_bytes(paths[1].read_bytes()[:-10])
    return folder


def _truncated_nifti(tmp: Path) -> Path:
    path = write_image(Image(np.ones((4, 5, 6), np.float32)), tmp / "cut.nii")
    path.write_bytes(path.read_bytes()[:400])
    return path


def _nan_nifti(tmp: Path) -> Path:
    array = np.ones((2, 3, 4), np.float32)
    array[1, 1, 1] = np.nan
    array[0, 0, 0] = np.inf
    return write_image(Image(array), tmp / "nan.nii.gz")


def _absurd_dicom(tmp: Path) -> Path:
    ds = dicom_dataset(np.zeros((2, 2), np.uint16))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 50000
    return write_dicom(ds, tmp / "absurd.dcm")


def _absurd_nrrd(tmp: Path) -> Path:
    path = tmp / "absurd.nrrd"
    path.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 100000 100000 100000\nencoding: raw\n"
                     b"endian: little\n\n" + b"\x00" * 64)
    return path


def _colour(tmp: Path) -> Path:
    return _copy("examples_rgb_color.dcm")(tmp)


def _missing(tmp: Path) -> Path:
    return tmp / "does_not_exist.nrrd"


def _garbage_binary(tmp: Path) -> Path:
    path = tmp / "blob.bin"
    path.write_bytes(bytes(range(256)) * 8)
    return path


def _truncated_png(tmp: Path) -> Path:
    from PIL import Image as PILImage

    path = tmp / "cut.png"
    PILImage.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    return path


#: name -> (maker, words the problem must contain)
BAD_INPUTS = {
    "truncated_dicom": (_copy("MR_truncated.dcm"), "truncated"),
    "rtplan_no_pixels": (_copy("rtplan.dcm"), "no pixel data"),
    "sr_no_pixels": (_copy("reportsi.dcm"), "no pixel data"),
    "zero_bytes": (_zero_bytes, "empty file"),
    "text_file": (_text("clinical.csv"), "text file"),
    "text_named_dcm": (_text("fake.dcm"), "not a DICOM file"),
    "text_named_nii": (_text("fake.nii"), "cannot read the NIfTI header: not a valid NIfTI file"),
    "garbage_binary": (_garbage_binary, "not a recognised image file"),
    "empty_dir": (_empty_dir, "empty folder"),
    "dir_without_images": (_dir_without_dicom, "no DICOM image files"),
    "two_series": (_two_series, "holds 2 DICOM series"),
    "missing": (_missing, "no such file or directory"),
    "truncated_series_slice": (_truncated_series_slice, "slice slice_0001.dcm: pixel data is truncated"),
    "truncated_nifti": (_truncated_nifti, "cannot read the voxels"),
    "truncated_png": (_truncated_png, "cannot"),
    "nan_voxels": (_nan_nifti, "2 non-finite voxels"),
    "absurd_dicom": (_absurd_dicom, "more than the limit"),
    "absurd_nrrd": (_absurd_nrrd, "more than the limit"),
    "colour_dicom": (_colour, "colour image"),
    # its JPEG 2000 stream is corrupt: GDCM/OpenJPEG also print to the C-level stderr
    "corrupt_jpeg2000": (_copy("JPEG2000-embedded-sequence-delimiter.dcm"), "cannot decode"),
}


def make_bad_input(name: str, tmp: Path) -> tuple[Path, str]:
    maker, words = BAD_INPUTS[name]
    return maker(tmp), words


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_image_read_error_naming_the_file(tmp_path, name):
    path, words = make_bad_input(name, tmp_path)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert words in message
    assert "\n" not in message
    assert info.value.path == str(path)


@pytest.mark.parametrize("name", ["rtplan_no_pixels", "zero_bytes", "text_file", "empty_dir", "two_series",
                                  "missing", "absurd_nrrd", "text_named_nii"])
def test_read_geometry_refuses_the_same_inputs(tmp_path, name):
    path, words = make_bad_input(name, tmp_path)
    with pytest.raises(ImageReadError, match=words):
        read_geometry(path)


def test_unknown_series_uid_and_series_uid_on_non_dicom(tmp_path):
    folder = _two_series(tmp_path)
    with pytest.raises(ImageReadError, match=rf"series_uid with hash {uid_hash('4.5.6')} is not in this folder.*"
                                             rf"{uid_hash('1.2.3.1')} \(2 slices, MR\)") as info:
        read_image(folder, "4.5.6")
    assert "1.2.3.1" not in str(info.value) and "4.5.6" not in str(info.value)  # UIDs only hashed
    nrrd = write_image(Image(np.zeros((1, 2, 2))), tmp_path / "x.nrrd")
    with pytest.raises(ImageReadError, match="series_uid was given but this is a nrrd file"):
        read_image(nrrd, "1.2.3")


def test_nonfinite_voxels_can_be_kept_on_request(tmp_path):
    image = read_image(_nan_nifti(tmp_path), allow_nonfinite=True)
    assert image.meta["n_nonfinite"] == 2
    assert np.isnan(image.array[1, 1, 1]) and np.isposinf(image.array[0, 0, 0])  # where they were written
    assert np.isfinite(image.array).sum() == image.array.size - 2


def test_subfolders_are_mentioned_when_a_study_folder_is_given(tmp_path):
    write_dicom_series(Image(np.zeros((2, 3, 3), np.uint16)), tmp_path / "study" / "series1")
    with pytest.raises(ImageReadError, match="1 subfolder"):
        read_image(tmp_path / "study")
