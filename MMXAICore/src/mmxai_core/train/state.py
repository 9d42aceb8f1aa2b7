"""The run folder and the resumable training state. Never pickle, never ``torch.save``.

Research use, not for diagnosis.

Run folder (:class:`RunFolder`)::

    RUN_DIR/run.json               identity (manifest fingerprint + config hash) and status
    RUN_DIR/config.resolved.yaml   the resolved configuration
    RUN_DIR/splits.json            the splits, made once (reused by --resume and by --splits)
    RUN_DIR/log.csv                one row per finished epoch
    RUN_DIR/state/                 training state after the last finished epoch (below)
    RUN_DIR/cache/                 preprocessed images (data.cache = disk)
    RUN_DIR/checkpoint/            the released checkpoint (weights.safetensors + metadata.json)
    RUN_DIR/predictions/           val.csv, test.csv: per-case probabilities
    RUN_DIR/metrics.json, metrics.md

Every file goes through :meth:`RunFolder.write_text` / :meth:`RunFolder.write_json` (atomic: temporary
name, then rename) and only on the main process of a process group.

Training state (``RUN_DIR/state/``): tensors in safetensors files, everything else in ``state.json``::

    model-e0007.safetensors        model weights after epoch 7
    optimizer-e0007.safetensors    AdamW tensors (exp_avg, exp_avg_sq, step) as "<param index>.<name>"
    model-e0005.safetensors        kept while epoch 5 holds the best validation loss (the "best_model")
    state.json                     epoch, global step, schedule, early stopping, best validation loss,
                                   scaler, optimizer hyper-parameters, RNG states (base64 / lists),
                                   history, config hash, sha256 of each tensor file

``state.json`` is replaced last (atomically), so it always describes complete files; files it no longer
names are removed afterwards. A crash at any point leaves the previous epoch's state intact.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from mmxai_core.errors import MMXAIError
from mmxai_core.utils.atomic import atomic_path, write_json_atomic, write_text_atomic
from mmxai_core.utils.files import fsync_file, sha256_file

RUN_FORMAT = "mmxai.train_run"
STATE_FORMAT = "mmxai.train_state"
STATE_VERSION = 1
STATE_FILE = "state.json"
#: Entries of a run folder that belong to mmxai-train (``--force`` removes these and nothing else).
RUN_ENTRIES = ("run.json", "config.resolved.yaml", "splits.json", "log.csv", "state", "cache", "checkpoint",
               "predictions", "metrics.json", "metrics.md")


class RunFolderError(MMXAIError):
    """The output folder cannot be used for this run (holds another run, nothing to resume, ...)."""


class StateError(MMXAIError):
    """The saved training state is missing, incomplete or does not fit this run."""


# ---------------------------------------------------------------------------------------------- run folder
#: safetensors (>= 0.6, Rust ``tempfile``) writes a file as ``.tmp<6 random characters>`` beside it, then
#: renames it: a kill during ``save_file`` leaves one of these behind (in ``state/``)
_SAFETENSORS_TMP = re.compile(r"\.tmp[A-Za-z0-9_]{6}")


def is_leftover(path: Path) -> bool:
    """A hidden temporary entry of an interrupted write: ``.<name>.<random>.tmp`` (utils.atomic),
    ``.<name>.tmp-<random>`` or ``.<name>.old-<random>`` (checkpoint folder swaps), ``.tmp<random>``
    (safetensors' own temporary file)."""
    name = path.name
    return name.startswith(".") and (name.endswith(".tmp") or ".tmp." in name or ".tmp-" in name
                                     or ".old-" in name or _SAFETENSORS_TMP.fullmatch(name) is not None)


class RunFolder:
    """Paths and writes of one run folder; writes happen on the main process only (``runtime``)."""

    def __init__(self, path: str | os.PathLike, runtime: Any = None):
        self.path = Path(path)
        self.runtime = runtime

    # paths
    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def state_dir(self) -> Path:
        return self.path / "state"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoint"

    @property
    def is_main(self) -> bool:
        return self.runtime is None or self.runtime.is_main_process

    # identity
    def read_run_info(self) -> dict[str, Any] | None:
        """``run.json`` as a dict, or None if there is none; RunFolderError if it is unreadable."""
        f = self.path / "run.json"
        if not f.is_file():
            return None
        try:
            info = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"{f}: unreadable run file ({exc}); use --force to start over") from None
        if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
            raise RunFolderError(f"{f}: not an mmxai-train run file; choose another --out or use --force")
        return info

    def decide(self, identity: Mapping[str, str], resume: bool, force: bool) -> str:
        """How to use the folder: ``"new"`` (missing or empty), ``"resume"`` or ``"restart"`` (``--force``).

        ``identity`` is ``{"manifest_sha256": ..., "config_sha256": ...}``. Reads only; raises
        RunFolderError with a one-line reason when the folder holds a different run (without ``--force``),
        holds this run already (without ``--resume`` / ``--force``), or has nothing to resume.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path}: exists and is not a folder")
        empty = not self.path.exists() or not any(self.path.iterdir())
        if empty:
            if resume:
                raise RunFolderError(f"{self.path}: no run to resume (the folder is empty or missing)")
            return "new"
        if not force and self.interrupted_before_start():
            return "new"  # killed before run.json was written: nothing to resume, nothing to protect
        if force:
            if resume:
                raise RunFolderError("--resume and --force exclude each other")
            return "restart"
        info = self.read_run_info()
        if info is None:
            raise RunFolderError(f"{self.path}: is not empty and holds no mmxai-train run; choose another "
                                 "--out or pass --force")
        differs = [what for key, what in (("manifest_sha256", "manifest fingerprint"),
                                           ("config_sha256", "configuration"))
                   if info.get(key) != identity.get(key)]
        if differs:
            action = "--resume continues only the same run" if resume else "choose another --out or pass --force"
            raise RunFolderError(f"{self.path}: holds a different run ({' and '.join(differs)} differ); {action}")
        if resume:
            return "resume"
        status = info.get("status", "running")
        if status == "complete":
            raise RunFolderError(f"{self.path}: already holds this finished run; pass --force to train again")
        raise RunFolderError(f"{self.path}: holds an unfinished run of this configuration; continue it with "
                             "--resume or start over with --force")

    def interrupted_before_start(self) -> bool:
        """True when the folder holds only what a run killed before writing ``run.json`` leaves behind:
        temporary files of atomic writes and (part of) the image cache."""
        if (self.path / "run.json").exists():
            return False
        return all(is_leftover(p) or (p.name == "cache" and p.is_dir()) for p in self.path.iterdir())

    def remove_leftovers(self) -> list[str]:
        """Remove what an interrupted run left behind (temporary files of atomic writes, half-written
        checkpoint folders); a checkpoint that was moved aside while its replacement was being written is
        put back when the replacement never arrived. Returns the relative paths removed. Main process only."""
        removed: list[str] = []
        if not self.is_main or not self.path.is_dir():
            return removed
        folders = [self.path] + [self.path / n for n in ("state", "cache", "predictions", "checkpoint")
                                 if (self.path / n).is_dir()]
        for folder in folders:
            for p in sorted(folder.iterdir()):
                if not is_leftover(p):
                    continue
                ckpt = self.checkpoint_dir
                if p.parent == self.path and p.name.startswith(f".{ckpt.name}.old-") and not ckpt.exists():
                    os.replace(p, ckpt)  # the previous complete checkpoint, moved aside by an interrupted save
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(str(p.relative_to(self.path)))
        return removed

    def clear(self) -> None:
        """Remove mmxai-train's entries (:data:`RUN_ENTRIES`) from the folder; other files stay."""
        if not self.is_main or not self.path.is_dir():
            return
        for name in RUN_ENTRIES:
            p = self.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()

    # writes (main process only, atomic)
    def write_text(self, name: str, text: str) -> Path:
        dest = self.path / name
        if self.is_main:
            write_text_atomic(dest, text)
        return dest

    def write_json(self, name: str, obj: Any) -> Path:
        dest = self.path / name
        if self.is_main:
            write_json_atomic(dest, obj)
        return dest

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a writer function on the main process only (None elsewhere)."""
        return fn(*args, **kwargs) if self.is_main else None


# ---------------------------------------------------------------------------------------------- RNG
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _from_b64(text: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy())


def capture_rng() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and Python RNG states as JSON-safe data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch_cpu": _b64(torch.get_rng_state()),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["torch_cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only where this machine has the same devices)."""
    torch.set_rng_state(_from_b64(state["torch_cpu"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("torch_cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_from_b64(s) for s in cuda])


# ---------------------------------------------------------------------------------------------- optimizer
def optimizer_to_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``"<param index>.<name>"``) and JSON (param groups,
    non-tensor per-parameter values)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, values in sd["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = []
    for g in sd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    return tensors, {"param_groups": groups, "scalars": scalars, "tuple_keys": sorted(
        {k for g in sd["param_groups"] for k, v in g.items() if isinstance(v, tuple)})}


def optimizer_from_state(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor],
                         meta: Mapping[str, Any]) -> None:
    """Load what :func:`optimizer_to_state` produced into ``optimizer`` (tensors move to its device)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    tuple_keys = set(meta.get("tuple_keys", []))
    groups = [{k: (tuple(v) if k in tuple_keys else v) for k, v in g.items()} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------------------------------------- files


def state_dict_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict as contiguous CPU tensors (cloned: later training does not change it)."""
    for attr in ("module", "_orig_mod"):  # DDP / torch.compile wrappers
        module = getattr(module, attr, module)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def save_training_state(state_dir: str | os.PathLike, epoch: int, groups: Mapping[str, Mapping[str, torch.Tensor]],
                        meta: Mapping[str, Any], refs: Mapping[str, str] | None = None) -> Path:
    """Write one epoch's state: each ``groups[name]`` to ``<name>-e<epoch>.safetensors``, then
    ``state.json`` = ``meta`` + ``files`` (name -> file, including ``refs``: extra names pointing at a group
    written now, e.g. ``{"best_model": "model"}``, or at a file kept from an earlier epoch, e.g.
    ``{"best_model": "model-e0005.safetensors"}``) + their sha256. Removes
    tensor files no longer named. Returns the path of ``state.json``."""
    from safetensors.torch import save_file

    folder = Path(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for name, tensors in groups.items():
        fname = f"{name}-e{epoch:04d}.safetensors"
        with atomic_path(folder / fname) as tmp:
            save_file(dict(tensors), str(tmp), metadata={"format": "pt"})
            fsync_file(tmp)
        files[name] = fname
    for name, target in (refs or {}).items():
        fname = files.get(target, target)  # a group written now, or a file kept from an earlier epoch
        if not (folder / fname).is_file():
            raise StateError(f"{folder / fname}: state file to keep is missing")
        files[name] = fname
    digests = {fname: sha256_file(folder / fname) for fname in set(files.values())}
    doc = {"format": STATE_FORMAT, "version": STATE_VERSION, **dict(meta), "epoch": int(epoch), "files": files,
           "sha256": digests}
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    with atomic_path(folder / STATE_FILE) as tmp:
        tmp.write_text(text, encoding="utf-8")
        fsync_file(tmp)
    keep = set(files.values()) | {STATE_FILE}
    for p in folder.iterdir():
        if p.name not in keep and p.suffix == ".safetensors":
            p.unlink(missing_ok=True)
    return folder / STATE_FILE


def load_training_state(state_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]] | None:
    """``(meta, {name: tensors})`` of the last saved epoch, or None if no state was saved yet.

    Raises:
        StateError: unreadable ``state.json``, a missing or modified tensor file.
    """
    from safetensors.torch import load_file

    folder = Path(state_dir)
    f = folder / STATE_FILE
    if not f.is_file():
        return None
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StateError(f"{f}: unreadable training state ({exc}); start over with --force") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise StateError(f"{f}: not an mmxai-train state file")
    if meta.get("version") != STATE_VERSION:
        raise StateError(f"{f}: state version {meta.get('version')!r} is not supported (this is {STATE_VERSION})")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    loaded: dict[str, dict[str, torch.Tensor]] = {}
    for name, fname in meta.get("files", {}).items():
        p = folder / fname
        if not p.is_file():
            raise StateError(f"{p}: training state file missing; start over with --force")
        if fname not in loaded:
            if sha256_file(p) != meta.get("sha256", {}).get(fname):
                raise StateError(f"{p}: does not match its sha256 in {STATE_FILE} (modified or corrupt)")
            loaded[fname] = load_file(str(p), device="cpu")
        groups[name] = loaded[fname]
    return meta, groups


__all__ = ["RunFolder", "RunFolderError", "StateError", "RUN_FORMAT", "RUN_ENTRIES", "capture_rng",
           "restore_rng", "optimizer_to_state", "optimizer_from_state", "state_dict_cpu",
           "save_training_state", "load_training_state"]
