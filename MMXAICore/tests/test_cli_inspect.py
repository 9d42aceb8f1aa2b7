"""mmxai-inspect: geometry and meta on good input; one stderr line and exit 2 on bad input, no traceback."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mmxai_core.cli.inspect import main
from mmxai_core.io import Image, write_image

sys.path.insert(0, str(Path(__file__).parent))  # the shared bad-input makers, whatever pytest's import mode
from test_io_bad_inputs import BAD_INPUTS, make_bad_input

CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
CONSOLE_SCRIPT = Path(sys.executable).parent / "mmxai-inspect"


def _command() -> list[str]:
    if CONSOLE_SCRIPT.exists():
        return [str(CONSOLE_SCRIPT)]
    return [sys.executable, "-m", "mmxai_core.cli.inspect"]


def _run_all(commands: dict[str, list[str]], at_once: int = 4) -> dict[str, tuple[int, str, str]]:
    """Run commands, a few side by side; returns name -> (exit code, stdout, stderr)."""
    results, names = {}, list(commands)
    for start in range(0, len(names), at_once):
        batch = {n: subprocess.Popen(commands[n], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for n in names[start:start + at_once]}
        for name, process in batch.items():
            out, err = process.communicate(timeout=60)
            results[name] = (process.returncode, out, err)
    return results


def test_bad_inputs_exit_2_with_one_line_naming_the_file(tmp_path):
    """Every bad input of test_io_bad_inputs, each in its own process."""
    inputs = {}
    for name in sorted(BAD_INPUTS):
        folder = tmp_path / name
        folder.mkdir()
        inputs[name] = make_bad_input(name, folder)
    results = _run_all({name: [*_command(), str(path)] for name, (path, _) in inputs.items()})
    for name, (path, words) in inputs.items():
        returncode, out, err = results[name]
        assert returncode == 2, (name, err)
        lines = err.splitlines()
        assert len(lines) == 1, (name, err)
        assert lines[0].startswith(f"mmxai-inspect: error: {path}: "), (name, err)
        assert words in lines[0], (name, err)
        assert "Traceback" not in err + out and out == "", (name, out)


def test_module_entry_point_reports_geometry_as_json():
    result = subprocess.run([sys.executable, "-m", "mmxai_core.cli.inspect", str(CT_SMALL), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["shape"] == [1, 128, 128]
    np.testing.assert_allclose(info["spacing"], [0.661468, 0.661468, 5.0])
    np.testing.assert_allclose(info["origin"], [-158.135803, -179.035797, -75.699997])
    np.testing.assert_allclose(np.array(info["ijk_to_ras"])[:3, 3], [158.135803, 179.035797, -75.699997])
    assert info["meta"]["Modality"] == "CT" and "PatientName" not in info["meta"]
    assert info["min"] < -800 and info["dtype"] == "int32"
    assert "not for diagnosis" in result.stderr


def test_text_output_and_header_only(tmp_path, capsys):
    a = np.deg2rad(30)
    direction = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    image = Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), (0.7, 0.9, 3.0), (1, 2, 3), direction)
    path = write_image(image, tmp_path / "v.nrrd")
    with pytest.raises(SystemExit) as exit_info:
        main([str(path)])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "shape (Z, Y, X): (3, 4, 5)" in out and "IJK-to-RAS:" in out and "source_format: nrrd" in out
    assert "range: 0 .. 59" in out
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--header-only", "--json"])
    assert exit_info.value.code == 0
    info = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(info["ijk_to_ras"], image.ijk_to_ras(), atol=1e-9)
    assert "min" not in info


def test_series_uid_option_picks_a_series(tmp_path, capsys):
    folder, _ = make_bad_input("two_series", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(folder), "--series-uid", "1.2.3.2", "--json"])
    assert exit_info.value.code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [2, 3, 3] and info["meta"]["source_format"] == "dicom-series"
