"""Write an adapter's results: ``manifest.csv``, ``schema.yaml`` and ``adapter_summary.json``.

Manifest columns (those of :mod:`mmxai_core.data.manifest`), in this order: ``patient_id, image,
label[, mask], dataset, split[, case_id]`` and then one column per clinical field in schema order.
``image`` and ``mask`` are paths relative to the manifest's folder, with ``/`` separators. Best put
the output folder at the data root itself (or any folder above the images): then no path starts with
``..``. Where it lies beside the data, paths start with ``../`` and
:func:`~mmxai_core.data.manifest.load_manifest` needs ``allow_outside=True`` (the summary says so).
``split`` is ``train`` / ``test`` where the dataset defines it and empty where it does not (the splits
module assigns those rows). The schema is written with :func:`mmxai_core.data.schema.save_schema`
(``name`` = dataset, ``classes``, ``description`` with the provenance). Every file goes through
:mod:`mmxai_core.utils.atomic`.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.data.schema import RESERVED_COLUMNS, ClinicalSchema, FieldSpec, save_schema
from mmxai_core.errors import DatasetError, SchemaError
from mmxai_core.utils.atomic import write_json_atomic, write_text_atomic

MANIFEST_NAME = "manifest.csv"
SCHEMA_NAME = "schema.yaml"
SUMMARY_NAME = "adapter_summary.json"
BASE_COLUMNS = ("patient_id", "image", "label", "mask", "dataset", "split", "case_id")


@dataclasses.dataclass
class AdapterSummary:
    """What an adapter wrote and what it left out.

    Attributes:
        dataset: dataset name written to the manifest's ``dataset`` column.
        out_dir: the output folder.
        manifest, schema: paths of the written files.
        rows: manifest rows written.
        counts: ``{split: {label: n}}`` (split ``""`` = not assigned).
        fields: clinical field names, in schema order.
        dropped: ``{reason: [item, ...]}`` for everything left out (rows, patients, masks).
        notes: other things worth knowing (combination rules applied, values read as unknown, ...).
    """

    dataset: str
    out_dir: Path
    manifest: Path
    schema: Path
    rows: int = 0
    counts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    fields: list[str] = dataclasses.field(default_factory=list)
    dropped: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def n_dropped(self) -> int:
        """Number of dropped items over all reasons."""
        return sum(len(v) for v in self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return {"dataset": self.dataset, "out_dir": str(self.out_dir), "manifest": str(self.manifest),
                "schema": str(self.schema), "rows": self.rows, "counts": self.counts,
                "fields": self.fields, "dropped": self.dropped, "notes": self.notes}

    def format(self, max_items: int = 5) -> str:
        """A few human-readable lines."""
        lines = [f"{self.dataset}: {self.rows} row(s) -> {self.manifest}", f"schema: {self.schema} "
                 f"({len(self.fields)} clinical field(s): {', '.join(self.fields) or '-'})"]
        for split, per_label in sorted(self.counts.items()):
            parts = ", ".join(f"{lab}={n}" for lab, n in sorted(per_label.items()))
            lines.append(f"  split {split or '(unassigned)'}: {parts}")
        for reason, items in self.dropped.items():
            shown = "; ".join(items[:max_items]) + (f"; ... (+{len(items) - max_items})"
                                                   if len(items) > max_items else "")
            lines.append(f"  dropped {len(items)} ({reason}): {shown}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def count_labels(rows: Iterable[Mapping[str, str]]) -> dict[str, dict[str, int]]:
    """``{split: {label: n}}`` over manifest rows."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in rows:
        counts[r.get("split", "")][r["label"]] += 1
    return {s: dict(sorted(c.items())) for s, c in sorted(counts.items())}


def relative_to(path: str | os.PathLike, folder: str | os.PathLike) -> str:
    """``path`` relative to ``folder`` with ``/`` separators (refused across Windows drives)."""
    try:
        rel = os.path.relpath(Path(path).resolve(), Path(folder).resolve())
    except ValueError:
        raise DatasetError(f"{path}: cannot be written relative to the manifest folder {folder} "
                           f"(different drive); put the output folder on the data's drive") from None
    return Path(rel).as_posix()


def manifest_columns(specs: Sequence[FieldSpec], with_mask: bool, with_case_id: bool = False) -> list[str]:
    """Manifest header: the base columns (``mask`` / ``case_id`` only when asked) then the field names."""
    base = [c for c in BASE_COLUMNS if (with_mask or c != "mask") and (with_case_id or c != "case_id")]
    names = [f.name for f in specs]
    clash = sorted(set(names) & set(RESERVED_COLUMNS))
    if clash:
        raise DatasetError(f"clinical field name(s) {clash} clash with the manifest's own columns "
                           f"{list(RESERVED_COLUMNS)}; rename them")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"clinical field name(s) {dup} occur more than once; rename them")
    return base + names


def manifest_text(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> str:
    """CSV text of the rows (missing keys written as empty cells)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r.get(c, "") for c in columns})
    return buf.getvalue()


def build_schema(specs: Sequence[FieldSpec], *, name: str, classes: Sequence[str] | None,
                 description: str) -> ClinicalSchema:
    """The :class:`ClinicalSchema` to write (``classes`` kept only when there are at least two)."""
    if not specs:
        raise DatasetError(f"{name}: no clinical field to write: choose at least one clinical column "
                           f"(a schema needs one field)")
    classes = list(dict.fromkeys(classes or [])) or None
    try:
        return ClinicalSchema(fields=list(specs), name=name,
                              classes=classes if classes and len(classes) >= 2 else None,
                              description=f"{RESEARCH_USE_NOTICE} {description}")
    except SchemaError as exc:
        raise DatasetError(f"{name}: the schema built from the data is invalid: {exc}") from None


def write_outputs(summary: AdapterSummary, rows: Sequence[Mapping[str, str]], specs: Sequence[FieldSpec], *,
                  classes: Sequence[str] | None, with_mask: bool, description: str,
                  with_case_id: bool = False) -> AdapterSummary:
    """Write schema, manifest and summary into ``summary.out_dir`` (each atomically); fill in counts,
    fields and a note when paths leave the manifest's folder."""
    if not rows:
        raise DatasetError(f"{summary.dataset}: no rows left to write"
                           + (f" (dropped: {', '.join(f'{len(v)} {k}' for k, v in summary.dropped.items())})"
                              if summary.dropped else ""))
    columns = manifest_columns(specs, with_mask, with_case_id)
    schema = build_schema(specs, name=summary.dataset, classes=classes, description=description)
    summary.rows = len(rows)
    summary.counts = count_labels(rows)
    summary.fields = [f.name for f in specs]
    outside = sum(any(str(r.get(c, "")).startswith("../") for c in ("image", "mask")) for r in rows)
    if outside:
        summary.notes.append(f"{outside} row(s) point outside the manifest's folder ('../'): load them with "
                             f"load_manifest(..., allow_outside=True), or write the output inside the data "
                             f"root (e.g. out_dir = the image root)")
    save_schema(schema, summary.schema)
    write_text_atomic(summary.manifest, manifest_text(rows, columns))
    write_json_atomic(summary.out_dir / SUMMARY_NAME, summary.to_dict())
    return summary


def new_summary(dataset: str, out_dir: str | os.PathLike) -> AdapterSummary:
    """An empty summary whose files will lie in ``out_dir`` (created if needed)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: output folder is a file")
    out.mkdir(parents=True, exist_ok=True)
    return AdapterSummary(dataset=dataset, out_dir=out, manifest=out / MANIFEST_NAME, schema=out / SCHEMA_NAME)


def drop(summary: AdapterSummary, reason: str, item: str) -> None:
    """Record that ``item`` was left out because of ``reason``."""
    summary.dropped.setdefault(reason, []).append(item)
