"""mmxai-explain refuses bad input through the real command: clinical JSON (malformed, not an object,
unknown field, wrong type, NaN, out of range, unknown category), images the model cannot take (colour,
4-D, a 2-D image stored along the wrong axis, missing), damaged checkpoints. Each: exit 2, exactly one
line on stderr naming the field or file, no traceback, nothing left behind."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_explain_cli_support import leftovers, run_explain, tiny_run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def assert_refused(proc, tmp_path, *fragments):
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(err.splitlines()) == 1, err
    assert err.startswith("mmxai-explain: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "out").exists(), "an output folder was left behind"
    assert leftovers(tmp_path) == []
    assert proc.stdout == ""


CLINICAL = [
    ("malformed", '{"age": 57,', ["not valid JSON", "line 1"]),
    ("not an object", '[57, "C"]', ["must be a JSON object", "a list"]),
    ("unknown field", '{"agee": 57}', ["unknown field", "'agee'", "did you mean 'age'"]),
    ("wrong type: list", '{"age": [57]}', ["field 'age'", "wrong type"]),
    ("wrong type: boolean for a number", '{"ca15_3": true}', ["field 'ca15_3'", "boolean"]),
    ("wrong type: text for a boolean", '{"family_history": "maybe"}', ["field 'family_history'"]),
    ("NaN", '{"age": NaN}', ["field 'age'", "NaN", "null for unknown"]),
    ("infinity", '{"heart_rate": -Infinity}', ["field 'heart_rate'"]),
    ("out of range", '{"age": 150}', ["field 'age'", "out of range", "[25, 90]"]),
    ("unknown category", '{"breast_density": "Z"}', ["field 'breast_density'", "one of A, B, C, D"]),
    ("duplicate field", '{"age": 50, "age": 60}', ["field 'age'", "more than once"]),
]


@pytest.mark.parametrize("label,text,fragments", CLINICAL, ids=[c[0] for c in CLINICAL])
def test_bad_clinical_json(tiny, tmp_path, label, text, fragments):
    proc = run_explain("--model", tiny.run, "--image", tiny.image("mg"), "--clinical", text,
                       "--out", tmp_path / "out")
    assert_refused(proc, tmp_path, *fragments)


def test_clinical_file_missing_or_not_json(tiny, tmp_path):
    proc = run_explain("--model", tiny.run, "--image", tiny.image("mg"), "--clinical", f"@{tmp_path / 'no.json'}",
                       "--out", tmp_path / "out")
    assert_refused(proc, tmp_path, "no.json", "not found")
    (tmp_path / "bad.json").write_text("age: 57\n")
    proc = run_explain("--model", tiny.run, "--image", tiny.image("mg"), "--clinical", f"@{tmp_path / 'bad.json'}",
                       "--out", tmp_path / "out")
    assert_refused(proc, tmp_path, "bad.json", "not valid JSON")


def _colour_png(path):
    from PIL import Image as PILImage

    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0] = np.arange(64, dtype=np.uint8)[None, :] * 4
    rgb[..., 2] = 200
    PILImage.fromarray(rgb, "RGB").save(path)


def _four_d_nrrd(path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image([12, 10, 8, 3], sitk.sitkFloat32), str(path))


def _row_stack_nrrd(path):
    from mmxai_core.io import Image, write_image

    write_image(Image(np.random.default_rng(0).random((6, 1, 40), dtype=np.float32)), path)


IMAGES = [
    ("colour photo", "colour.png", _colour_png, ["colour.png", "colour image"]),
    ("4-D volume", "series4d.nrrd", _four_d_nrrd, ["series4d.nrrd", "4-D"]),
    ("2-D image stored along the wrong axis", "rows.nrrd", _row_stack_nrrd, ["rows.nrrd", "wrong axis"]),
    ("missing file", "absent.nrrd", None, ["absent.nrrd"]),
]


@pytest.mark.parametrize("label,name,make,fragments", IMAGES, ids=[i[0] for i in IMAGES])
def test_images_the_model_cannot_take(tiny, tmp_path, label, name, make, fragments):
    src = tmp_path / "in"
    src.mkdir()
    if make is not None:
        make(src / name)
    proc = run_explain("--model", tiny.run, "--image", src / name, "--clinical", "{}", "--out", tmp_path / "out")
    assert_refused(proc, tmp_path, *fragments)


def _truncate_weights(ckpt):
    w = ckpt / "weights.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    return "weights.safetensors"


def _break_metadata(ckpt):
    (ckpt / "metadata.json").write_text('{"format": "mmxai-checkpoint", "classes": [')
    return "metadata.json"


def _flip_weight_bytes(ckpt):
    w = ckpt / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-8:] = bytes(8)
    data[-100:-92] = b"\xff" * 8
    w.write_bytes(bytes(data))
    return "weights.safetensors"


def _no_checkpoint(ckpt):
    shutil.rmtree(ckpt)
    return "ckpt"


DAMAGE = [("truncated weights", _truncate_weights), ("corrupt metadata", _break_metadata),
          ("modified weights", _flip_weight_bytes), ("missing checkpoint", _no_checkpoint)]


@pytest.mark.parametrize("label,damage", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damaged_checkpoint(tiny, tmp_path, label, damage):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny.run / "checkpoint", ckpt)
    culprit = damage(ckpt)
    proc = run_explain("--model", ckpt, "--image", tiny.image("mg"), "--clinical", '{"age": 50}',
                       "--out", tmp_path / "out")
    assert_refused(proc, tmp_path, culprit)
