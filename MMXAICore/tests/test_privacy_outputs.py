"""Privacy end to end: a DICOM whose identifying header fields hold sentinel strings goes through
mmxai-explain, mmxai-inspect and the worker; no sentinel appears in any output file (result.json,
report.html, the PNGs' text chunks, also those of the images embedded in the report, NRRD headers),
on stdout / stderr or in the worker's events and log. UIDs appear only hashed. A checkpoint holds no
training patient's identifiers or raw rows. The worker's request lives in a private temporary folder that
is removed, also after an error and a cancel. Research use, not for diagnosis.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import stat
import tempfile
from pathlib import Path

import pydicom
import pytest
from reliability_support import one_thread_env, run_cli
from test_explain_cli_support import tiny_run

SENTINELS = {
    "PatientName": "Sentinelname^Zqx", "PatientID": "SENTINELID4711", "PatientBirthDate": "19010203",
    "InstitutionName": "Sentinel Hospital Qzx", "AccessionNumber": "SENTACC0815",
    "ReferringPhysicianName": "Sentineldoc^Zqy", "OtherPatientIDs": "SENTOTHER42",
    "PatientAddress": "1 Sentinel Street", "StudyDescription": "SENTINEL STUDY DESC",
    "StudyInstanceUID": "1.2.826.0.1.3680043.10.99999.1", "SeriesInstanceUID": "1.2.826.0.1.3680043.10.99999.2",
    "SOPInstanceUID": "1.2.826.0.1.3680043.10.99999.3", "FrameOfReferenceUID": "1.2.826.0.1.3680043.10.99999.4",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture
def identified(tiny, tmp_path):
    ds = pydicom.dcmread(tiny.image("mg"))
    for keyword, value in SENTINELS.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = SENTINELS["SOPInstanceUID"]
    path = tmp_path / "identified.dcm"
    ds.save_as(path)
    assert all(v.encode() in path.read_bytes() for v in SENTINELS.values())  # the sentinels are there to find
    return path


def _png_texts(data: bytes) -> list[str]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return [f"{k}={v}" for k, v in {**im.info, **getattr(im, "text", {})}.items()]


def _texts_of(path: Path) -> list[str]:
    """Everything a file could carry: its bytes as text, PNG text chunks, and those of embedded images."""
    data = path.read_bytes()
    texts = [data.decode("latin-1")]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        texts += _png_texts(data)
    for blob in re.findall(rb"data:image/png;base64,([A-Za-z0-9+/=]+)", data):
        texts += _png_texts(base64.b64decode(blob))
    return texts


def _leaks(texts: list[str]) -> list[str]:
    return [f"{k}={v}" for k, v in SENTINELS.items() for t in texts if v in t or v.replace("^", " ") in t]


def test_no_identifier_in_explain_inspect_or_worker_outputs(tiny, identified, tmp_path):
    from mmxai_core.io.meta import uid_hash
    from mmxai_core.worker.client import run_worker

    out = tmp_path / "explained"
    proc = run_cli("mmxai-explain", "--model", tiny.run, "--image", identified, "--clinical", '{"age": 57}',
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"result.json", "report.html", "overlay.png", "shap.png", "heatmap.nrrd"} <= {p.name for p in files}
    leaks = {str(p.name): _leaks(_texts_of(p)) for p in files}
    leaks["explain stdout/stderr"] = _leaks([proc.stdout, proc.stderr])

    shown = [run_cli("mmxai-inspect", identified, *flags) for flags in ([], ["--json"], ["--header-only"])]
    assert all(p.returncode == 0 for p in shown), [p.stderr for p in shown]
    leaks["inspect"] = _leaks([t for p in shown for t in (p.stdout, p.stderr)])
    meta = json.loads(shown[1].stdout)["meta"]
    assert meta["series_uid_hash"] == uid_hash(SENTINELS["SeriesInstanceUID"])  # hashed, not dropped
    assert meta["study_uid_hash"] == uid_hash(SENTINELS["StudyInstanceUID"])

    wout = tmp_path / "worker"
    wout.mkdir()
    outcome = run_worker({"protocol": 1, "image": str(identified), "clinical": {}, "checkpoint": str(tiny.run),
                          "device": "cpu", "output_dir": str(wout)}, timeout=300, env=one_thread_env())
    assert outcome.ok, outcome.message
    leaks["worker events/log"] = _leaks([json.dumps(outcome.events), *outcome.log])
    leaks.update({f"worker {p.name}": _leaks(_texts_of(p)) for p in wout.rglob("*") if p.is_file()})
    assert not {k: v for k, v in leaks.items() if v}, leaks


def test_checkpoint_holds_no_training_patient_row(tiny):
    splits = json.loads((tiny.run / "splits.json").read_text())["patients"]
    with tiny.manifest.open() as fh:
        rows = [r for r in csv.DictReader(fh) if splits[r["patient_id"]] == "train"]
    assert len(rows) >= 8
    ckpt = tiny.run / "checkpoint"
    text = (ckpt / "metadata.json").read_text()
    weights_header = (ckpt / "weights.safetensors").read_bytes()[:4096].decode("latin-1")
    fields = [k for k in rows[0] if k not in ("patient_id", "image", "label", "mask", "dataset", "split",
                                               "case_id")]
    found = []
    for r in rows:
        for key in ("patient_id", "image", "mask"):
            v = r.get(key)
            if v and (v in text or Path(v).name in text or v in weights_header):
                found.append(f"{key} {v}")
        # a raw row: its clinical values in order, as JSON would list or map them
        values = [r[f] for f in fields]
        as_list = json.dumps(values)[1:-1].replace('"', "")
        if as_list in text.replace('"', "") or json.dumps(r) in text:
            found.append(f"row of {r['patient_id']}")
    assert not found, found
    meta = json.loads(text)
    # the fitted preprocessing is a summary (quantiles, ranges, categories), not a table of training rows
    def longest_list(obj):
        if isinstance(obj, dict):
            return max([longest_list(v) for v in obj.values()] + [0])
        if isinstance(obj, list):
            return max([len(obj)] + [longest_list(v) for v in obj])
        return 0
    assert longest_list(meta.get("clinical_preprocessor", {})) < len(rows)


def _request_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("mmxai-worker-request-*"))


def test_worker_request_folder_is_private_and_removed_on_error_and_cancel(tiny, tmp_path):
    from mmxai_core.worker.client import run_worker

    seen: list[tuple[Path, int, int]] = []

    def look(_pid):
        for d in _request_dirs() - before:
            st = d.stat()
            seen.append((d, stat.S_IMODE(st.st_mode), st.st_uid))

    out = tmp_path / "out"
    out.mkdir()
    req = {"protocol": 1, "image": str(tiny.image("mg")), "clinical": {"age": 999}, "checkpoint": str(tiny.run),
           "device": "cpu", "output_dir": str(out)}
    before = _request_dirs()
    refused = run_worker(req, on_start=look, timeout=300, env=one_thread_env())
    assert refused.status == "error" and refused.kind == "input" and "age" in refused.message
    assert seen and all(mode == 0o700 and uid == os.getuid() for _, mode, uid in seen), seen
    assert _request_dirs() <= before and list(out.iterdir()) == []

    req["clinical"] = {}
    events: list[str] = []
    cancelled = run_worker(req, on_event=lambda e: events.append(e.get("step", e["event"])),
                           cancel=lambda: "predict" in events, timeout=300, env=one_thread_env())
    assert cancelled.status == "cancelled", cancelled
    assert _request_dirs() <= before and list(out.iterdir()) == []

    class Stop(Exception):
        pass

    def boom(event):
        if event.get("step") == "gradcam":
            raise Stop
    pids: list[int] = []
    with pytest.raises(Stop):
        run_worker(req, on_event=boom, on_start=pids.append, timeout=300, env=one_thread_env())
    assert _request_dirs() <= before and list(out.iterdir()) == []
    with pytest.raises(ProcessLookupError):  # the worker did not outlive the failed caller
        os.kill(pids[0], 0)
