"""Checkpoints are data, not code: a folder with ``weights.safetensors`` and ``metadata.json``.

``metadata.json`` holds ``format`` ("mmxai-checkpoint"), ``format_version``, ``package_version``,
``model_config`` (:meth:`ModelConfig.to_dict`) and ``weights_sha256``, plus whatever the caller adds
(clinical schema and fitted preprocessing, image preprocessing, class names, threshold, metrics, ...).

Saving is atomic at the folder level: everything is written into a temporary sibling folder, flushed,
then renamed into place; an existing checkpoint is first renamed aside and removed only once the new one
is in place (a crash in between leaves ``.<name>.old-*`` beside it, which :func:`load_checkpoint` points
to). Loading never unpickles: pickle and zip (``torch.save``) files are refused by extension and by their
magic bytes before anything reads them as data.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import uuid
from pathlib import Path
from typing import Any, Mapping

import torch

from mmxai_core.errors import CheckpointError
from mmxai_core.model.config import ModelConfig
from mmxai_core.model.multimodal import MultimodalClassifier
from mmxai_core.model.variants import create_model
from mmxai_core.utils.files import fsync_file, sha256_file

FORMAT_NAME = "mmxai-checkpoint"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
WEIGHTS_FILE = "weights.safetensors"
METADATA_FILE = "metadata.json"
RESERVED_KEYS = ("format", "format_version", "package_version", "model_config", "weights_sha256")
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar")
_MAX_HEADER = 100 * 1024 * 1024


# ---------------------------------------------------------------------------------------------- save
def save_checkpoint(directory: str | os.PathLike, model: MultimodalClassifier,
                    metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` and ``metadata`` (JSON-able; keys in ``RESERVED_KEYS`` are ours) to ``directory``.

    Replaces an existing checkpoint folder; refuses (CheckpointError) to replace a folder holding anything
    else. Returns the folder path.
    """
    directory = Path(directory)
    for attr in ("module", "_orig_mod"):  # DistributedDataParallel / torch.compile wrappers
        inner = getattr(model, attr, None)
        if isinstance(inner, MultimodalClassifier):
            model = inner
    if not isinstance(getattr(model, "config", None), ModelConfig):
        raise TypeError("save_checkpoint needs a model built by create_model (with a .config)")
    extra = dict(metadata or {})
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"metadata key(s) {clash} are written by save_checkpoint itself")
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint metadata is not JSON-serialisable: {exc}") from exc
    if directory.exists() and not _replaceable(directory):
        raise CheckpointError(f"{directory}: exists and is not an MMXAI checkpoint; refusing to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        _write_contents(tmp, model, extra)
        _swap_in(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _write_contents(folder: Path, model: MultimodalClassifier, extra: dict) -> None:
    from safetensors.torch import save_file

    from mmxai_core import __version__

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = folder / WEIGHTS_FILE
    save_file(state, str(weights), metadata={"format": "pt"})
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "package_version": __version__,
            "model_config": model.config.to_dict(), "weights_sha256": sha256_file(weights), **extra}
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name in (WEIGHTS_FILE, METADATA_FILE):
        fsync_file(folder / name)


def _swap_in(tmp: Path, directory: Path) -> None:
    if not directory.exists():
        os.replace(tmp, directory)
    else:
        old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(directory, old)
        try:
            os.replace(tmp, directory)
        except BaseException:
            os.replace(old, directory)
            raise
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(directory.parent)


def _replaceable(directory: Path) -> bool:
    if not directory.is_dir():
        return False
    names = {p.name for p in directory.iterdir()}
    if names <= {WEIGHTS_FILE, METADATA_FILE}:
        return True
    try:
        meta = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT_NAME


# ---------------------------------------------------------------------------------------------- load
def load_checkpoint(directory: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> tuple[MultimodalClassifier, dict[str, Any]]:
    """Read a checkpoint folder -> ``(model in eval mode on device, metadata dict)``.

    Raises CheckpointError naming the file and the problem for: a missing folder or file; a pickle / zip /
    ``.pt`` / ``.pth`` / ``.pkl`` file (never unpickled); a metadata.json that is not JSON, not ours, of an
    unknown format version or with an invalid model config; a missing, truncated or corrupt
    weights.safetensors; weights that do not fit the model config (missing/unexpected tensors, shapes).
    """
    path = Path(directory)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found{_interrupted_hint(path)}")
    if path.is_file():
        _refuse_pickle_file(path)
        if path.name not in (WEIGHTS_FILE, METADATA_FILE):
            raise CheckpointError(f"{path}: not an MMXAI checkpoint (expected a folder with {WEIGHTS_FILE} "
                                  f"and {METADATA_FILE})")
        path = path.parent
    meta_path, weights_path = path / METADATA_FILE, path / WEIGHTS_FILE
    meta = _read_metadata(meta_path)
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file missing{_pickles_hint(path)}")
    state = _read_weights(weights_path, meta["weights_sha256"])
    try:
        config = ModelConfig.from_dict(meta["model_config"])
        model = create_model(config)
    except ValueError as exc:
        raise CheckpointError(f"{meta_path}: invalid model_config: {exc}") from exc
    _check_state(model, state, weights_path, meta_path)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta


def _read_metadata(meta_path: Path) -> dict[str, Any]:
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path}: metadata file missing{_pickles_hint(meta_path.parent)}")
    _refuse_pickle_magic(meta_path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{meta_path}: not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                              f"{exc.msg})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{meta_path}: 'format' is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    version = meta.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS or isinstance(version, bool):
        raise CheckpointError(f"{meta_path}: unknown format_version {version!r} (this mmxai-core reads "
                              f"{list(SUPPORTED_FORMAT_VERSIONS)}); a newer mmxai-core may be needed")
    for key in ("model_config", "weights_sha256"):
        if key not in meta:
            raise CheckpointError(f"{meta_path}: '{key}' missing")
    if not isinstance(meta["model_config"], dict):
        raise CheckpointError(f"{meta_path}: 'model_config' must be a JSON object")
    return meta


def _read_weights(weights_path: Path, expected_sha: Any) -> dict[str, torch.Tensor]:
    _check_safetensors_layout(weights_path)
    if sha256_file(weights_path) != expected_sha:
        raise CheckpointError(f"{weights_path}: contents do not match 'weights_sha256' in {METADATA_FILE} "
                              "(modified, corrupt, or from another checkpoint)")
    from safetensors.torch import load_file

    try:
        return load_file(str(weights_path), device="cpu")
    except Exception as exc:  # safetensors' own error type
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({exc})") from exc


def _check_safetensors_layout(path: Path) -> None:
    """Header length, JSON header and data size (a truncated file is caught here, with numbers)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(9)
        if len(head) < 9:
            raise CheckpointError(f"{path}: truncated ({size} bytes; not even a safetensors header)")
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] != b"{" or n > _MAX_HEADER:
            _refuse_pickle_magic(path)
            raise CheckpointError(f"{path}: not a safetensors file (bad header)")
        if 8 + n > size:
            raise CheckpointError(f"{path}: truncated (header needs {8 + n} bytes, file has {size})")
        fh.seek(8)
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                      default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise CheckpointError(f"{path}: not a safetensors file (header: {exc})") from exc
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: truncated (tensor data needs {8 + n + end} bytes, file has {size})")


def _check_state(model: torch.nn.Module, state: dict[str, torch.Tensor], weights_path: Path,
                 meta_path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"'{k}' {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
             for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} with wrong shape (e.g. {'; '.join(wrong[:3])})")
        raise CheckpointError(f"{weights_path}: does not fit the model_config in {meta_path.name}: "
                              + ", ".join(parts))


# ---------------------------------------------------------------------------------------------- pickle guard
def sniff_pickle(path: str | os.PathLike) -> str | None:
    """'zip' (torch.save archive), 'pickle' (protocol 2+) or None, from the first bytes only."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return None


def _refuse_pickle_file(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path}: '{path.suffix}' files are pickles and are never loaded (they can run "
                              f"code); MMXAI checkpoints are a folder with {WEIGHTS_FILE} and {METADATA_FILE}")
    _refuse_pickle_magic(path)


def _refuse_pickle_magic(path: Path) -> None:
    kind = sniff_pickle(path)
    if kind is not None:
        raise CheckpointError(f"{path}: is a {kind} file (a PyTorch/pickle checkpoint), refused without "
                              "unpickling: it could run code")


def _pickles_hint(folder: Path) -> str:
    try:
        found = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    except OSError:
        return ""
    return f" (found {found}: pickle checkpoints are never loaded)" if found else ""


def _interrupted_hint(path: Path) -> str:
    olds = sorted(path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []
    return f" (an interrupted save left the previous checkpoint at {olds[-1]})" if olds else ""


# ---------------------------------------------------------------------------------------------- bytes


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
