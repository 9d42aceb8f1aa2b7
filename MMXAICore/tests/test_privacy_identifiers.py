"""Privacy opt-in: identifying DICOM fields (patient name, IDs, birth date, institution, raw UIDs) are left
out of ``Image.meta`` and of mmxai-inspect's output by default, and shown only when asked for
(``identifying=True`` / ``mmxai-inspect --identifiers``, on stdout, no file written). A folder of several
series is listed by UID hash with number, description and slice count, and the hash picks a series.
Research use, not for diagnosis.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from reliability_support import error_lines, run_cli, snapshot

from mmxai_core.errors import ImageReadError
from mmxai_core.io import Image, read_geometry, read_image
from mmxai_core.io.dicom_writer import dicom_dataset, write_dicom, write_dicom_series
from mmxai_core.io.meta import dicom_meta, uid_hash

#: identifying values that must never appear unless asked for (UIDs with their own sentinel components)
IDENTIFYING = {"PatientName": "Sentinelname^Zqx", "PatientID": "SENTINELID4711", "PatientBirthDate": "19010203",
               "InstitutionName": "Sentinel Hospital Qzx", "AccessionNumber": "SENTACC0815",
               "OtherPatientIDs": "SENTOTHER42", "StudyDescription": "SENTINEL STUDY DESC"}
UIDS = {"StudyInstanceUID": "1.2.826.0.1.3680043.10.99999.1", "SeriesInstanceUID": "1.2.826.0.1.3680043.10.99999.2",
        "FrameOfReferenceUID": "1.2.826.0.1.3680043.10.99999.4"}
SENTINELS = {**IDENTIFYING, **UIDS}


def _found(text: str) -> set[str]:
    """Keywords whose sentinel value (also with '^' as a space) occurs in ``text``."""
    return {k for k, v in SENTINELS.items() if v in text or v.replace("^", " ") in text}


def _identified_dataset() -> pydicom.Dataset:
    ds = dicom_dataset(np.arange(64, dtype=np.uint16).reshape(8, 8), modality="MG", spacing=(0.1, 0.1),
                       series_uid=UIDS["SeriesInstanceUID"], study_uid=UIDS["StudyInstanceUID"],
                       frame_of_reference_uid=UIDS["FrameOfReferenceUID"], tags={"PatientAge": "054Y"})
    for keyword, value in IDENTIFYING.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture
def identified(tmp_path) -> Path:
    path = write_dicom(_identified_dataset(), tmp_path / "data" / "identified.dcm")
    assert _found(path.read_bytes().decode("latin-1")) == set(SENTINELS)  # the sentinels are there to find
    return path


def test_dicom_meta_leaves_identifiers_out_unless_asked():
    ds = _identified_dataset()
    safe = dicom_meta(ds)
    assert not _found(json.dumps(safe)) and "identifiers" not in safe
    assert safe["series_uid_hash"] == uid_hash(UIDS["SeriesInstanceUID"]) and safe["PatientAge"] == "054Y"
    full = dicom_meta(ds, identifying=True)
    assert {k: v for k, v in full.items() if k != "identifiers"} == safe  # the safe part is unchanged
    shown = full["identifiers"]
    assert shown["PatientName"] == "Sentinelname^Zqx" and shown["PatientBirthDate"] == "19010203"
    assert shown["SeriesInstanceUID"] == UIDS["SeriesInstanceUID"] and _found(json.dumps(shown)) == set(SENTINELS)


def test_readers_add_identifiers_only_on_request(identified, tmp_path):
    folder = tmp_path / "series"
    write_dicom_series(Image(np.zeros((3, 4, 5), np.uint16)), folder, series_uid=UIDS["SeriesInstanceUID"],
                       study_uid=UIDS["StudyInstanceUID"], tags=IDENTIFYING)
    for path in (identified, folder):
        for read in (read_image, read_geometry):
            assert not _found(json.dumps(read(path).meta, default=str)), (path, read)
            meta = read(path, identifying=True).meta
            assert {"PatientName", "PatientID", "PatientBirthDate", "SeriesInstanceUID"} <= set(meta["identifiers"])
            assert meta["identifiers"]["PatientID"] == "SENTINELID4711"


def test_inspect_shows_identifiers_only_with_the_flag_and_writes_nothing(identified):
    data = identified.parent
    before = snapshot(data)
    default = [run_cli("mmxai-inspect", identified, *flags) for flags in ([], ["--json"], ["--header-only"])]
    assert all(p.returncode == 0 for p in default), [p.stderr for p in default]
    assert not _found("".join(p.stdout + p.stderr for p in default))
    assert "identifiers" not in json.loads(default[1].stdout)

    text = run_cli("mmxai-inspect", identified, "--identifiers")
    as_json = run_cli("mmxai-inspect", identified, "--identifiers", "--json", "--header-only")
    for proc in (text, as_json):
        assert proc.returncode == 0, proc.stderr
        assert _found(proc.stdout) == set(SENTINELS), proc.stdout   # all of them, on stdout only
        assert not _found(proc.stderr), proc.stderr
    info = json.loads(as_json.stdout)
    assert info["identifiers"]["PatientName"] == "Sentinelname^Zqx"
    assert not _found(json.dumps(info["meta"]))  # the safe fields stay safe; identifiers are kept apart
    assert "identifiers (shown on request" in text.stdout
    assert snapshot(data) == before  # no file written next to the input


def test_no_other_command_offers_identifiers():
    from mmxai_core.cli import evaluate, explain, train

    for module in (explain, train, evaluate):
        assert "--identifiers" not in module.build_parser()._option_string_actions, module.__name__


def _two_series(folder: Path) -> dict[str, str]:
    """Two series with sentinel UIDs; returns description -> SeriesInstanceUID."""
    uids = {"T1 axial": "1.2.826.0.1.3680043.10.99999.21", "T2 sagittal": "1.2.826.0.1.3680043.10.99999.22"}
    for n, (desc, uid) in enumerate(uids.items(), start=3):
        write_dicom_series(Image(np.full((n, 4, 5), n, np.uint16)), folder, series_uid=uid,
                           name=lambda k, n=n: f"s{n}_{k}.dcm", tags={"SeriesDescription": desc, "SeriesNumber": n})
    return uids


def test_unknown_series_uid_lists_hashes_with_number_description_and_slices(tmp_path):
    folder = tmp_path / "study"
    uids = _two_series(folder)
    proc = run_cli("mmxai-inspect", folder, "--series-uid", "1.2.826.0.1.3680043.10.99999.99")
    lines = error_lines("mmxai-inspect", proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = lines[0]
    assert line.startswith(f"mmxai-inspect: error: {folder}: series_uid with hash "
                           f"{uid_hash('1.2.826.0.1.3680043.10.99999.99')} is not in this folder"), line
    assert f"{uid_hash(uids['T1 axial'])} (number 3, 3 slices, MR, 'T1 axial')" in line
    assert f"{uid_hash(uids['T2 sagittal'])} (number 4, 4 slices, MR, 'T2 sagittal')" in line
    assert "99999" not in line  # no raw UID, neither the folder's nor the one given

    ambiguous = run_cli("mmxai-inspect", folder)
    assert ambiguous.returncode == 2 and "99999" not in ambiguous.stderr
    assert uid_hash(uids["T1 axial"]) in ambiguous.stderr and "--series-uid HASH" in ambiguous.stderr

    picked = run_cli("mmxai-inspect", folder, "--series-uid", uid_hash(uids["T2 sagittal"]), "--json")
    assert picked.returncode == 0, picked.stderr
    assert json.loads(picked.stdout)["shape"] == [4, 4, 5]


def test_hashed_series_uid_is_accepted_by_the_api(tmp_path):
    folder = tmp_path / "study"
    uids = _two_series(folder)
    by_hash = read_image(folder, uid_hash(uids["T1 axial"]).upper())  # letter case does not matter
    by_uid = read_image(folder, uids["T1 axial"])
    assert by_hash.shape == (3, 4, 5) and np.array_equal(by_hash.array, by_uid.array)
    assert read_geometry(folder, uid_hash(uids["T2 sagittal"])).shape == (4, 4, 5)
    with pytest.raises(ImageReadError, match=r"series_uid '0123456789abcdef' is not in this folder"):
        read_image(folder, "0123456789abcdef")

    one = write_dicom(_identified_dataset(), tmp_path / "one.dcm")
    assert read_image(one, uid_hash(UIDS["SeriesInstanceUID"])).shape == (1, 8, 8)
    with pytest.raises(ImageReadError, match="does not match this file's series") as info:
        read_image(one, uids["T1 axial"])
    assert "99999" not in str(info.value) and uid_hash(UIDS["SeriesInstanceUID"]) in str(info.value)
