"""``mmxai-train --ablation --jobs 2 --allow-outside-paths``: the runs trained in spawned processes re-read
the manifest, and a spawned process does not inherit the scoped switch ``outside_paths_allowed()``; the
ablation passes ``allow_outside`` into each run's task, so a cohort whose images sit outside the manifest's
folder trains in parallel runs too (the CLI used to refuse the combination). Without the switch the same
manifest is refused. Research use, not for diagnosis.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from reliability_support import run_cli

TINY = ["--train.epochs=1", "--train.batch_size=8", "--train.threads=1", "--train.n_boot=10", "--quiet",
        "--preprocess.output_size_hw=32,32", "--preprocess.target_spacing_xy=5,5", "--preprocess.n4=off",
        "--model.embed_dim=16", "--model.depth=1", "--model.mil_hidden=8", "--data.val_fraction=0.25",
        "--data.test_fraction=0.25"]


@pytest.fixture(scope="module")
def outside_manifest(tmp_path_factory) -> Path:
    """A tiny cohort whose manifest lives in ``lists/`` and names every image and mask as ``../cohort/...``."""
    from mmxai_core.data.synthetic.output import write_cohort

    root = tmp_path_factory.mktemp("abl_outside")
    write_cohort(root / "cohort", n=12, seed=1, kind="2d")
    lists = root / "lists"
    lists.mkdir()
    shutil.copy(root / "cohort" / "schema.yaml", lists / "schema.yaml")
    with (root / "cohort" / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for col in ("image", "mask"):
            if row.get(col):
                row[col] = f"../cohort/{row[col]}"
    with (lists / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return lists / "manifest.csv"


def _args(manifest: Path, out: Path) -> list:
    return ["--ablation", "--variants", "attention,clinical_only", "--seeds", "0", "--jobs", "2", "--manifest",
            manifest, "--schema", manifest.parent / "schema.yaml", "--out", out, *TINY]


@pytest.mark.slow  # three Python processes import torch (~30 s on 2 busy cores)
def test_parallel_ablation_with_outside_paths_trains_every_run(outside_manifest, tmp_path):
    proc = run_cli("mmxai-train", *_args(outside_manifest, tmp_path / "abl"), "--allow-outside-paths",
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "2 run(s), 2 at a time in separate processes" in proc.stderr  # the spawned-process path
    assert "leaves the manifest's folder" not in proc.stderr
    info = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert info["status"] == "complete"
    assert [e["status"] for e in info["runs"]] == ["trained", "trained"]
    for e in info["runs"]:
        assert (tmp_path / "abl" / e["run_dir"] / "checkpoint" / "weights.safetensors").is_file(), e


def test_run_ablation_passes_allow_outside_into_each_task(monkeypatch, outside_manifest, tmp_path):
    """The task of every run says ``allow_outside`` explicitly: True under ``outside_paths_allowed()``
    (the scoped switch is read in this process, where it is set) or ``allow_outside=True``, else False."""
    from mmxai_core.data.manifest import outside_paths_allowed
    from mmxai_core.data.schema import load_schema
    from mmxai_core.errors import ManifestError
    from mmxai_core.train import ablation
    from mmxai_core.train.config import resolve_config

    seen: list[list[bool]] = []

    class Stop(Exception):
        pass

    def fake_execute(tasks, jobs, rt, manifest_obj, say):
        seen.append([t["allow_outside"] for t in tasks])
        raise Stop

    monkeypatch.setattr(ablation, "_execute", fake_execute)
    cfg = resolve_config(None, {a[2:].split("=")[0]: a.split("=")[1] for a in TINY if "=" in a})
    schema = load_schema(outside_manifest.parent / "schema.yaml")
    kw = {"variants": "attention,clinical_only", "seeds": "0", "jobs": 2}
    with pytest.raises(ManifestError, match="leaves the manifest's folder"):
        ablation.run_ablation(cfg, outside_manifest, schema, tmp_path / "refused", **kw)
    with pytest.raises(Stop):
        ablation.run_ablation(cfg, outside_manifest, schema, tmp_path / "a", allow_outside=True, **kw)
    with outside_paths_allowed(), pytest.raises(Stop):
        ablation.run_ablation(cfg, outside_manifest, schema, tmp_path / "b", **kw)
    assert seen == [[True, True], [True, True]]
