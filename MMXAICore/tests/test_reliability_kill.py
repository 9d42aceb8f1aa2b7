"""SIGKILL at random points: mmxai-train (10 kills, each followed by ``--resume``), a manifest batch of
mmxai-explain, and the worker under :func:`mmxai_core.worker.client.run_worker`.

Training: one tiny run on a tiny synthetic cohort is killed 10 times at random points (after a randomly
chosen line of its progress output, plus a random delay of up to 0.3 s, so the kills land in set-up, in
epochs, while the state, the cache or the checkpoint is being written, in the final evaluation), each
time restarted with ``--resume``. After every kill the state and the checkpoint present load; at the end
the run is complete, its checkpoint loads and is bit-identical to an uninterrupted run (made by the
console entry point, ``python -m mmxai_core.cli.train``), and no temporary file is left. The killed runs
are processes forked from one that imported the package once (:class:`reliability_support.ForkServer`):
each is a fresh process running the CLI's ``main``, minus the seconds of importing torch again. The seed
of the random points is printed (``MMXAI_KILL_SEED`` replays one).
Research use, not for diagnosis.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from reliability_support import ForkServer, one_thread_env, run_cli
from test_explain_cli_support import leftovers, tiny_run

pytestmark = pytest.mark.slow

TRAIN = ["--train.epochs=5", "--train.batch_size=4", "--train.threads=1", "--train.n_boot=10",
         "--train.progress=false", "--preprocess.output_size_hw=32,32", "--preprocess.target_spacing_xy=5,5",
         "--preprocess.n4=off", "--model.embed_dim=16", "--model.depth=1", "--model.mil_hidden=8",
         "--data.val_fraction=0.25", "--data.test_fraction=0.25"]
N_KILLS = 10
#: what a training run imports as it goes; the fork server imports them once (one missing here only costs
#: each restart its import time, it changes nothing else)
TRAIN_IMPORTS = tuple(f"mmxai_core.{m}" for m in (
    "train.run", "train.distributed", "train.loop", "train.predict", "train.metrics", "train.calibration",
    "train.thresholds", "train.bootstrap", "model.checkpoint", "data.manifest", "data.dataset", "data.splits",
    "data.clinical", "io.readers", "explain.gradcam", "report.tables")) + (
    "timm", "SimpleITK", "pydicom", "pandas", "scipy.stats", "scipy.optimize", "scipy.ndimage", "sklearn.metrics",
    "sklearn.model_selection", "safetensors.torch")


def _cmd(prog_module: str, *args) -> list[str]:
    return [sys.executable, "-m", prog_module, *map(str, args)]


def _start(cmd: list[str]) -> tuple[subprocess.Popen, list[str]]:
    """Start ``cmd``; its stderr lines are collected (by a thread) into the returned list."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=one_thread_env())
    lines: list[str] = []

    def read():
        for line in proc.stderr:
            lines.append(line.rstrip())

    threading.Thread(target=read, daemon=True).start()
    return proc, lines


def _kill_forked_after_line(server: ForkServer, argv: list, log: Path, line_no: int, delay: float,
                            timeout: float = 120) -> tuple[bool, list[str]]:
    """Run ``main(argv)`` in a child of ``server`` (stderr to ``log``) and SIGKILL it ``delay`` s after its
    stderr line number ``line_no`` appeared. Returns (killed, lines); killed is False when it finished first."""
    log.write_text("")  # not the previous child's lines
    pid = server.start(argv, log)

    def lines() -> list[str]:  # complete lines only
        return log.read_text(errors="replace").split("\n")[:-1]
    deadline = time.monotonic() + timeout
    try:
        while server.running() and len(lines()) < line_no and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        if server.running():
            os.kill(pid, signal.SIGKILL)
    finally:
        code = server.reap()
    return code == -signal.SIGKILL, lines()


def _tensors(folder: Path):
    from safetensors.torch import load_file

    return load_file(str(folder / "weights.safetensors"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from mmxai_core.data.synthetic.output import write_cohort

    out = tmp_path_factory.mktemp("kill") / "cohort"
    write_cohort(out, n=12, seed=1, kind="2d")  # as mmxai-synth --n 12 --kind 2d --seed 1, in this process
    return out


def test_training_killed_ten_times_resumes_and_finishes(cohort, tmp_path):
    base = ["--manifest", cohort / "manifest.csv", "--schema", cohort / "schema.yaml", *TRAIN]
    server = ForkServer("mmxai_core.cli.train", preload=TRAIN_IMPORTS)
    try:  # the server imports while the reference runs
        ref = run_cli("mmxai-train", *base, "--out", tmp_path / "reference")
        assert ref.returncode == 0, ref.stderr
        server.wait_ready()
        _kill_trials(server, base, ref.stderr, tmp_path)
    finally:
        server.close()


def _kill_trials(server: ForkServer, base: list, ref_stderr: str, tmp_path: Path) -> None:
    """Kill the run in ``tmp_path / "run"`` N_KILLS times at random lines of its progress output, resuming each
    time; then finish it and compare it with the reference."""
    from mmxai_core.model.checkpoint import load_checkpoint
    from mmxai_core.train.state import load_training_state

    lines = [x for x in ref_stderr.splitlines() if x.strip()]
    # kill points: after any line up to the one announcing the checkpoint (later ones are the metrics)
    n_lines = 1 + next(i for i, x in enumerate(lines) if "checkpoint:" in x)
    seed = int(os.environ.get("MMXAI_KILL_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    print(f"kill seed {seed} (MMXAI_KILL_SEED={seed} replays these kill points)")

    run = tmp_path / "run"
    outcomes = []
    attempts = finished_first = 0
    while len(outcomes) < N_KILLS:
        attempts += 1
        assert attempts <= 3 * N_KILLS, f"could not land {N_KILLS} kills ({outcomes})"
        resume = ["--resume"] if run.exists() else []
        line_no, delay = rng.randrange(0, n_lines), rng.uniform(0, 0.3)
        killed, lines = _kill_forked_after_line(server, [*base, "--out", run, *resume], tmp_path / "stderr.txt",
                                                line_no, delay)
        if not killed:  # it finished first (a resumed complete run still redoes its final evaluation)
            assert "error" not in " ".join(lines), lines
            finished_first += 1
            # the run is complete now: later kill points lie within what a resumed complete run prints
            shown = [x for x in lines if x.strip()]
            n_lines = 1 + next((i for i, x in enumerate(shown) if "checkpoint:" in x), n_lines - 1)
            continue
        state = "none"
        if (run / "state" / "state.json").exists():
            meta, _ = load_training_state(run / "state")  # always loads: never half-written
            state = f"epoch {meta['epoch']}"
        ckpt = "none"
        if (run / "checkpoint").exists():
            load_checkpoint(run / "checkpoint")
            ckpt = "loads"
        outcomes.append({"after_line": line_no, "delay_s": round(delay, 3), "lines_seen": len(lines),
                         "state": state, "checkpoint": ckpt})
    log = tmp_path / "stderr.txt"
    server.start([*base, "--out", run, *(["--resume"] if run.exists() else [])], log)
    assert server.reap() == 0, log.read_text()
    print(f"kill trials ({finished_first} more runs finished before their kill point):\n"
          + "\n".join(json.dumps(o) for o in outcomes))

    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    load_checkpoint(run / "checkpoint")
    a, b = _tensors(tmp_path / "reference" / "checkpoint"), _tensors(run / "checkpoint")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), "resumed weights differ from the reference"
    assert leftovers(run) == [], leftovers(run)
    assert len(outcomes) == N_KILLS


def test_interrupted_start_and_half_swapped_checkpoint_are_recovered(tmp_path):
    """The two states a kill can leave that need more than re-running an epoch: a folder holding only
    temporary files (killed before run.json) and a checkpoint moved aside while its replacement was
    being written (``.checkpoint.old-*`` without ``checkpoint``, beside a half-written ``.checkpoint.tmp-*``)."""
    from mmxai_core.train.state import RunFolder

    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    (run.path / ".run.json.x1y2.tmp").write_text("{")
    (run.path / "cache").mkdir()
    (run.path / "cache" / ".k.abc.tmp.npy").write_bytes(b"half")
    ident = {"manifest_sha256": "m", "config_sha256": "c"}
    assert run.decide(ident, resume=True, force=False) == "new"
    assert run.decide(ident, resume=False, force=False) == "new"
    (run.path / "notes.txt").write_text("the user's")  # anything else: still protected
    with pytest.raises(Exception, match="holds no mmxai-train run"):
        run.decide(ident, resume=True, force=False)
    (run.path / "notes.txt").unlink()

    ckpt = run.path / ".checkpoint.old-abcd1234"
    ckpt.mkdir()
    (ckpt / "metadata.json").write_text("{}")
    (run.path / ".checkpoint.tmp-zz").mkdir()
    (run.path / ".checkpoint.tmp-zz" / "weights.safetensors").write_bytes(b"half")
    removed = run.remove_leftovers()
    assert sorted(removed) == [".checkpoint.tmp-zz", ".run.json.x1y2.tmp", "cache/.k.abc.tmp.npy"]
    assert (run.path / "checkpoint" / "metadata.json").read_text() == "{}"  # put back, not lost
    assert sorted(p.name for p in run.path.rglob("*")) == ["cache", "checkpoint", "metadata.json"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def _small_manifest(tiny, n_test: int) -> Path:
    """The cohort's manifest cut to ``n_test`` rows of test patients (written beside it)."""
    import csv

    splits = json.loads((tiny.run / "splits.json").read_text())["patients"]
    with tiny.manifest.open() as fh:
        reader = csv.DictReader(fh)
        rows = [r for r in reader if splits[r["patient_id"]] == "test"][:n_test]
        fields = reader.fieldnames
    path = tiny.cohort / "manifest_reliability_kill.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_explain_batch_killed_at_a_random_point_then_rerun(tiny, tmp_path):
    """Killed at a random time after its first case: every case folder present is complete, the rerun
    computes only the missing ones, no partial file remains."""
    out = tmp_path / "batch"
    manifest = _small_manifest(tiny, 3)
    args = ["--model", tiny.run, "--manifest", manifest, "--split", "test", "--splits",
            tiny.run / "splits.json", "--out", out, "--quiet"]
    rng = random.Random(os.environ.get("MMXAI_KILL_SEED"))
    proc, _ = _start(_cmd("mmxai_core.cli.explain", *args))
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if out.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in out.iterdir()):
                time.sleep(rng.uniform(0, 0.5))
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the batch ended before it could be killed"
    done = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    expected = ["result.json", "heatmap.nrrd", "heatmap_label.nrrd", "overlay.png", "shap.png", "report.html"]
    for name in done:
        assert all((out / name / f).is_file() for f in expected), name
        json.loads((out / name / "result.json").read_text())
    stamps = {n: (out / n / "result.json").stat().st_mtime_ns for n in done}
    again = run_cli("mmxai-explain", *args)
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_complete"] == len(done)
    assert summary["computed"] == summary["cases"] - len(done)
    assert {n: (out / n / "result.json").stat().st_mtime_ns for n in done} == stamps
    assert leftovers(out) == [] and not [p for p in out.iterdir() if ".partial" in p.name]


def test_worker_killed_at_a_random_step_is_reported_and_cleaned_up(tiny, tmp_path):
    from mmxai_core.worker.client import CRASH_MESSAGE, run_worker

    out = tmp_path / "out"
    out.mkdir()
    steps = ["preprocess", "predict", "gradcam", "shapley", "write"]
    step = random.Random(os.environ.get("MMXAI_KILL_SEED")).choice(steps)
    pid: list[int] = []

    def kill_at(event):
        if event["event"] == "progress" and event.get("step") == step:
            os.kill(pid[0], signal.SIGKILL)

    request = {"protocol": 1, "image": str(tiny.image("mg")), "clinical": {}, "checkpoint": str(tiny.run),
               "device": "cpu", "output_dir": str(out)}
    before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("mmxai-worker-request-*"))
    outcome = run_worker(request, on_event=kill_at, on_start=pid.append, timeout=300, env=one_thread_env())
    assert outcome.status == "crashed", (step, outcome)
    assert outcome.message.startswith(CRASH_MESSAGE) and "signal 9" in outcome.message
    assert list(out.iterdir()) == [], f"killed at {step}: {list(out.iterdir())}"
    assert set(Path(os.environ.get("TMPDIR", "/tmp")).glob("mmxai-worker-request-*")) <= before
