"""The worker protocol: one request file in, JSON-line events out.

Why a prefix: Slicer's ``launchConsoleProcess`` merges the child's stderr into stdout, and libraries
print warnings and progress bars there. Every protocol line therefore starts with :data:`PREFIX`; any other
line is log text and is shown, never parsed. Each event carries the protocol version.

Request (a JSON file whose path is the worker's only argument)::

    {
      "protocol": 1,
      "image": "/tmp/xyz/input.nrrd",          # any format read_image takes
      "series_uid": null,                       # optional, for a DICOM folder with several series
      "clinical": {"age": 57, "density": "C"},  # field -> value; absent or null = unknown
      "checkpoint": "/path/to/checkpoint_dir",
      "device": "auto",                         # auto | cpu | cuda | mps
      "output_dir": "/tmp/xyz/out",             # chosen and owned (created, removed) by the caller
      "options": {"metrics": ["stability"], "target_class": null}
    }

Events (stdout, one per line, ``PREFIX`` + compact JSON)::

    {"v": 1, "event": "started", "pid": 1234}
    {"v": 1, "event": "progress", "step": "preprocess", "fraction": 0.2, "message": "..."}
    {"v": 1, "event": "result", "result": "/tmp/xyz/out/result.json", "files": {...}}
    {"v": 1, "event": "error", "message": "one line naming the culprit", "kind": "input"|"internal"}

Exactly one ``result`` or ``error`` event ends a run; exit status 0 after ``result``, 2 after an input
error, 3 after an internal error. A caller that sees the process end without either reports a crash.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mmxai_core.errors import MMXAIError

PROTOCOL_VERSION = 1
PREFIX = "@@MMXAI@@ "
EVENTS = ("started", "progress", "result", "error")
DEVICES = ("auto", "cpu", "cuda", "mps")


class ProtocolError(MMXAIError):
    """A request file or an event line does not follow the protocol."""


def encode_event(event: str, **fields: Any) -> str:
    """One protocol line (without the newline) for ``event`` with JSON-safe ``fields``."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    payload = {"v": PROTOCOL_VERSION, "event": event, **fields}
    return PREFIX + json.dumps(payload, separators=(",", ":"), allow_nan=False, default=_json_default)


def parse_line(line: str) -> dict[str, Any] | None:
    """The event of a protocol line, or ``None`` for any other text (log output, warnings).

    A line that carries the prefix but is not a valid event raises :class:`ProtocolError`.
    """
    line = line.rstrip("\r\n")
    if not line.startswith(PREFIX):
        return None
    try:
        payload = json.loads(line[len(PREFIX):])
    except ValueError as exc:
        raise ProtocolError(f"worker sent a damaged protocol line ({exc}): {line[:200]!r}") from None
    if not isinstance(payload, dict) or payload.get("event") not in EVENTS:
        raise ProtocolError(f"worker sent an unknown event: {line[:200]!r}")
    if payload.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"worker speaks protocol version {payload.get('v')!r}, expected {PROTOCOL_VERSION}")
    return payload


@dataclass
class WorkerRequest:
    """A validated request (see the module docstring for the file format)."""

    image: Path
    checkpoint: Path
    output_dir: Path
    clinical: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    series_uid: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": PROTOCOL_VERSION, "image": str(self.image), "checkpoint": str(self.checkpoint),
                "output_dir": str(self.output_dir), "clinical": dict(self.clinical), "device": self.device,
                "series_uid": self.series_uid, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "request") -> "WorkerRequest":
        if not isinstance(d, Mapping):
            raise ProtocolError(f"{source}: the request must be a JSON object")
        if d.get("protocol") != PROTOCOL_VERSION:
            raise ProtocolError(f"{source}: 'protocol' must be {PROTOCOL_VERSION}, got {d.get('protocol')!r}")
        unknown = sorted(set(d) - {"protocol", "image", "checkpoint", "output_dir", "clinical", "device",
                                   "series_uid", "options"})
        if unknown:
            raise ProtocolError(f"{source}: unknown key(s) {', '.join(unknown)}")
        for key in ("image", "checkpoint", "output_dir"):
            if not isinstance(d.get(key), str) or not d.get(key):
                raise ProtocolError(f"{source}: '{key}' must be a non-empty path string")
        clinical = d.get("clinical") or {}
        if not isinstance(clinical, Mapping):
            raise ProtocolError(f"{source}: 'clinical' must be an object of field -> value")
        for name, value in clinical.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ProtocolError(f"{source}: clinical field '{name}' is {value}; use null for unknown")
        device = d.get("device", "auto")
        if device not in DEVICES:
            raise ProtocolError(f"{source}: 'device' must be one of {', '.join(DEVICES)}, got {device!r}")
        options = d.get("options") or {}
        if not isinstance(options, Mapping):
            raise ProtocolError(f"{source}: 'options' must be an object")
        return cls(image=Path(d["image"]), checkpoint=Path(d["checkpoint"]), output_dir=Path(d["output_dir"]),
                   clinical=dict(clinical), device=device, series_uid=d.get("series_uid"),
                   options=dict(options))

    @classmethod
    def read(cls, path: str | Path) -> "WorkerRequest":
        """Read and validate a request file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProtocolError(f"{p}: cannot read the request ({exc.strerror or exc})") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ProtocolError(f"{p}: the request is not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(p))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
