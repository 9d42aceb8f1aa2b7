"""Data-parallel training with ``torchrun``: a :class:`~mmxai_core.train.device.Runtime` that talks to
the process group (DDP: gloo on the CPU, nccl on CUDA GPUs).

Research use, not for diagnosis.

Launch (one machine, N processes; the options after the module are ``mmxai-train``'s)::

    torchrun --nproc_per_node=N -m mmxai_core.cli.train --manifest M.csv --schema S.yaml --out RUN ...
    torchrun --nproc_per_node=N -m mmxai_core.train.distributed ...        # the same entry point

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`runtime_from_env` reads them (without them, or with ``WORLD_SIZE=1``, it returns the ordinary
single-process runtime). What changes in a group, and where:

* **Batches**: ``train.batch_size`` is per process; the global batch is ``batch_size x N``. Each rank takes
  every N-th position of the epoch's seeded permutation (:class:`~mmxai_core.data.dataset.EpochSampler`
  with ``rank`` / ``world_size``, the job of torch's DistributedSampler), padded by wrapping around so every
  rank takes the same number of steps. Step k of rank r sees positions ``k*B*N + r, + N, ...``: together
  the ranks see exactly the cases of step k of a single-process run with batch ``B*N``.
* **Gradients**: :class:`torch.nn.parallel.DistributedDataParallel` averages them over the ranks, with
  ``find_unused_parameters=True``: the variants without a clinical or image branch, and the learned
  missing-image token (used only in steps where an image was dropped), leave parameters without a
  gradient in some steps.
* **BatchNorm**: statistics are per rank during a step (SyncBatchNorm needs a GPU); DDP copies rank 0's
  running statistics to the others before every forward, and :meth:`DistributedRuntime.sync_buffers` does
  so after each epoch, so every rank validates and releases the same model.
* **Validation counts each case once**: every rank predicts its shard, :meth:`gather_arrays` joins the
  shards and :func:`~mmxai_core.train.predict.predict` drops the wrap-around duplicates by dataset index.
  The validation loss, AUC and the early-stopping state are therefore the same on every rank, and
  :meth:`agree` still broadcasts rank 0's stop decision so no rank can leave the loop alone.
* **Files**: only rank 0 writes (:class:`~mmxai_core.train.state.RunFolder`); every rank reads the
  manifest and preprocesses (or reads the disk cache) itself, so bad input fails on every rank alike.

Equivalence with one process: with batch ``B`` on N ranks against ``B*N`` in one process, the cases of
every step are the same, but the result matches only where nothing depends on the split of the batch:
per-rank BatchNorm statistics (the image trunk), the per-batch draws of clinical masking / image dropout
and dropout, class-weighted losses (normalised per rank) and an odd training-set size (padding) make it
differ. Without those (e.g. the ``clinical_only`` variant with dropout, masking and class weights off and
an even number of training cases) the weights agree to float rounding (tested).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from typing import Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist

from mmxai_core.train.device import DeviceError, Runtime, make_runtime, resolve_amp, resolve_device

#: Seconds a collective waits for the other ranks before the group fails (override: MMXAI_DIST_TIMEOUT_S).
DEFAULT_TIMEOUT_S = 1800


def world_size_from_env(env: Mapping[str, str] | None = None) -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent)."""
    env = os.environ if env is None else env
    try:
        return max(1, int(env.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank_from_env(env: Mapping[str, str] | None = None) -> int:
    """``RANK`` set by torchrun (0 when absent)."""
    env = os.environ if env is None else env
    try:
        return int(env.get("RANK", "0"))
    except ValueError:
        return 0


@dataclasses.dataclass
class DistributedRuntime(Runtime):
    """A :class:`Runtime` in an initialised process group (see the module docstring)."""

    backend: str = "gloo"
    local_rank: int = 0

    @property
    def comm_device(self) -> torch.device:
        """Where collective tensors live: the GPU for nccl, the CPU for gloo."""
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks (float64, returned on the CPU)."""
        t = values.detach().to(self.comm_device, dtype=torch.float64).clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu()

    def gather_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Concatenate numeric arrays over the ranks along axis 0, in rank order (shards may differ in length)."""
        out: dict[str, np.ndarray] = {}
        for key in sorted(arrays):
            local = np.ascontiguousarray(arrays[key])
            if local.dtype == object:
                raise TypeError(f"gather_arrays: '{key}' is an object array; only numeric arrays can be gathered")
            t = torch.from_numpy(local).to(self.comm_device)
            n = torch.tensor([t.shape[0]], dtype=torch.int64, device=self.comm_device)
            sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
            dist.all_gather(sizes, n)
            counts = [int(s.item()) for s in sizes]
            longest = max(counts)
            if t.shape[0] < longest:
                pad = torch.zeros((longest - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
                t = torch.cat([t, pad])
            parts = [torch.empty_like(t) for _ in range(self.world_size)]
            dist.all_gather(parts, t.contiguous())
            out[key] = np.concatenate([p[:c].cpu().numpy() for p, c in zip(parts, counts)])
        return out

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank."""
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.comm_device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``DistributedDataParallel(model, find_unused_parameters=True)`` (parameters broadcast from rank 0)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index or 0] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None,
                                       find_unused_parameters=True, broadcast_buffers=True)

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Broadcast rank 0's buffers (BatchNorm running statistics) to every rank, in place."""
        for buf in module.buffers():
            if buf.device == self.comm_device:
                dist.broadcast(buf.data, src=0)
            else:
                tmp = buf.data.to(self.comm_device)
                dist.broadcast(tmp, src=0)
                buf.data.copy_(tmp.to(buf.device))


def init_distributed(device: str = "auto", amp: str = "auto", threads: int | None = None,
                     backend: str | None = None, timeout_s: float | None = None,
                     env: Mapping[str, str] | None = None) -> DistributedRuntime:
    """Join the process group described by torchrun's environment and return its runtime.

    Device: ``auto`` / ``cuda`` -> ``cuda:LOCAL_RANK`` with nccl when CUDA is available; otherwise the CPU
    with gloo. ``threads`` (CPU) defaults to the cores divided by the processes on this machine.

    Raises:
        DeviceError: a device was asked for that is absent, or MPS (no DDP backend).
    """
    env = os.environ if env is None else env
    world = world_size_from_env(env)
    rank = rank_from_env(env)
    local_rank = int(env.get("LOCAL_RANK", str(rank)))
    local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    dev = resolve_device(device)
    if dev.type == "mps":
        raise DeviceError("distributed training on MPS is not supported; use --device cpu")
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = False
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cpu":
        torch.set_num_threads(int(threads) if threads else max(1, (os.cpu_count() or 1) // max(1, local_world)))
    elif threads:
        torch.set_num_threads(int(threads))
    timeout = float(timeout_s if timeout_s is not None else env.get("MMXAI_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout))
    return DistributedRuntime(device=dev, amp_dtype=resolve_amp(amp, dev), rank=rank, world_size=world,
                              backend=backend, local_rank=local_rank)


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def runtime_from_env(device: str = "auto", amp: str = "auto", threads: int | None = None) -> Iterator[Runtime]:
    """The runtime for this process: distributed under torchrun (``WORLD_SIZE`` > 1), else single-process.

    The process group is left when the block ends.
    """
    if world_size_from_env() <= 1:
        yield make_runtime(device, amp, threads)
        return
    rt = init_distributed(device, amp, threads)
    try:
        yield rt
    finally:
        shutdown()


def main(argv=None) -> int:
    """``python -m mmxai_core.train.distributed ...`` (under torchrun): the ``mmxai-train`` command line."""
    from mmxai_core.cli.train import main as train_main

    return train_main(argv)


__all__ = ["DistributedRuntime", "init_distributed", "shutdown", "runtime_from_env", "world_size_from_env",
           "rank_from_env", "DEFAULT_TIMEOUT_S"]


if __name__ == "__main__":
    import sys

    sys.exit(main())
