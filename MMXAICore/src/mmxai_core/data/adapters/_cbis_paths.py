"""Find the file a CBIS-DDSM CSV path points to in a real TCIA download.

The CSVs give paths such as ``Mass-Training_P_00001_LEFT_CC/1.3.6.../1.3.6.../000000.dcm``, while a
download holds ``CBIS-DDSM/Mass-Training_P_00001_LEFT_CC/<study folder>/<series folder>/1-1.dcm``:
only the first component, the case folder, is reliable. :class:`CaseFolderResolver` indexes the folder
names under the image root once, finds the case folder (at any depth) and the DICOM files below it:

* the path exactly as the CSV says, when it exists, wins;
* a full-mammogram case folder must hold exactly one DICOM file;
* an ROI case folder (``..._CC_1``) holds the mask and the cropped lesion, in one or two series:
  :meth:`CaseFolderResolver.mask_candidates` orders them (exact path, then files whose name or folder
  says "mask", then the rest) and the mask reader keeps the first one whose pixels are binary.

Failures are returned as a reason (text), never guessed.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from mmxai_core.data.adapters._dicom import dicom_files
from mmxai_core.errors import DatasetError


def split_csv_path(csv_path: str) -> tuple[str, PurePosixPath]:
    """(case folder name, rest) of a CSV path (backslashes and stray blanks/newlines tolerated)."""
    parts = PurePosixPath(csv_path.strip().replace("\\", "/")).parts
    parts = tuple(p for p in parts if p not in ("", "/", "."))
    if not parts:
        return "", PurePosixPath()
    return parts[0], PurePosixPath(*parts[1:]) if len(parts) > 1 else PurePosixPath()


class CaseFolderResolver:
    """Resolve CSV paths under ``root`` by their case folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: image root folder not found")
        self._index: dict[str, list[Path]] | None = None
        self._files: dict[Path, list[Path]] = {}

    def _folders(self, name: str) -> list[Path]:
        if self._index is None:
            index: dict[str, list[Path]] = {}
            for d, subdirs, _ in os.walk(self.root):
                subdirs.sort()
                for s in subdirs:
                    index.setdefault(s, []).append(Path(d) / s)
            self._index = index
        return self._index.get(name, [])

    def case_folder(self, csv_path: str) -> tuple[Path | None, str]:
        """(folder, "") or (None, reason)."""
        case, _ = split_csv_path(csv_path)
        if not case:
            return None, "empty path"
        found = self._folders(case)
        if not found:
            return None, f"no folder '{case}' under {self.root}"
        if len(found) > 1:
            return None, (f"{len(found)} folders named '{case}' under {self.root} "
                          f"({', '.join(str(p) for p in found[:3])}); keep one download")
        return found[0], ""

    def _dicoms(self, folder: Path) -> list[Path]:
        if folder not in self._files:
            self._files[folder] = dicom_files(folder, recursive=True)
        return self._files[folder]

    def _exact(self, folder: Path, csv_path: str) -> Path | None:
        _, rest = split_csv_path(csv_path)
        if str(rest) in ("", "."):
            return None
        candidate = folder / rest
        return candidate if candidate.is_file() else None

    def resolve_image(self, csv_path: str) -> tuple[Path | None, str]:
        """(file, "") for a full-mammogram path, or (None, reason)."""
        folder, why = self.case_folder(csv_path)
        if folder is None:
            return None, why
        exact = self._exact(folder, csv_path)
        if exact is not None:
            return exact, ""
        files = self._dicoms(folder)
        if len(files) == 1:
            return files[0], ""
        if not files:
            return None, f"no DICOM file under {folder}"
        return None, (f"{len(files)} DICOM files under {folder} where one full mammogram was expected "
                      f"({', '.join(f.name for f in files[:3])}, ...)")

    def mask_candidates(self, csv_path: str) -> tuple[list[Path], str]:
        """([files, most likely mask first], "") for an ROI-mask path, or ([], reason)."""
        folder, why = self.case_folder(csv_path)
        if folder is None:
            return [], why
        files = self._dicoms(folder)
        if not files:
            return [], f"no DICOM file under {folder}"
        exact = self._exact(folder, csv_path)

        def rank(p: Path) -> tuple[int, str]:
            if exact is not None and p == exact:
                return (0, str(p))
            says_mask = "mask" in p.name.lower() or "mask" in p.parent.name.lower()
            return (1 if says_mask else 2, str(p))

        return sorted(files, key=rank), ""
