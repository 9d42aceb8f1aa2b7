"""Explain every case of a manifest (optionally one split), resumably. Research use only - not for diagnosis.

Layout of the output folder ``OUT``::

    OUT/batch.json            what this batch is (model weights, manifest, split, options): written first
    OUT/<case>/               one complete explain output per case (result.json, heatmap.nrrd, ...)
    OUT/summary.csv, .json    one row per case (status, predicted class, probabilities, top field, error)

Each case folder is built in a hidden ``OUT/.<case>.partial-PID-XXXX`` and renamed into place when
complete, so a case folder that exists is complete. A rerun with the same batch (same ``batch.json``
identity) skips complete cases, removes partial folders left by a killed run and computes only the
missing ones (with nothing missing the model is not even loaded); a different batch in the same folder
is refused unless ``force`` (which starts afresh).
A case whose image or values are refused is recorded in the summary with its one-line error and the
batch goes on; the rerun tries it again. A lock file keeps two batches out of one folder.

Case folder names: the manifest's ``case_id`` when given, else ``<patient_id>-row<N>``, reduced to
letters, digits, ``.``, ``_`` and ``-``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from mmxai_core import RESEARCH_USE_NOTICE, __version__
from mmxai_core.errors import MMXAIError
from mmxai_core.explain.pipeline import (RESULT_FILE, CheckpointInfo, ExplainOptions, LoadedModel,
                                         check_metrics_available, explain_to_folder, read_result,
                                         remove_stale_partials)
from mmxai_core.utils.atomic import write_json_atomic, write_text_atomic

BATCH_FILE = "batch.json"
BATCH_FORMAT = "mmxai.explain_batch"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
LOCK_FILE = ".lock"


@dataclasses.dataclass
class BatchCase:
    """One manifest row to explain: folder name, image path, parsed clinical values, facts for the summary."""

    name: str
    image: str
    clinical: dict[str, Any]
    patient_id: str
    row: int
    label: str | None


@dataclasses.dataclass
class BatchSummary:
    """What a batch run did: ``rows`` (one dict per case, in manifest order), counts, and the files."""

    out_dir: Path
    rows: list[dict[str, Any]]
    computed: int
    skipped: int
    failed: int
    internal_errors: int
    seconds: float

    @property
    def exit_code(self) -> int:
        """0 all complete, 2 some case refused (bad input), 3 some case hit an internal error."""
        return 3 if self.internal_errors else 2 if self.failed else 0


# ------------------------------------------------------------------------------------------ the cases
def safe_name(text: str) -> str:
    """A folder name from a case id: letters, digits, ``.``, ``_``, ``-`` only; no leading dot."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._-")
    return name[:120] or "case"


def select_cases(schema: Any, manifest_path: str | os.PathLike, split: str | None = None,
                 splits_path: str | os.PathLike | None = None) -> list[BatchCase]:
    """The manifest's rows (checked against the model's clinical ``schema``), restricted to ``split`` (from
    ``splits_path`` when given, else the manifest's ``split`` column), as :class:`BatchCase` list."""
    from mmxai_core.data.manifest import SPLIT_NAMES, load_manifest

    manifest = load_manifest(manifest_path, schema, check_files=True, check_masks=False, min_cases_per_class=0)
    table = manifest.table
    positions = list(range(len(manifest)))
    if split is not None:
        if split not in SPLIT_NAMES:
            raise MMXAIError(f"--split: must be one of {', '.join(SPLIT_NAMES)}, got '{split}'")
        if splits_path is not None:
            from mmxai_core.data.splits import load_splits

            positions = [int(i) for i in load_splits(splits_path).indices(manifest)[split]]
        else:
            positions = [i for i in positions if table["split"].iloc[i] == split]
        if not positions:
            where = splits_path if splits_path is not None else f"the 'split' column of {manifest_path}"
            raise MMXAIError(f"--split {split}: no case of {manifest_path} is in split '{split}' ({where})")
    elif splits_path is not None:
        raise MMXAIError("--splits needs --split (train, val or test)")
    cases, used = [], set()
    for i in positions:
        rec = table.iloc[i]
        row = int(rec["row"])
        cid = rec.get("case_id") if "case_id" in table.columns else None
        base = safe_name(cid if isinstance(cid, str) and cid.strip() else f"{rec['patient_id']}-row{row}")
        if base in (BATCH_FILE, SUMMARY_CSV, SUMMARY_JSON, LOCK_FILE):
            base = f"{base}-case"
        name = base if base.casefold() not in used else f"{base}-row{row}"
        used.add(name.casefold())
        cases.append(BatchCase(name=name, image=str(rec["image"]), clinical=dict(manifest.records[i]),
                               patient_id=str(rec["patient_id"]), row=row,
                               label=None if rec.get("label") is None else str(rec["label"])))
    return cases


# ------------------------------------------------------------------------------------------ the folder
def batch_identity(model: CheckpointInfo | LoadedModel, manifest_path: str | os.PathLike, split: str | None,
                   splits_path: str | os.PathLike | None, options: ExplainOptions) -> dict[str, Any]:
    """What makes two batch runs the same batch (hashes, no paths): model weights, manifest and split
    file contents, split name, options, package version."""
    from mmxai_core.utils.files import sha256_file

    facts = {"weights_sha256": model.weights_sha256, "manifest_sha256": sha256_file(manifest_path),
             "split": split, "splits_sha256": sha256_file(splits_path) if splits_path else None,
             "options": options.to_dict(), "mmxai_core": __version__}
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()
    return {"format": BATCH_FORMAT, "notice": RESEARCH_USE_NOTICE, "batch_sha256": digest, **facts}


def prepare_batch_folder(out: Path, identity: dict[str, Any], force: bool) -> bool:
    """Make ``out`` ready; returns True when it resumes an earlier run of the same batch.

    Raises:
        MMXAIError: ``out`` is a file, holds another batch (without ``force``), or holds something that
            is not an mmxai-explain batch.
    """
    if out.exists() and not out.is_dir():
        raise MMXAIError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        try:
            previous = json.loads((out / BATCH_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict) or previous.get("format") != BATCH_FORMAT:
            raise MMXAIError(f"--out {out}: folder is not empty and holds no mmxai-explain batch; refusing to "
                             "use it (choose another folder)")
        if previous.get("batch_sha256") == identity["batch_sha256"]:
            return True
        if not force:
            raise MMXAIError(f"--out {out}: holds a batch of other inputs (model, manifest, split or options "
                             "differ); use --force to start afresh, or choose another folder")
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
        shutil.rmtree(old, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / BATCH_FILE, identity)
    return False


def acquire_lock(out: Path) -> Any:
    """An exclusive lock on ``out/.lock`` (POSIX ``flock``; None elsewhere): close the returned file to
    release it (the process ending releases it too).

    Raises:
        MMXAIError: another batch holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    fh = open(out / LOCK_FILE, "a+")  # noqa: SIM115 - held until run_batch ends
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise MMXAIError(f"--out {out}: another mmxai-explain batch is writing to this folder") from None
    return fh


# ------------------------------------------------------------------------------------------ the run
@dataclasses.dataclass
class BatchPlan:
    """A checked batch: its folder (ready and locked), the cases, which are still to do, its identity."""

    out: Path
    cases: list[BatchCase]
    pending: list[BatchCase]
    identity: dict[str, Any]
    classes: list[str]
    lock: Any = None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def plan_batch(model: CheckpointInfo | LoadedModel, manifest_path: str | os.PathLike, out_dir: str | os.PathLike,
               options: ExplainOptions | None = None, *, split: str | None = None,
               splits_path: str | os.PathLike | None = None, force: bool = False) -> BatchPlan:
    """Check the manifest, split and options, make the folder ready (lock it, remove partial folders of a
    killed run) and list the cases still to do. Needs only a :class:`CheckpointInfo` (no torch).

    Raises:
        MMXAIError: a bad manifest / split file / option, or an output folder that cannot be used.
    """
    options = options or ExplainOptions()
    check_metrics_available(options.metrics)
    schema = model.schema if isinstance(model, CheckpointInfo) else model.run.clinical.schema
    cases = select_cases(schema, manifest_path, split, splits_path)
    identity = batch_identity(model, manifest_path, split, splits_path, options)
    out = Path(out_dir)
    prepare_batch_folder(out, identity, force)
    lock = acquire_lock(out)
    remove_stale_partials(out, check_pid=False)   # locked: every partial folder here is a killed run's
    pending = [c for c in cases if not (out / c.name / RESULT_FILE).is_file()]
    return BatchPlan(out, cases, pending, identity, list(model.classes), lock)


def run_batch(model: LoadedModel | None, plan: BatchPlan, options: ExplainOptions | None = None, *,
              progress_bar: bool = True, log: Any = None) -> BatchSummary:
    """Explain the plan's pending cases into ``OUT/<case>/`` (see the module docstring), then write the
    summary; ``model`` may be None when nothing is pending. ``log(line)`` receives one line per refused
    case (default: stderr). Releases the plan's lock at the end."""
    from tqdm.auto import tqdm

    options = options or ExplainOptions()
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    out = plan.out
    rows: list[dict[str, Any]] = []
    computed = skipped = failed = internal = 0
    pending = {c.name for c in plan.pending}
    if pending and model is None:
        raise ValueError("run_batch: cases are pending but no model was given")
    bar = tqdm(total=len(plan.cases), initial=len(plan.cases) - len(pending), desc="mmxai-explain", unit="case",
               file=sys.stderr, disable=not progress_bar, dynamic_ncols=True)
    try:
        for case in plan.cases:
            if case.name not in pending:
                rows.append(_row(case, "complete (earlier run)", read_result(out / case.name)))
                skipped += 1
                continue
            tc = time.perf_counter()
            try:
                result = explain_to_folder(model, case.image, case.clinical, out / case.name, options,
                                           what=f"case {case.name}")
                rows.append(_row(case, "complete", result, time.perf_counter() - tc))
                computed += 1
            except MMXAIError as exc:
                failed += 1
                rows.append(_row(case, "refused", None, error=_first_line(exc)))
                say(f"mmxai-explain: case {case.name} (manifest row {case.row}): error: {_first_line(exc)}")
            except Exception as exc:  # noqa: BLE001 - one broken case must not stop the batch
                internal += 1
                rows.append(_row(case, "internal error", None, error=f"{type(exc).__name__}: {exc}"))
                say(f"mmxai-explain: case {case.name} (manifest row {case.row}): internal error: "
                    f"{type(exc).__name__}: {_first_line(exc)}")
            bar.update(1)
        summary = BatchSummary(out, rows, computed, skipped, failed, internal, time.perf_counter() - t0)
        write_summary(summary, plan.classes)
    finally:
        bar.close()
        plan.release()
    return summary


def explain_manifest(model: LoadedModel, manifest_path: str | os.PathLike, out_dir: str | os.PathLike,
                     options: ExplainOptions | None = None, *, split: str | None = None,
                     splits_path: str | os.PathLike | None = None, force: bool = False,
                     progress_bar: bool = True, log: Any = None) -> BatchSummary:
    """:func:`plan_batch` + :func:`run_batch` in one call (from Python)."""
    plan = plan_batch(model, manifest_path, out_dir, options, split=split, splits_path=splits_path, force=force)
    return run_batch(model, plan, options, progress_bar=progress_bar, log=log)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _row(case: BatchCase, status: str, result: dict[str, Any] | None, seconds: float | None = None,
         error: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"case": case.name, "patient_id": case.patient_id, "manifest_row": case.row,
                           "label": case.label, "status": status}
    if result:
        pred = result.get("prediction") or {}
        row["predicted"] = pred.get("class")
        for c, p in (pred.get("probabilities") or {}).items():
            row[f"p_{c}"] = p
        row["explained_class"] = pred.get("explained_class")
        fields = [f for f in (result.get("shapley") or {}).get("fields") or [] if not f.get("unknown")]
        if fields:
            top = max(fields, key=lambda f: abs(f.get("value") or 0.0))
            row["top_field"] = top.get("name")
            row["top_field_value"] = top.get("value")
        split = result.get("modality_split") or {}
        row["image_contribution"] = split.get("image")
        row["clinical_contribution"] = split.get("clinical")
        coh = result.get("coherence") or {}
        if isinstance(coh, dict) and coh.get("score") is not None:
            row["coherence"] = coh.get("score")
        row["seconds"] = round(seconds, 3) if seconds is not None else (result.get("timings_s") or {}).get("total")
        row["folder"] = case.name
    row["error"] = error
    return row


def write_summary(summary: BatchSummary, classes: Sequence[str]) -> None:
    """summary.csv (one row per case) and summary.json (counts + rows), atomically."""
    keys = ["case", "patient_id", "manifest_row", "label", "status", "predicted",
            *[f"p_{c}" for c in classes], "explained_class", "top_field", "top_field_value",
            "image_contribution", "clinical_contribution", "coherence", "seconds", "folder", "error"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in summary.rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})
    write_text_atomic(summary.out_dir / SUMMARY_CSV, buf.getvalue())
    write_json_atomic(summary.out_dir / SUMMARY_JSON, {
        "notice": RESEARCH_USE_NOTICE, "cases": len(summary.rows), "computed": summary.computed,
        "skipped_complete": summary.skipped, "refused": summary.failed, "internal_errors": summary.internal_errors,
        "seconds": round(summary.seconds, 3), "rows": summary.rows})


__all__ = ["BatchCase", "BatchPlan", "BatchSummary", "acquire_lock", "batch_identity", "explain_manifest",
           "plan_batch", "prepare_batch_folder", "run_batch", "safe_name", "select_cases", "write_summary"]
