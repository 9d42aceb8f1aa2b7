"""mmxai-train, mmxai-evaluate and batch mmxai-explain: a manifest path that leaves the manifest's folder is
refused with one stderr line naming row, column and path (exit 2, nothing else printed) unless
``--allow-outside-paths`` is given; a refused input gets exactly that one line (the research-use notice is
held back until the inputs are accepted), and every successful run still prints the notice once, before
its first progress line. Research use, not for diagnosis.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from reliability_support import run_cli, snapshot
from test_explain_cli_support import TINY, tiny_run

from mmxai_core import RESEARCH_USE_NOTICE

MOVED = "P0002_L_CC.dcm"  # the second data row (spreadsheet row 3) of the tiny cohort


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def outside(tiny, tmp_path_factory) -> Path:
    """A copy of the tiny cohort whose row 3 names its image as ``../elsewhere/<file>``."""
    root = tmp_path_factory.mktemp("outside")
    cohort = root / "cohort"
    shutil.copytree(tiny.cohort, cohort)
    (root / "elsewhere").mkdir()
    shutil.move(cohort / "images" / MOVED, root / "elsewhere" / MOVED)
    with (cohort / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[1]["image"] == f"images/{MOVED}"
    rows[1]["image"] = f"../elsewhere/{MOVED}"
    with (cohort / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return cohort / "manifest.csv"


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def _assert_one_line_refusal(prog: str, proc, *fragments: str) -> None:
    lines = _lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr  # no notice, no traceback
    assert proc.stdout == "", proc.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _assert_notice_once_before_progress(prog: str, proc) -> None:
    lines = _lines(proc.stderr)
    notice = f"{prog}: {RESEARCH_USE_NOTICE}"
    assert lines.count(notice) == 1, proc.stderr
    assert lines[0] == notice, proc.stderr  # held back until the inputs were accepted, then first


def _train_args(manifest: Path, out: Path) -> list[str]:
    return ["--manifest", manifest, "--schema", manifest.parent / "schema.yaml", "--out", out, "--quiet",
            *(f"--{k}={v}" for k, v in TINY.items())]


def test_outside_path_is_refused_by_every_command_without_the_flag(tiny, outside, tmp_path):
    where = ("row 3, column 'image'", f"../elsewhere/{MOVED}", "leaves the manifest's folder",
             "--allow-outside-paths")
    runs = {
        "mmxai-train": run_cli("mmxai-train", *_train_args(outside, tmp_path / "run")),
        "mmxai-evaluate": run_cli("mmxai-evaluate", "--model", tiny.run, "--manifest", outside, "--out",
                                  tmp_path / "eval"),
        "mmxai-explain": run_cli("mmxai-explain", "--model", tiny.run, "--manifest", outside, "--out",
                                 tmp_path / "explained"),
    }
    for prog, proc in runs.items():
        _assert_one_line_refusal(prog, proc, *where)
    assert snapshot(tmp_path) == {}  # nothing written


def test_train_with_the_flag_trains_and_prints_the_notice_once(outside, tmp_path):
    proc = run_cli("mmxai-train", *_train_args(outside, tmp_path / "run"), "--allow-outside-paths")
    assert proc.returncode == 0, proc.stderr
    _assert_notice_once_before_progress("mmxai-train", proc)
    assert (tmp_path / "run" / "checkpoint" / "weights.safetensors").is_file()


def test_evaluate_with_the_flag_evaluates_and_prints_the_notice_once(tiny, outside, tmp_path):
    proc = run_cli("mmxai-evaluate", "--model", tiny.run, "--manifest", outside, "--out", tmp_path / "eval",
                   "--n-boot", "10", "--device", "cpu", "--threads", "1", "--allow-outside-paths")
    assert proc.returncode == 0, proc.stderr
    _assert_notice_once_before_progress("mmxai-evaluate", proc)
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_explain_batch_with_the_flag_gets_past_the_manifest_check(tiny, outside, tmp_path):
    # the cohort has no split column: with the flag the manifest is accepted and the next check refuses
    proc = run_cli("mmxai-explain", "--model", tiny.run, "--manifest", outside, "--split", "test", "--out",
                   tmp_path / "explained", "--allow-outside-paths")
    _assert_one_line_refusal("mmxai-explain", proc, "--split test", "no case")
    assert "leaves the manifest's folder" not in proc.stderr
    single = run_cli("mmxai-explain", "--model", tiny.run, "--image", tiny.image("mg"), "--clinical", "{}",
                     "--out", tmp_path / "one", "--allow-outside-paths")
    _assert_one_line_refusal("mmxai-explain", single, "--allow-outside-paths only go with --manifest")


@pytest.mark.parametrize("prog, args, culprit", [
    ("mmxai-train", ["--manifest", "{tmp}/m.csv", "--schema", "{schema}", "--out", "{tmp}/run"], "m.csv"),
    ("mmxai-train", ["--manifest", "m.csv", "--schema", "s.yaml", "--out", "{tmp}/run", "--ablation", "--seed",
                     "1"], "--seeds"),
    ("mmxai-evaluate", ["--model", "{run}", "--manifest", "m.csv", "--out", "{tmp}/eval", "--n-boot", "-1"],
     "--n-boot"),
    ("mmxai-evaluate", ["--model", "{tmp}/nothing", "--manifest", "m.csv", "--out", "{tmp}/eval"], "nothing"),
])
def test_a_refused_input_gets_exactly_one_stderr_line(tiny, tmp_path, prog, args, culprit):
    proc = run_cli(prog, *(a.format(tmp=tmp_path, run=tiny.run, schema=tiny.cohort / "schema.yaml") for a in args))
    _assert_one_line_refusal(prog, proc, culprit)
