"""The Python packages the worker needs in Slicer's Python, checked and offered for install on first Run.

Never at import time or in the module's constructor. Order:

1. PyTorch through the PyTorch extension (``PyTorchUtils``): it picks a CUDA build that fits the driver.
   torch is never pinned or replaced here.
2. The rest from ``Resources/requirements.txt`` (lower bounds only; no torch, torchvision or SimpleITK:
   Slicer's own SimpleITK must stay, replacing it breaks Slicer's image IO; nothing that pulls in shap,
   whose ``slicer`` package would overwrite Slicer's): ``slicer.packaging.pip_ensure`` (Slicer >= 5.12;
   asks the user first) or, in older Slicer, ``slicer.util.pip_install`` after a confirmation dialog.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from . import core

REQUIREMENTS = core.MODULE_DIR / "Resources" / "requirements.txt"
NEVER_INSTALL = ("torch", "torchvision", "simpleitk", "shap", "slicer")
"""Package names the module must never install or replace (torch comes from PyTorchUtils)."""
SKIP_PACKAGES = ["torch", "torchvision", "SimpleITK"]
TORCH_REQUIREMENT = ">=2.1"


class DependencyError(Exception):
    """A dependency is missing and was not installed (declined or failed); the message says what to do."""


def load_requirements(path: Path = REQUIREMENTS) -> list[str]:
    """Requirement lines (comments, blank lines and pip options skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.append(line)
    return out


def requirement_name(req: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    return m.group(1).lower().replace("_", "-") if m else req.lower()


def missing_requirements(reqs: list[str], version_of: Callable[[str], str | None] | None = None) -> list[str]:
    """Requirements that are not installed at a version that fits (``packaging`` when available)."""
    import importlib.metadata as md

    def installed(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    version_of = version_of or installed
    missing = []
    for req in reqs:
        have = version_of(requirement_name(req))
        if have is None:
            missing.append(req)
            continue
        try:
            from packaging.requirements import Requirement

            if have not in Requirement(req).specifier:
                missing.append(req)
        except Exception:  # noqa: BLE001 - no 'packaging': presence is enough
            pass
    return missing


def ensure_dependencies_in_slicer(requester: str = "MMXAI") -> None:  # pragma: no cover - only real Slicer
    """Install what is missing, asking the user first; DependencyError when declined or failed."""
    import slicer

    try:
        import PyTorchUtils  # the PyTorch extension (EXTENSION_DEPENDS)
    except ImportError:
        raise DependencyError("MMXAI needs the PyTorch extension: install 'PyTorch' from the Extensions "
                              "Manager, restart Slicer, then press Run again.") from None
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if not torch_logic.torchInstalled():
        torch = torch_logic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT)
        if torch is None:
            raise DependencyError("PyTorch is needed to run the model; it was not installed. Use the "
                                  "'PyTorch Utils' module to install it, then press Run again.")
    reqs = load_requirements()
    if not missing_requirements(reqs):
        return
    ensure = None
    for modname in ("slicer.packaging", "slicer.pydeps"):
        try:
            mod = __import__(modname, fromlist=["pip_ensure"])
            ensure = getattr(mod, "pip_ensure", None)
            if ensure:
                break
        except ImportError:
            continue
    try:
        if ensure is not None:
            import inspect

            kwargs = {"requester": requester}
            if "skip_packages" in inspect.signature(ensure).parameters:
                kwargs["skip_packages"] = SKIP_PACKAGES
            ensure(reqs, **kwargs)
        else:
            missing = missing_requirements(reqs)
            if not slicer.util.confirmOkCancelDisplay(
                    "MMXAI needs these Python packages in Slicer's Python:\n" + "\n".join(missing)
                    + "\n\nInstall them now? (This can take a few minutes.)", windowTitle="MMXAI"):
                raise DependencyError("The packages MMXAI needs were not installed: " + ", ".join(missing))
            slicer.util.pip_install(" ".join(f'"{r}"' for r in missing))
    except DependencyError:
        raise
    except RuntimeError as exc:  # pip_ensure: declined
        raise DependencyError(f"The packages MMXAI needs were not installed ({exc}).") from None
    except Exception as exc:  # noqa: BLE001 - pip failed: say so in plain words
        raise DependencyError(f"Installing the packages MMXAI needs failed: {exc}. See the Python console "
                              "for pip's output.") from None
