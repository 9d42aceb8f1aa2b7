"""Error types of the package.

Every error a user can cause by bad input is an :class:`MMXAIError` (or a subclass) whose message names
the culprit (a file, a row and column, a field) and what is wrong, in one line. The CLIs print that line
and exit non-zero without a traceback (see :mod:`mmxai_core.cli._common`).
"""

from __future__ import annotations

import os


class MMXAIError(Exception):
    """Base class of all errors caused by user input or environment, not by a bug."""


class ImageReadError(MMXAIError):
    """An image file or folder cannot be read (missing, empty, corrupt, unsupported, ambiguous)."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ImageWriteError(MMXAIError):
    """An image cannot be written."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class SchemaError(MMXAIError):
    """A clinical schema file or a clinical value does not fit the schema."""


def _one_line(message: str) -> str:
    """``message`` with control characters (line breaks, tabs, ...) written as escapes (``\\n``)."""
    text = str(message)
    return text if text.isprintable() else "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class ManifestError(MMXAIError):
    """A manifest CSV has one or more problems; ``problems`` lists each (row, column, message)."""

    def __init__(self, path: str | os.PathLike, problems: list[tuple[int | None, str | None, str]]):
        self.path = str(path)
        # a cell's text can hold line breaks or other control characters: shown escaped, so every problem
        # stays one line and a one-line print still names the culprit
        self.problems = [(r, c, _one_line(m)) for r, c, m in problems]
        lines = [format_problem(r, c, m) for r, c, m in self.problems]
        head = f"{self.path}: {len(self.problems)} problem(s)"
        # First line is the summary with the first problem, so a one-line print still names the culprit.
        first = f"{head}: {lines[0]}" if lines else head
        rest = "".join(f"\n  {line}" for line in lines[1:])
        super().__init__(first + rest)


class PreprocessingError(MMXAIError):
    """Preprocessing parameters are invalid or a preprocessing step cannot be applied or inverted."""


class DatasetError(MMXAIError):
    """A public-dataset adapter found files that do not match the dataset's documented format."""


class CheckpointError(MMXAIError):
    """A checkpoint is missing, incomplete, incompatible or not in the safetensors + JSON format."""


def format_problem(row: int | None, column: str | None, message: str) -> str:
    """Format one manifest problem as ``row 5, column 'age': message`` (row numbers as in a spreadsheet:
    the header is row 1, the first data row is row 2)."""
    parts = []
    if row is not None:
        parts.append(f"row {row}")
    if column is not None:
        parts.append(f"column '{column}'")
    where = ", ".join(parts)
    return f"{where}: {message}" if where else message
