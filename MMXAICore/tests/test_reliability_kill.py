"""SIGKILL at random points: mmxai-train (at least 10 kills, all while training is in progress, each followed
by ``--resume``), a manifest batch of mmxai-explain, and the worker under
:func:`mmxai_core.worker.client.run_worker`.

Training: tiny runs on a tiny synthetic cohort are killed in chains. A chain starts a run in a fresh folder
and kills it at a random point, then resumes it with ``--resume`` and kills it again at a later random point,
and so on (:func:`_plan`): in epoch 1 before any state is saved, in the middle of a random epoch (after the
previous epoch's line plus a random delay), while a random epoch's state files are being written (seen as
their temporary files appear), and during the final checkpoint save. Then the chain's run is let finish;
while fewer than 10 kills have landed, a new chain starts in a new folder, so no kill is spent on a finished
run. After every kill the test reads where it landed from the folder (``_landed``: ``run.json`` present and
not yet complete = mid-training, which every kill must be), checks that the saved state loads and lost no
saved epoch, and that a checkpoint, if present, loads (``load_run_checkpoint``); the next start must resume
from the saved epoch and first remove the half-written files. A kill before ``run.json`` exists would leave
nothing resumable; the next start is then a fresh one without ``--resume`` (the folder then holds only
temporary files and image cache, which ``RunFolder.decide`` accepts as new). A run killed before its first
saved epoch is resumed with ``--resume`` and trains from epoch 1. Each finished run is complete, its
checkpoint loads, no temporary file is left, and its weights equal an uninterrupted run's (made by the
console entry point, ``python -m mmxai_core.cli.train``, 1 CPU thread) bit for bit. The killed runs are
processes forked from one that imported the package once (:class:`reliability_support.ForkServer`): each
is a fresh process running the CLI's ``main``, minus the seconds of importing torch again. The seed of the
random points is printed (``MMXAI_KILL_SEED`` replays one), with a table of the trials.
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

EPOCHS = 5
TRAIN = [f"--train.epochs={EPOCHS}", "--train.batch_size=4", "--train.threads=1", "--train.n_boot=10",
         "--train.progress=false", "--preprocess.output_size_hw=32,32", "--preprocess.target_spacing_xy=5,5",
         "--preprocess.n4=off", "--model.embed_dim=16", "--model.depth=1", "--model.mil_hidden=8",
         "--data.val_fraction=0.25", "--data.test_fraction=0.25"]
N_KILLS = 10
#: where the kills must have landed, each at least once (``_landed``); a kill point missed (e.g. a save too
#: quick to be seen on a busy machine) costs one more chain
PHASES = ("before first epoch saved", "mid-epoch", "state save", "checkpoint save")
MAX_CHAINS = 8
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


def _run_and_kill(server: ForkServer, argv: list, log: Path, trigger, delay: float,
                  timeout: float = 120) -> tuple[int, list[str]]:
    """Run ``main(argv)`` in a child of ``server`` (stderr to ``log``). ``trigger(lines)`` is polled about
    every millisecond with the child's complete stderr lines so far; once it is true, wait ``delay`` s and
    SIGKILL the child. Returns (exit status, lines): ``-SIGKILL`` when the kill landed, else the child's own."""
    log.write_text("")  # not the previous child's lines
    pid = server.start(argv, log)

    def lines() -> list[str]:  # complete lines only
        return log.read_text(errors="replace").split("\n")[:-1]
    deadline = time.monotonic() + timeout
    try:
        while server.running():
            if trigger(lines()):
                time.sleep(delay)
                if server.running():
                    os.kill(pid, signal.SIGKILL)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"the run did not reach its kill point within {timeout} s: {lines()}")
            time.sleep(0.001)
    finally:
        code = server.reap()
    return code, lines()


def _tensors(folder: Path):
    from safetensors.torch import load_file

    return load_file(str(folder / "weights.safetensors"))


def _leftover_names(folder: Path) -> set[str]:
    from mmxai_core.train.state import is_leftover

    try:
        return {n for n in os.listdir(folder) if is_leftover(folder / n)}
    except FileNotFoundError:
        return set()


def _saved_epoch(run: Path) -> int:
    """The epoch of the run's saved training state (0: none saved); the state always loads."""
    from mmxai_core.train.state import load_training_state

    saved = load_training_state(run / "state")  # never half-written (StateError otherwise)
    return 0 if saved is None else int(saved[0]["epoch"])


def _plan(rng: random.Random, run: Path, saved: int, lo: int, first_of_chain: bool, chain: int,
          used: dict[str, int]):
    """A random kill point for a run that has ``saved`` epochs saved, in epoch ``lo`` or later (each kill of a
    chain lands later in the run than the one before, so chains move on to the final save):
    ``(description, trigger, delay, epoch aimed at)``.

    * ``mid-epoch t``: after the line of epoch t - 1 (the "training on" line when t - 1 is the saved epoch,
      i.e. the moment training starts or resumes), plus a random delay of up to 0.12 s (an epoch takes
      about 0.2 s here, longer on a busy machine): lands in the middle of epoch t or in the saving of its state;
      the first kill of the first chain (and of half the later ones) aims at epoch 1, before any state exists;
    * ``state save t``: as soon as a temporary file of epoch t's state appears in ``state/`` (falls back to
      just after the line of epoch t when the write was too quick to be seen);
    * ``checkpoint save``: past the last epoch, as soon as the temporary checkpoint folder appears (the
      final save, before ``run.json`` says complete).
    """
    state_before = _leftover_names(run / "state")
    run_before = _leftover_names(run)
    lo = max(lo, saved + 1)
    if lo > EPOCHS:
        def at_checkpoint(lines):
            return any(n.startswith(".checkpoint.") for n in _leftover_names(run) - run_before)
        return "checkpoint save", at_checkpoint, 0.0, EPOCHS + 1
    if first_of_chain and saved == 0 and (chain == 1 or rng.random() < 0.5):
        kind, t = "mid-epoch", 1
    else:  # the kind used less often so far (both get tried), a random epoch
        fewer = min(used.values())
        kind, t = rng.choice([k for k, n in used.items() if n == fewer]), rng.randint(lo, EPOCHS)
    used[kind] += 1
    if kind == "mid-epoch":
        mark = "training on" if t - 1 == saved else f"epoch {t - 1}/{EPOCHS}:"
        delay = rng.uniform(0, 0.12)
        return f"mid-epoch {t} (+{delay:.3f} s)", (lambda lines: any(mark in x for x in lines)), delay, t
    tag, mark = f"-e{t:04d}.", f"epoch {t}/{EPOCHS}:"

    def at_state_save(lines):
        return (any(tag in n for n in _leftover_names(run / "state") - state_before)
                or any(mark in x for x in lines))
    return f"state save {t}", at_state_save, 0.0, t


def _landed(run: Path) -> tuple[str, str, bool]:
    """Where a kill landed, read from what it left in ``run``: (phase, detail, mid-training?). Mid-training:
    ``run.json`` exists and does not yet say complete."""
    if not (run / "run.json").is_file():
        return "set-up (no run.json yet)", "", False
    if json.loads((run / "run.json").read_text())["status"] == "complete":
        return "after completion", "", False
    saved = _saved_epoch(run)
    state_tmp, run_tmp = _leftover_names(run / "state"), _leftover_names(run)
    if any(n.startswith(".checkpoint.") for n in run_tmp):
        return "checkpoint save", f"{sorted(run_tmp)}", True
    if state_tmp or any(n.startswith(".log.csv.") for n in run_tmp):
        return "state save", f"epoch {saved + (1 if state_tmp else 0)}: {sorted(state_tmp | run_tmp)}", True
    if saved == 0:
        return "before first epoch saved", "epoch 1", True
    if saved < EPOCHS:
        return "mid-epoch", f"epoch {saved + 1}", True
    if not (run / "checkpoint").exists():
        return "final evaluation", "", True
    return "reports", f"{sorted(run_tmp)}", True


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from mmxai_core.data.synthetic.output import write_cohort

    out = tmp_path_factory.mktemp("kill") / "cohort"
    write_cohort(out, n=12, seed=1, kind="2d")  # as mmxai-synth --n 12 --kind 2d --seed 1, in this process
    return out


def test_training_killed_ten_times_mid_training_resumes_and_finishes(cohort, tmp_path):
    base = ["--manifest", cohort / "manifest.csv", "--schema", cohort / "schema.yaml", *TRAIN]
    server = ForkServer("mmxai_core.cli.train", preload=TRAIN_IMPORTS)
    try:  # the server imports while the reference runs
        ref = run_cli("mmxai-train", *base, "--out", tmp_path / "reference")
        assert ref.returncode == 0, ref.stderr
        server.wait_ready()
        _kill_trials(server, base, tmp_path)
    finally:
        server.close()


def _kill_trials(server: ForkServer, base: list, tmp_path: Path) -> None:
    """Chains of kill-and-resume trials (each chain one run folder) until N_KILLS kills landed mid-training
    and every one of PHASES was hit; each chain is then run to completion and compared with the reference."""
    from mmxai_core.train.predict import load_run_checkpoint

    seed = int(os.environ.get("MMXAI_KILL_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    print(f"kill seed {seed} (MMXAI_KILL_SEED={seed} replays these kill points)")
    reference = _tensors(tmp_path / "reference" / "checkpoint")
    log = tmp_path / "stderr.txt"
    trials: list[dict] = []
    kills = lambda: [t for t in trials if t["killed"]]
    chain = 0
    used = {"mid-epoch": 0, "state save": 0}  # kinds of kill point chosen so far

    def enough() -> bool:
        landed = [t for t in kills() if t["mid_training"]]
        return len(landed) >= N_KILLS and set(PHASES) <= {t["landed"] for t in landed}

    while not enough():
        chain += 1
        assert chain <= MAX_CHAINS, f"{N_KILLS} mid-training kills in {PHASES} not reached: {trials}"
        run = tmp_path / f"run{chain}"
        complete = False
        lo = 1  # the next kill of this chain aims at this epoch or a later one (EPOCHS + 1: the final save)
        left_by_kill: set[str] = set()
        while not complete:
            saved = _saved_epoch(run)
            # a kill before run.json leaves nothing resumable (at most temporary files and part of the image
            # cache): the run is then started afresh, without --resume (RunFolder.decide accepts that folder)
            fresh = not (run / "run.json").is_file()
            argv = [*base, "--out", run, *([] if fresh else ["--resume"])]
            start = "fresh" if fresh else f"--resume (epoch {saved} saved)"
            if enough() or lo > EPOCHS + 1:  # let the chain finish
                plan, trigger, delay = "none (run to completion)", (lambda lines: False), 0.0
            else:
                first = not any(t["chain"] == chain for t in trials)
                plan, trigger, delay, aimed = _plan(rng, run, saved, lo, first, chain, used)
                lo = aimed + 1
            code, lines = _run_and_kill(server, argv, log, trigger, delay)
            text = "\n".join(lines)
            if lines and any("training on" in x for x in lines):
                if saved:  # the resumed run continued from the saved epoch, not from the start
                    assert f"resuming after epoch {saved}" in text, text
                if left_by_kill:  # what the previous kill left half-written was removed first
                    assert "temporary file(s) left by an interrupted run" in text, (left_by_kill, text)
            row = {"chain": chain, "start": start, "kill_point": plan, "lines_seen": len(lines),
                   "killed": code == -signal.SIGKILL}
            if code != -signal.SIGKILL:
                assert code == 0, text
                complete = True
                row.update(landed="- (not killed: ran to completion)", mid_training=False)
                trials.append(row)
                print(json.dumps(row))  # as it happens: shown with a failure
                break
            phase, detail, mid = _landed(run)
            left_by_kill = _leftover_names(run) | _leftover_names(run / "state") | _leftover_names(run / "cache")
            after = _saved_epoch(run)  # the state left by the kill loads ...
            assert after >= saved, f"the kill lost saved epochs ({saved} -> {after})"  # ... and lost nothing
            ckpt = "none"
            if (run / "checkpoint").exists():
                load_run_checkpoint(run)  # the last checkpoint loads
                ckpt = "loads"
            row.update(landed=phase, detail=detail, mid_training=mid, state_after=after, checkpoint=ckpt)
            trials.append(row)
            print(json.dumps(row))
        # the chain's run is complete: its checkpoint loads, nothing temporary is left, the weights are the
        # reference's bit for bit
        assert json.loads((run / "run.json").read_text())["status"] == "complete"
        load_run_checkpoint(run)
        assert leftovers(run) == [], leftovers(run)
        weights = _tensors(run / "checkpoint")
        assert weights.keys() == reference.keys(), f"chain {chain}"
        assert all(weights[k].equal(reference[k]) for k in reference), f"chain {chain}: weights differ"

    done = kills()
    phases = {}
    for t in done:
        phases[t["landed"]] = phases.get(t["landed"], 0) + 1
    print(f"kill trials: {len(done)} kills in {chain} chain(s), {sum(t['mid_training'] for t in done)} landed "
          f"mid-training; phases {phases}; {len(trials) - len(done)} runs finished (each compared with the "
          "reference)")
    assert all(t["mid_training"] for t in done), [t for t in done if not t["mid_training"]]
    assert len(done) >= N_KILLS
    assert set(PHASES) <= set(phases), phases  # every kind of kill point was reached


def test_interrupted_start_and_half_swapped_checkpoint_are_recovered(tmp_path):
    """The states a kill can leave that need more than re-running an epoch: a folder holding only
    temporary files (killed before run.json), a checkpoint moved aside while its replacement was
    being written (``.checkpoint.old-*`` without ``checkpoint``, beside a half-written ``.checkpoint.tmp-*``),
    and safetensors' own temporary file (``.tmp`` + 6 random characters, written before it renames the file
    onto the name it was given) in ``state/`` after a kill during ``save_file``."""
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
    (run.path / "state").mkdir()
    (run.path / "state" / ".tmpQ7xZ_2").write_bytes(b"half")  # safetensors' (found by the kill trials)
    (run.path / "state" / ".model-e0002.safetensors.k3j.tmp.safetensors").write_bytes(b"")
    (run.path / "state" / "model-e0001.safetensors").write_bytes(b"kept")
    removed = run.remove_leftovers()
    assert sorted(removed) == [".checkpoint.tmp-zz", ".run.json.x1y2.tmp", "cache/.k.abc.tmp.npy",
                               "state/.model-e0002.safetensors.k3j.tmp.safetensors", "state/.tmpQ7xZ_2"]
    assert (run.path / "checkpoint" / "metadata.json").read_text() == "{}"  # put back, not lost
    assert sorted(p.name for p in run.path.rglob("*")) == ["cache", "checkpoint", "metadata.json",
                                                           "model-e0001.safetensors", "state"]


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
