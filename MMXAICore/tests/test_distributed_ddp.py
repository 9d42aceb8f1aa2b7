"""Distributed data-parallel training on two CPU processes (gloo on 127.0.0.1, a free port, hard timeouts).

* the collectives of :class:`DistributedRuntime` (uneven gathers, agree, sums, buffer sync);
* ``torchrun --nproc_per_node=2 ... mmxai-train`` on a tiny image run: it finishes, only rank 0 writes (each
  file once), validation counts each case once;
* the same global batch on 2 x 4 and 1 x 8 gives the same weights where nothing depends on the split of the
  batch (clinical-only variant, no dropout / masking / class weights).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mmxai_core.data.synthetic.output import write_cohort

TINY = {"train.batch_size": "4", "train.threads": "1", "train.n_boot": "20", "train.progress": "false",
        "preprocess.output_size_hw": "32,32", "preprocess.target_spacing_xy": "5,5", "preprocess.target_spacing_z": "8",
        "preprocess.n4": "off", "model.embed_dim": "16", "model.depth": "1", "model.mil_hidden": "8",
        "data.val_fraction": "0.25", "data.test_fraction": "0.25"}
TIMEOUT_S = 150

# runs mmxai-train and logs, per rank, every file it moves into place (all writes are atomic renames)
WRAPPER = """
import os, sys
rank = os.environ.get("RANK", "0")
log = open(os.path.join(sys.argv[1], f"writes-rank{rank}.txt"), "a")
for name in ("replace", "rename"):
    def make(orig):
        def moved(src, dst, *a, **k):
            log.write(os.fspath(dst) + "\\n"); log.flush()
            return orig(src, dst, *a, **k)
        return moved
    setattr(os, name, make(getattr(os, name)))
from mmxai_core.cli.train import main
sys.exit(main(sys.argv[2:]))
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: Path, args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    """Launch ``torchrun`` with a hard timeout (the whole process group is killed on expiry)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMXAI_DIST_TIMEOUT_S": "120"}
    env.pop("MMXAI_DEBUG", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish within {TIMEOUT_S} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "cohort"
    write_cohort(out, n=24, seed=3, kind="mixed")
    return out


def _args(cohort: Path, out: Path, overrides: dict[str, str]) -> list[str]:
    return ["--manifest", str(cohort / "manifest.csv"), "--schema", str(cohort / "schema.yaml"), "--out", str(out),
            *[f"--{k}={v}" for k, v in overrides.items()]]


# ---------------------------------------------------------------------------------------------- collectives
def _collectives_worker(rank: int, port: int, folder: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from mmxai_core.train.distributed import init_distributed, shutdown

    rt = init_distributed("cpu", "off", threads=1, timeout_s=60)
    try:
        n = 3 if rank == 0 else 2
        got = rt.gather_arrays({"x": np.arange(n, dtype=np.float32) + 10 * rank,
                                "i": np.full((n, 2), rank, dtype=np.int64)})
        summed = rt.all_reduce_sum(torch.tensor([1.0, rank], dtype=torch.float64))
        agreed = rt.agree(rank == 0)
        bn = torch.nn.BatchNorm1d(2)
        bn.running_mean.fill_(float(rank + 1))
        rt.sync_buffers(bn)
        rt.barrier()
        Path(folder, f"rank{rank}.json").write_text(json.dumps({
            "x": got["x"].tolist(), "i": got["i"].tolist(), "sum": summed.tolist(), "agree": agreed,
            "bn": bn.running_mean.tolist(), "distributed": rt.distributed}))
    finally:
        shutdown()


def test_collectives_on_two_processes(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.start_processes(_collectives_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + 90
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("collective test did not finish in 90 s")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for res in results:
        assert res["distributed"]
        assert res["x"] == [0.0, 1.0, 2.0, 10.0, 11.0]            # rank order, uneven shards, no padding left
        assert res["i"] == [[0, 0]] * 3 + [[1, 1]] * 2
        assert res["sum"] == [2.0, 1.0]
        assert res["agree"] is True                                 # rank 0's decision everywhere
        assert res["bn"] == [1.0, 1.0]                              # rank 0's running statistics


# ---------------------------------------------------------------------------------------------- torchrun
@pytest.mark.slow
def test_torchrun_two_processes_image_run(cohort, tmp_path):
    from mmxai_core.data.manifest import load_manifest
    from mmxai_core.data.schema import load_schema
    from mmxai_core.data.splits import load_splits

    script = tmp_path / "wrapped_train.py"
    script.write_text(WRAPPER)
    out = tmp_path / "run"
    # no image dropout: the learned missing-image token gets no gradient in any step (DDP needs
    # find_unused_parameters for that, as for the variants without a clinical or image branch)
    proc = torchrun(script, [str(tmp_path), *_args(cohort, out, {**TINY, "train.epochs": "2",
                                                                  "model.image_dropout_rate": "0"})])
    assert proc.returncode == 0, proc.stderr[-4000:]
    # rank 0 printed the test metrics once; rank 1 wrote nothing, rank 0 each report once
    assert proc.stdout.count("test set:") == 1, proc.stdout
    writes = {r: (tmp_path / f"writes-rank{r}.txt").read_text().splitlines()
              if (tmp_path / f"writes-rank{r}.txt").exists() else [] for r in (0, 1)}
    assert not [w for w in writes[1] if str(out) in w], writes[1]
    ours = [w for w in writes[0] if str(out) in w]
    for name in ("metrics.json", "metrics.md", "predictions/val.csv", "predictions/test.csv", "splits.json"):
        assert sum(w == str(out / name) for w in ours) == 1, (name, ours)
    assert (out / "checkpoint" / "weights.safetensors").is_file()
    # validation counts each case once: the gathered predictions are exactly the val split
    manifest = load_manifest(cohort / "manifest.csv", load_schema(cohort / "schema.yaml"))
    n_val = len(load_splits(out / "splits.json").indices(manifest)["val"])
    report = json.loads((out / "metrics.json").read_text())
    assert report["val"]["n_cases"] == n_val
    rows = list(csv.DictReader((out / "predictions" / "val.csv").open()))
    assert len(rows) == n_val == len({r["case"] for r in rows})
    assert len(list(csv.DictReader((out / "log.csv").open()))) == 2
    meta = json.loads((out / "checkpoint" / "metadata.json").read_text())
    assert "rank 0/2" in proc.stderr and meta["explain"]["cam_scale"] > 0


def _even_train_split_seed(cohort: Path) -> int:
    """A split seed whose training split has an even number of cases (no sampler padding on 2 ranks)."""
    from mmxai_core.data.manifest import load_manifest
    from mmxai_core.data.schema import load_schema
    from mmxai_core.data.splits import make_splits

    manifest = load_manifest(cohort / "manifest.csv", load_schema(cohort / "schema.yaml"))
    for seed in range(20):
        if len(make_splits(manifest, 0.25, 0.25, seed=seed).indices(manifest)["train"]) % 2 == 0:
            return seed
    raise AssertionError("no split seed with an even training split")


@pytest.mark.slow
def test_ddp_matches_one_process_with_the_same_global_batch(cohort, tmp_path):
    from safetensors.torch import load_file

    from mmxai_core.train.config import resolve_config
    from mmxai_core.train.run import run_training

    same = {**TINY, "train.epochs": "2", "model.variant": "clinical_only", "model.dropout": "0",
            "model.clinical_mask_rate": "0", "model.image_dropout_rate": "0", "train.class_weights": "none",
            "data.split_seed": str(_even_train_split_seed(cohort))}
    script = tmp_path / "wrapped_train.py"
    script.write_text(WRAPPER)
    proc = torchrun(script, [str(tmp_path), *_args(cohort, tmp_path / "ddp", {**same, "train.batch_size": "4"})])
    assert proc.returncode == 0, proc.stderr[-4000:]
    single = run_training(resolve_config(None, {**same, "train.batch_size": "8"}), cohort / "manifest.csv",
                          cohort / "schema.yaml", tmp_path / "single")
    a = load_file(str(tmp_path / "ddp" / "checkpoint" / "weights.safetensors"))
    b = load_file(str(tmp_path / "single" / "checkpoint" / "weights.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-6, rtol=1e-5, msg=k)
    ddp_log = list(csv.DictReader((tmp_path / "ddp" / "log.csv").open()))
    assert [float(r["val_loss"]) for r in ddp_log] == pytest.approx([h.val_loss for h in single.history], abs=1e-6)
    assert [int(r["step"]) for r in ddp_log] == [h.step for h in single.history]
