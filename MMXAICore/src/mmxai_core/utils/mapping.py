"""Reading nested JSON-like dicts (metric results, summaries)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def nested_get(d: Any, *path: str) -> Any:
    """``d[path[0]][path[1]]...``, or None where a level is not a mapping or lacks the key."""
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


__all__ = ["nested_get"]
