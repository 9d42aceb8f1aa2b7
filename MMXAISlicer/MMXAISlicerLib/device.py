"""Which GPU the worker could use and how much memory it has free, without importing torch here.

``nvidia-smi`` (installed with every NVIDIA driver) answers in ~0.1 s; on Apple silicon the worker can use
``mps``. The worker itself decides what "auto" means; the panel only offers the choice and warns when a GPU
has little free memory (the most common cause of a failed run), suggesting the CPU.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

LOW_FREE_MIB = 2048
"""Below this much free GPU memory the panel suggests the CPU."""


@dataclass
class GpuInfo:
    name: str
    backend: str  # cuda | mps
    free_mib: float | None = None
    total_mib: float | None = None

    @property
    def low_memory(self) -> bool:
        return self.free_mib is not None and self.free_mib < LOW_FREE_MIB

    def label(self) -> str:
        if self.free_mib is None:
            return f"GPU: {self.name}"
        return f"GPU: {self.name} ({self.free_mib / 1024:.1f} GiB free)"


def probe_gpus(run: Callable = subprocess.run, which: Callable = shutil.which) -> list[GpuInfo]:
    """GPUs the worker could use; an empty list when there are none (or nvidia-smi does not answer)."""
    found: list[GpuInfo] = []
    exe = which("nvidia-smi")
    if exe:
        try:
            out = run([exe, "--query-gpu=name,memory.free,memory.total", "--format=csv,noheader,nounits"],
                      capture_output=True, text=True, timeout=5)
            if out.returncode == 0:
                for line in out.stdout.splitlines():
                    parts = [p.strip() for p in line.split(",")]
                    if len(parts) >= 3 and parts[0]:
                        found.append(GpuInfo(parts[0], "cuda", _float(parts[1]), _float(parts[2])))
        except (OSError, subprocess.SubprocessError):
            pass
    if not found and sys.platform == "darwin" and platform.machine() == "arm64":  # pragma: no cover - macOS
        found.append(GpuInfo("Apple GPU (Metal)", "mps"))
    return found


def device_choices(gpus: list[GpuInfo]) -> list[tuple[str, str]]:
    """(label, device key) for the device combo box: auto, each GPU backend, CPU."""
    choices = [("Auto (GPU if available)", "auto")]
    if gpus:
        g = gpus[0]
        label = g.label() + (f" + {len(gpus) - 1} more" if len(gpus) > 1 else "")
        choices.append((label, g.backend))
    choices.append(("CPU", "cpu"))
    return choices


def _float(x: str) -> float | None:
    try:
        return float(x)
    except ValueError:
        return None
