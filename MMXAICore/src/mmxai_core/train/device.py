"""Where training runs: device choice, mixed precision, and the process's place in a (future) group.

Research use, not for diagnosis.

:class:`Runtime` is the one object that knows the device, the autocast dtype, and the rank / world size.
Everything that differs between one process and a ``torchrun`` group goes through it: only the main
process writes files (:meth:`Runtime.main_only`), shows progress bars and logs; sums and gathers go through
:meth:`Runtime.all_reduce_sum` / :meth:`Runtime.gather_arrays`; the early-stopping decision through
:meth:`Runtime.agree`; the model is wrapped by :meth:`Runtime.wrap_model` and its buffers (BatchNorm
running statistics) made equal by :meth:`Runtime.sync_buffers`. In one process they are identities;
:mod:`mmxai_core.train.distributed` (DDP: gloo on CPU, nccl on GPU) returns a Runtime whose methods talk
to the process group.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import torch

from mmxai_core.errors import MMXAIError

T = TypeVar("T")


class DeviceError(MMXAIError):
    """A device was asked for that this machine does not have."""


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, then MPS, then CPU; ``cpu`` / ``cuda`` / ``mps`` forced.

    Raises:
        DeviceError: ``cuda`` or ``mps`` asked for but not available (one line, e.g. "CUDA requested
            but not available").
    """
    name = str(requested).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            built = "" if torch.backends.cuda.is_built() else " (this torch build has no CUDA)"
            raise DeviceError(f"CUDA requested but not available{built}")
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise DeviceError("MPS requested but not available")
        return torch.device("mps")
    raise DeviceError(f"unknown device {requested!r}; use auto, cpu, cuda or mps")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``amp`` (``auto`` | ``off`` | ``bf16`` | ``fp16``) on ``device``; None = full fp32.

    ``auto``: CUDA -> bf16 where the GPU supports it, else fp16 (with a gradient scaler); CPU and MPS ->
    off (fp32). ``bf16`` / ``fp16`` on a CPU are refused (slow or unsupported there).
    """
    if amp == "off":
        return None
    if device.type != "cuda":
        if amp == "auto":
            return None
        raise DeviceError(f"mixed precision '{amp}' needs a CUDA device (running on {device.type}); "
                          "use train.amp=off or auto")
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


@dataclasses.dataclass
class Runtime:
    """The device, the autocast dtype and this process's rank in its group (0 of 1 without torchrun)."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    rank: int = 0
    world_size: int = 1

    @property
    def is_main_process(self) -> bool:
        """True for the process that writes files and shows progress (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def uses_grad_scaler(self) -> bool:
        """fp16 autocast needs loss scaling; bf16 and fp32 do not."""
        return self.amp_dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def main_only(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Call ``fn`` on the main process only (every file write goes through here); None elsewhere."""
        if self.is_main_process:
            return fn(*args, **kwargs)
        return None

    # ---------------------------------------------------------------- collectives (identities here)
    def barrier(self) -> None:
        """Wait for every process of the group (nothing to wait for in one process)."""

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of ``values`` over the group (a float64 tensor, any shape)."""
        return values

    def gather_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Concatenate each array over the group along axis 0, in rank order."""
        return arrays

    def agree(self, flag: bool) -> bool:
        """One decision for the whole group (the main process's), e.g. to stop early."""
        return bool(flag)

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training step calls (DistributedDataParallel in a group; ``model`` itself here)."""
        return model

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Make ``module``'s buffers (BatchNorm running statistics) the main process's on every rank."""

    def describe(self) -> str:
        """e.g. ``cuda:0 (bf16)`` or ``cpu (fp32, 2 threads)``."""
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        extra = f", {torch.get_num_threads()} CPU thread(s)" if self.device.type == "cpu" else ""
        name = str(self.device)
        if self.device.type == "cuda":
            name = f"{name} {torch.cuda.get_device_name(self.device)}"
        ranks = f", rank {self.rank}/{self.world_size}" if self.distributed else ""
        return f"{name} ({precision}{extra}{ranks})"


def make_runtime(device: str = "auto", amp: str = "auto", threads: int | None = None) -> Runtime:
    """The single-process :class:`Runtime`: resolve the device and precision, set CPU threads."""
    dev = resolve_device(device)
    dtype = resolve_amp(amp, dev)
    if threads is not None:
        torch.set_num_threads(int(threads))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = False  # reproducible kernel choice
    return Runtime(device=dev, amp_dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (for honest timings); no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@contextlib.contextmanager
def timed(device: torch.device, sink: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall time of the block (after a device sync) to ``sink[key]`` in seconds."""
    import time

    start = time.perf_counter()
    try:
        yield
    finally:
        synchronize(device)
        sink[key] = sink.get(key, 0.0) + time.perf_counter() - start


__all__ = ["Runtime", "DeviceError", "resolve_device", "resolve_amp", "make_runtime", "synchronize", "timed"]
