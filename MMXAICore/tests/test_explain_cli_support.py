"""Shared helpers of the mmxai-explain, worker and report tests (no tests here).

A tiny model trained once per test session (about 6 s on one CPU thread) on a small synthetic cohort
(mammograms and oblique MR volumes), cached under pytest's base temporary folder so every test module
that asks for it gets the same files; and a subprocess runner with one torch thread.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# tiny model, 32 x 32 px, 8 mm slices: a few seconds to train one epoch
TINY = {"train.epochs": "1", "train.batch_size": "8", "train.threads": "1", "train.n_boot": "20",
        "train.progress": "false", "preprocess.output_size_hw": "32,32", "preprocess.target_spacing_xy": "5,5",
        "preprocess.target_spacing_z": "8", "preprocess.n4": "off", "model.embed_dim": "16",
        "model.depth": "1", "model.mil_hidden": "8", "data.val_fraction": "0.25", "data.test_fraction": "0.25"}


@dataclass
class TinyRun:
    """The cached cohort and run: ``cohort`` (manifest.csv, images/), ``run`` (mmxai-train run folder)."""

    cohort: Path
    run: Path

    @property
    def manifest(self) -> Path:
        return self.cohort / "manifest.csv"

    def image(self, kind: str) -> Path:
        """The first image of a kind in the manifest: ``"mg"`` (a 2-D DICOM file) or ``"mr"`` (a series)."""
        import csv

        with self.manifest.open() as fh:
            for row in csv.DictReader(fh):
                if row["dataset"] == f"synth-{kind}":
                    return self.cohort / row["image"]
        raise LookupError(kind)

    def oblique_mr(self) -> Path:
        """The first MR series whose direction is not axis-aligned (the hard case for geometry)."""
        import csv

        import numpy as np

        from mmxai_core.io import read_geometry

        with self.manifest.open() as fh:
            for row in csv.DictReader(fh):
                if row["dataset"] == "synth-mr":
                    d = np.asarray(read_geometry(self.cohort / row["image"]).direction)
                    if np.abs(np.abs(d) - np.eye(3)).max() > 1e-3 and np.abs(np.abs(d).max(0) - 1).max() > 1e-3:
                        return self.cohort / row["image"]
        raise LookupError("no oblique MR series in the cohort")


def tiny_run(tmp_path_factory) -> TinyRun:
    """Train (once per session, under a file lock) or reuse the tiny run."""
    base = tmp_path_factory.getbasetemp() / "mmxai-explain-tiny"
    base.mkdir(parents=True, exist_ok=True)
    done = base / "done.json"
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not done.is_file():
            import torch

            from mmxai_core.data.synthetic.output import write_cohort
            from mmxai_core.train.config import resolve_config
            from mmxai_core.train.run import run_training

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                write_cohort(base / "cohort", n=24, seed=3, kind="mixed", force=True)
                run_training(resolve_config(None, TINY), base / "cohort" / "manifest.csv",
                             base / "cohort" / "schema.yaml", base / "run", force=True)
            finally:
                torch.set_num_threads(threads)
            done.write_text(json.dumps({"ok": True}))
    return TinyRun(cohort=base / "cohort", run=base / "run")


def env_one_thread() -> dict[str, str]:
    """This environment with one BLAS/torch thread and tracebacks on (to diagnose a failing test)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("MMXAI_DEBUG", None)
    return env


def run_explain(*args: str | os.PathLike, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m mmxai_core.cli.explain ARGS`` (text output captured)."""
    return subprocess.run([sys.executable, "-m", "mmxai_core.cli.explain", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env_one_thread())


def leftovers(folder: Path) -> list[str]:
    """Hidden partial / old folders and temporary files anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if ".partial-" in p.name or ".old-" in p.name or ".tmp" in p.name)
