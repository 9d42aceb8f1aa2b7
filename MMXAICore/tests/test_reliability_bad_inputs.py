"""The bad-input suite: every input below is generated here, fed through a real CLI (a subprocess) AND the
Python API, and must be refused cleanly:

* CLI: exit status 2, exactly one line on stderr (besides the research-use notice) that starts with
  ``prog: error:`` and names the culprit (file, field, row), no traceback, nothing on stdout;
* API: the package's own error type (an :class:`~mmxai_core.errors.MMXAIError`) whose first line names the
  culprit;
* nothing written and nothing lost: the case's folder (inputs, a file that was there before; the output
  path ``out`` lies in it) is byte-for-byte the same afterwards.

The suite counts what it tried and what was handled; ``test_summary`` prints the table, writes it to
``reliability_bad_inputs.json`` in pytest's base temporary folder and fails unless all were handled.
Research use, not for diagnosis.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from reliability_support import (Tally, api_problems, refusal_problems, run_cli, snapshot,
                                 write_evil_pickle)
from test_explain_cli_support import tiny_run
from test_io_bad_inputs import BAD_INPUTS as IMAGE_MAKERS

from mmxai_core.errors import CheckpointError, ImageReadError, ManifestError, MMXAIError

TALLY = Tally()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@dataclass
class Case:
    """One bad input: ``make(case_dir, tiny)`` writes it and returns the culprit's path or text;
    ``cli(case_dir, culprit, tiny)`` gives ``(prog, args)``; ``api(culprit, tiny)`` calls the Python API
    (it must raise ``error``); ``names`` are the words the refusal must contain."""

    name: str
    make: Callable
    cli: Callable
    api: Callable
    error: type
    names: Callable  # culprit -> tuple of words


# ------------------------------------------------------------------------------------------- images
def _image_cli(case_dir, culprit, tiny):
    return "mmxai-explain", ["--model", tiny.run, "--image", culprit, "--clinical", "{}",
                             "--out", case_dir / "out"]


def _image_api(culprit, tiny):
    from mmxai_core.io import read_image

    read_image(culprit)


def _image_case(key: str) -> Case:
    maker, _words = IMAGE_MAKERS[key]
    return Case(f"image:{key}", lambda d, tiny: maker(d), _image_cli, _image_api, ImageReadError,
                lambda culprit: (Path(culprit).name,))


IMAGE_KEYS = ["truncated_dicom", "corrupt_jpeg2000", "garbage_binary", "text_named_dcm", "rtplan_no_pixels",
              "sr_no_pixels", "colour_dicom", "two_series", "empty_dir", "zero_bytes", "absurd_dicom",
              "absurd_nrrd", "nan_voxels", "truncated_series_slice", "truncated_nifti", "metaimage_bad_header",
              "nifti_bad_header_truncated"]


def _bad_metaimage(d: Path) -> Path:
    path = d / "header.mha"
    path.write_text("ObjectType = Image\nNDims = 3\nElementType = MET_SHORT\nElementDataFile = LOCAL\nxx")
    return path


def _damaged_nifti_header(d: Path) -> Path:
    from mmxai_core.io import Image, write_image

    path = write_image(Image(np.ones((2, 16, 16), np.float32)), d / "hdr.nii")
    data = bytearray(path.read_bytes())
    data[0] = 0x5D  # sizeof_hdr 349: nibabel "repairs" it, loudly
    path.write_bytes(bytes(data[:400]))
    return path


IMAGE_MAKERS = {**IMAGE_MAKERS, "metaimage_bad_header": (_bad_metaimage, ""),
                "nifti_bad_header_truncated": (_damaged_nifti_header, "")}


def _inspect_case(key: str) -> Case:
    """The same image through mmxai-inspect (which reads every voxel too)."""
    case = _image_case(key)
    case.name = f"inspect:{key}"
    case.cli = lambda d, culprit, tiny: ("mmxai-inspect", [culprit])
    return case


# ----------------------------------------------------------------------------------------- clinical
def _clinical_case(label: str, text: str, field: str) -> Case:
    def make(d, tiny):
        return text

    def cli(d, culprit, tiny):
        return "mmxai-explain", ["--model", tiny.run, "--image", tiny.image("mg"), "--clinical", culprit,
                                 "--out", d / "out"]

    def api(culprit, tiny):
        from mmxai_core.explain.clinical_input import parse_clinical_json, validate_clinical
        from mmxai_core.explain.pipeline import checkpoint_info

        validate_clinical(parse_clinical_json(culprit, "--clinical"), checkpoint_info(tiny.run).schema,
                          source="--clinical")

    return Case(f"clinical:{label}", make, cli, api, MMXAIError, lambda culprit: ("--clinical", field))


CLINICAL = [("malformed", '{"age": 57,', "not valid JSON"),
            ("wrong type", '{"age": "old"}', "'age'"),
            ("NaN", '{"ca15_3": NaN}', "'ca15_3'"),
            ("out of range", '{"age": 150}', "'age'"),
            ("unknown category", '{"breast_density": "Z"}', "'breast_density'"),
            ("unknown field", '{"agee": 57}', "'agee'")]


# ----------------------------------------------------------------------------------------- manifest
SCHEMA = "fields:\n- {name: age, type: numeric, range: [18, 100]}\n- {name: side, type: categorical, " \
         "categories: [left, right]}\n"


def _manifest_case(label: str, rows: list[str], culprit_words: tuple[str, ...], raw: bytes | None = None) -> Case:
    def make(d, tiny):
        import SimpleITK as sitk

        (d / "img").mkdir()
        for i in range(8):
            sitk.WriteImage(sitk.Image([8, 6, 1], sitk.sitkUInt8), str(d / "img" / f"c{i}.nrrd"))
        (d / "schema.yaml").write_text(SCHEMA)
        path = d / "manifest.csv"
        if raw is not None:
            path.write_bytes(raw)
        else:
            path.write_text("patient_id,image,label,age,side\n" + "\n".join(rows) + "\n")
        return path

    def cli(d, culprit, tiny):
        return "mmxai-train", ["--manifest", culprit, "--schema", d / "schema.yaml", "--out", d / "run",
                               "--train.threads=1"]

    def api(culprit, tiny):
        from mmxai_core.data.manifest import load_manifest
        from mmxai_core.data.schema import load_schema

        load_manifest(culprit, load_schema(Path(culprit).parent / "schema.yaml"))

    return Case(f"manifest:{label}", make, cli, api, ManifestError,
                lambda culprit: ("manifest.csv", *culprit_words))


GOOD_ROWS = ["p0,img/c0.nrrd,benign,50,left", "p1,img/c1.nrrd,benign,51,right",
             "p2,img/c2.nrrd,malignant,60,left", "p3,img/c3.nrrd,malignant,61,right",
             "p4,img/c4.nrrd,benign,40,left", "p5,img/c5.nrrd,malignant,70,right"]
MANIFESTS = [
    ("wrong path", GOOD_ROWS + ["p6,img/nothere.nrrd,benign,45,left"], ("row 8", "img/nothere.nrrd"), None),
    ("duplicate case", GOOD_ROWS + ["p0,img/c0.nrrd,benign,50,left"], ("row 8", "duplicate"), None),
    ("mixed label types", GOOD_ROWS + ["p6,img/c6.nrrd,1,45,left"], ("row 8", "mixed label types"), None),
    ("path leaving the folder", GOOD_ROWS + ["p6,../../etc/hostname,benign,45,left"],
     ("row 8", "leaves the manifest's folder"), None),
    ("not UTF-8", [], ("not UTF-8",), "patient_id,image,label\np\xe9,img/c0.nrrd,benign\n".encode("latin-1")),
    ("out of range value", GOOD_ROWS + ["p6,img/c6.nrrd,benign,450,left"], ("row 8", "'age'", "out of range"),
     None),
]


# --------------------------------------------------------------------------------------- checkpoints
def _copy_checkpoint(d: Path, tiny) -> Path:
    return Path(shutil.copytree(tiny.run / "checkpoint", d / "ckpt"))


def _truncated(d, tiny):
    w = _copy_checkpoint(d, tiny) / "weights.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])
    return w


def _corrupted(d, tiny):
    w = _copy_checkpoint(d, tiny) / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = b"\x7f" * 16
    w.write_bytes(bytes(data))
    return w


def _other_version(d, tiny):
    m = _copy_checkpoint(d, tiny) / "metadata.json"
    meta = json.loads(m.read_text())
    meta["format_version"] = 99
    m.write_text(json.dumps(meta))
    return m


def _metadata_garbage(d, tiny):
    m = _copy_checkpoint(d, tiny) / "metadata.json"
    m.write_text('{"format": "mmxai-checkpoint", "model_config": {')
    return m


def _pickle_file(d, tiny):
    return write_evil_pickle(d / "model.pt", d / "UNPICKLED")


def _pickle_as_weights(d, tiny):
    ckpt = _copy_checkpoint(d, tiny)
    return write_evil_pickle(ckpt / "weights.safetensors", d / "UNPICKLED")


def _torch_zip_as_weights(d, tiny):
    ckpt = _copy_checkpoint(d, tiny)
    return write_evil_pickle(ckpt / "weights.safetensors", d / "UNPICKLED", zip_format=True)


def _ckpt_cli(d, culprit, tiny):
    model = culprit if culprit.suffix == ".pt" else culprit.parent
    return "mmxai-explain", ["--model", model, "--image", tiny.image("mg"), "--clinical", "{}",
                             "--out", d / "out"]


def _ckpt_api(culprit, tiny):
    from mmxai_core.model.checkpoint import load_checkpoint

    load_checkpoint(culprit if culprit.suffix == ".pt" else culprit.parent)


CHECKPOINTS = [("truncated", _truncated, ()), ("corrupted bytes", _corrupted, ()),
               ("another format version", _other_version, ("format_version",)),
               ("metadata not JSON", _metadata_garbage, ()),
               ("pickle .pt file", _pickle_file, ()),
               ("pickle named weights.safetensors", _pickle_as_weights, ()),
               ("torch.save zip named weights.safetensors", _torch_zip_as_weights, ())]


def _ckpt_case(label, make, words) -> Case:
    return Case(f"checkpoint:{label}", make, _ckpt_cli, _ckpt_api, CheckpointError,
                lambda culprit: (Path(culprit).name, *words))


# ---------------------------------------------------------------------------------------------- table
CASES: list[Case] = (
    [_image_case(k) for k in IMAGE_KEYS]
    + [_inspect_case(k) for k in ("corrupt_jpeg2000", "two_series", "absurd_dicom", "nan_voxels")]
    + [_clinical_case(*c) for c in CLINICAL]
    + [_manifest_case(*m) for m in MANIFESTS]
    + [_ckpt_case(*c) for c in CHECKPOINTS]
)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_cleanly(tiny, tmp_path, case):
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    (case_dir / "earlier.txt").write_text("a file that was there before")  # must survive
    culprit = case.make(case_dir, tiny)
    before = snapshot(case_dir)
    problems: list[str] = []

    prog, args = case.cli(case_dir, culprit, tiny)
    proc = run_cli(prog, *args)
    words = case.names(culprit)
    problems += [f"CLI {prog}: {p}" for p in refusal_problems(prog, proc, words)]
    after_cli = snapshot(case_dir)
    if after_cli != before:
        changed = sorted(set(after_cli.items()) ^ set(before.items()))
        problems.append(f"CLI {prog} changed the folder: {changed[:6]}")

    try:
        case.api(culprit, tiny)
        raised = None
    except Exception as exc:  # noqa: BLE001 - judged by api_problems
        raised = exc
    problems += [f"API: {p}" for p in api_problems(raised, case.error, words)]
    if snapshot(case_dir) != before:
        problems.append("the API call changed the folder")
    if (case_dir / "UNPICKLED").exists():
        problems.append("a pickle was loaded")
    TALLY.record(case.name, problems)
    assert not problems, "\n".join(problems)


def test_the_pickle_trace_works(tmp_path):
    """Control: the booby-trapped pickle really leaves its trace when unpickled, so the checks above mean
    something."""
    import pickle

    import torch

    write_evil_pickle(tmp_path / "a.pkl", tmp_path / "trace-a")
    pickle.loads((tmp_path / "a.pkl").read_bytes())  # noqa: S301 - the control itself
    write_evil_pickle(tmp_path / "b.pt", tmp_path / "trace-b", zip_format=True)
    torch.load(tmp_path / "b.pt", weights_only=False)  # noqa: S614 - the control itself
    assert (tmp_path / "trace-a").exists() and (tmp_path / "trace-b").exists()
    with pytest.raises(Exception):  # and weights_only=True refuses it
        torch.load(tmp_path / "b.pt", weights_only=True)


def test_summary(tmp_path_factory):
    """How many were tried and handled (needs the whole table to have run)."""
    if len(TALLY.tried) < len(CASES):
        pytest.skip(f"only {len(TALLY.tried)} of {len(CASES)} bad inputs ran (a selection); the summary "
                    "needs them all")
    lines = TALLY.lines()
    out = tmp_path_factory.getbasetemp() / "reliability_bad_inputs.json"
    out.write_text(json.dumps({"tried": len(TALLY.tried), "handled": len(TALLY.handled),
                               "data_lost": 0, "cases": TALLY.tried}, indent=1))
    print("\n" + "\n".join(lines))
    assert len(TALLY.tried) >= 25
    assert len(TALLY.handled) == len(TALLY.tried), "\n".join(lines)
