"""Fingerprints: of image files (cache keys), of a cohort (the training data of a checkpoint), of JSON.

Research use, not for diagnosis.

A cohort fingerprint is a sha256 over one line per manifest row, sorted::

    <case key> \\t <class name> \\t <image digest> \\t <image bytes>

where the case key is the ``case_id`` cell, or ``patient_id/relative image path``, and the image digest
is :func:`image_digest` of the file or DICOM series folder. Only the hash and counts are stored: no
identifier, path or raw row leaves the machine in a checkpoint. Two manifests listing the same images
with the same labels (in any row order) have the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mmxai_core.errors import MMXAIError

_BLOCK = 1 << 20


@dataclass(frozen=True)
class FileDigest:
    """Digest of one image: ``sha256`` hex (content, or size+mtime with ``mode="size"``) and ``n_bytes``."""

    sha256: str
    n_bytes: int


def _hash_file(path: Path, digest: "hashlib._Hash") -> int:
    n = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
            n += len(block)
    return n


def image_digest(path: str | os.PathLike, mode: str = "content") -> FileDigest:
    """Digest of an image file, or of a folder (a DICOM series: every file below it, by relative name).

    ``mode="content"`` hashes the bytes; ``mode="size"`` hashes names, sizes and modification times only
    (fast, but a copy with new times gets a new digest).
    """
    p = Path(path)
    if mode not in ("content", "size"):
        raise ValueError(f"mode must be 'content' or 'size', got {mode!r}")
    digest = hashlib.sha256()
    try:
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        if not files:
            raise MMXAIError(f"{p}: no image file found")
        total = 0
        for f in files:
            rel = f.name if f == p else f.relative_to(p).as_posix()
            digest.update(rel.encode("utf-8") + b"\0")
            if mode == "content":
                total += _hash_file(f, digest)
            else:
                st = f.stat()
                digest.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
                total += st.st_size
            digest.update(b"\0")
    except OSError as exc:
        raise MMXAIError(f"{p}: cannot read the image to fingerprint it ({exc.strerror or exc})") from None
    return FileDigest(digest.hexdigest(), total)


def image_digests(paths: Sequence[str], mode: str = "content",
                  progress: Callable[[int, int], None] | None = None) -> dict[str, FileDigest]:
    """:func:`image_digest` of each distinct path, ``{path: FileDigest}``."""
    unique = list(dict.fromkeys(paths))
    out: dict[str, FileDigest] = {}
    for i, path in enumerate(unique):
        out[path] = image_digest(path, mode)
        if progress is not None:
            progress(i + 1, len(unique))
    return out


def case_keys(manifest: Any) -> list[str]:
    """A key per manifest row: ``case_id`` where given, else ``patient_id/<image path relative to the
    manifest's folder>`` (unique: the manifest refuses duplicate patient + image)."""
    keys = []
    root = Path(manifest.root)
    for pid, image, cid in zip(manifest.table["patient_id"], manifest.table["image"], manifest.table["case_id"]):
        if cid is not None:
            keys.append(str(cid))
            continue
        try:
            rel = Path(image).relative_to(root).as_posix()
        except ValueError:
            rel = Path(image).as_posix()
        keys.append(f"{pid}/{rel}")
    return keys


def cohort_fingerprint(manifest: Any, digests: dict[str, FileDigest], rows: Sequence[int] | None = None
                       ) -> dict[str, Any]:
    """Fingerprint of the manifest rows ``rows`` (default all): ``{"sha256", "n_cases", "n_patients",
    "class_counts" {class: cases}, "digest_mode"}`` (formula: module docstring)."""
    keys = case_keys(manifest)
    table = manifest.table
    idx = range(len(table)) if rows is None else [int(r) for r in rows]
    lines = []
    counts = {c: 0 for c in manifest.classes}
    patients = set()
    for i in idx:
        image = table["image"].iat[i]
        d = digests[image]
        label = table["label"].iat[i]
        counts[label] += 1
        patients.add(table["patient_id"].iat[i])
        lines.append(f"{keys[i]}\t{label}\t{d.sha256}\t{d.n_bytes}")
    text = "\n".join(sorted(lines)) + "\n"
    return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "n_cases": len(lines),
            "n_patients": len(patients), "class_counts": counts}


def json_sha256(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no spaces)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


__all__ = ["FileDigest", "image_digest", "image_digests", "case_keys", "cohort_fingerprint", "json_sha256"]
