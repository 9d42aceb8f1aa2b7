"""File helpers shared by the checkpoint and training-state writers: content hashes and fsync."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: str | os.PathLike, block_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``block_size`` blocks (bounded memory)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to disk (so a rename after it cannot expose an empty file)."""
    with Path(path).open("rb") as fh:
        os.fsync(fh.fileno())
