"""``mmxai-synth`` command line: help, a small run, refusal of a foreign folder."""

import json
import subprocess
import sys

import pytest

from mmxai_core.cli import synth
from mmxai_core.data.synthetic import output as synth_output


def test_help_runs_and_names_the_options():
    proc = subprocess.run([sys.executable, "-m", "mmxai_core.cli.synth", "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0
    for word in ("--out", "--n", "--seed", "--kind", "--force", "not for diagnosis"):
        assert word in proc.stdout


def test_small_run_writes_a_cohort_and_reports_progress(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(synth_output, "REFERENCE_N", 200)
    out = tmp_path / "c"
    assert synth.main(["--out", str(out), "--n", "5", "--seed", "4", "--kind", "3d"]) == 0
    err = capsys.readouterr().err
    assert "Research use only" in err and "5/5 patients" in err and "wrote 5 patients" in err
    gt = json.loads((out / "ground_truth.json").read_text())
    assert gt["seed"] == 4 and gt["kind"] == "3d" and gt["n_patients"] == 5
    assert synth.main(["--out", str(out), "--n", "3", "--quiet"]) == 0  # own previous output: replaced
    assert json.loads((out / "ground_truth.json").read_text())["n_patients"] == 3


def test_refuses_a_non_empty_foreign_folder_with_one_line(tmp_path, capsys):
    (tmp_path / "data.csv").write_text("a,b\n")
    code = synth.main(["--out", str(tmp_path), "--n", "2"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmxai-synth: error: ") and "--force" in lines[0]
    assert "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["data.csv"]


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert synth.main(["--out", str(tmp_path / "x"), "--n", "0"]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        synth.main(["--out", str(tmp_path / "x"), "--kind", "4d"])
    assert exc.value.code == 2
