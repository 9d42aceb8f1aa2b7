"""Write a planned cohort to a folder: DICOM images, NRRD masks, ``manifest.csv``, ``schema.yaml``,
``ground_truth.json`` and a short ``README.txt``.

Atomicity: everything is built in a hidden temporary folder beside the destination and moved into
place at the end, so a crash or Ctrl-C never leaves a half-written cohort under the destination name. A
non-empty destination is replaced only if it is a previous ``mmxai-synth`` output (its
``ground_truth.json`` says so) or ``force`` is given; otherwise :class:`~mmxai_core.errors.MMXAIError`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.data.synthetic import label_model as lm
from mmxai_core.data.synthetic._rng import STREAM_RENDER, rng_for
from mmxai_core.data.synthetic.cohort import CLASSES, Cohort, PatientCase, field_names, observed_cell, sample_cohort
from mmxai_core.data.synthetic.dicom_write import write_mammogram, write_mr_series
from mmxai_core.data.synthetic.fields import FIELD_BY_NAME, FIELDS, MISSING_RATE
from mmxai_core.data.synthetic.lesion_model import NO_LESION_BELOW, NO_LESION_SCORE, TRAIT_NOISE
from mmxai_core.data.synthetic.render import render_image
from mmxai_core.errors import MMXAIError

GENERATOR = "mmxai-synth"
GENERATOR_VERSION = "1.0"
MANIFEST_COLUMNS = ("patient_id", "image", "label", "mask", "dataset")
REFERENCE_N = 10000
"""Patients in the in-memory reference cohort whose AUCs go into ``ground_truth.json``."""

Progress = Callable[[int, int], None]


def write_cohort(out_dir: str | os.PathLike, n: int = 400, seed: int = 0, kind: str = "mixed",
                 force: bool = False, progress: Progress | None = None) -> Cohort:
    """Plan, render and write a cohort of ``n`` patients to ``out_dir``; returns the planned cohort.

    ``progress(done, total)`` is called after each patient.
    """
    out = Path(out_dir)
    check_destination(out, force)
    try:
        cohort = sample_cohort(n, seed, kind)
    except ValueError as exc:
        raise MMXAIError(f"{out}: {exc}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.synth-", dir=out.parent))
    try:
        _write_all(tmp, cohort, progress)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cohort


def is_synth_output(folder: Path) -> bool:
    """True when ``folder`` holds a ``ground_truth.json`` written by this generator."""
    gt = folder / "ground_truth.json"
    try:
        with gt.open(encoding="utf-8") as fh:
            return json.load(fh).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def check_destination(out: Path, force: bool) -> None:
    """Raise :class:`MMXAIError` unless ``out`` may be (re)written."""
    if out.exists() and not out.is_dir():
        raise MMXAIError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force and not is_synth_output(out):
        raise MMXAIError(f"{out}: folder is not empty and is not a previous mmxai-synth output "
                         "(use --force to replace it)")


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Move the finished folder onto ``out``; an existing ``out`` is moved aside first, then deleted."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "content")
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old / "content", out)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_all(root: Path, cohort: Cohort, progress: Progress | None) -> None:
    (root / "images").mkdir()
    (root / "masks").mkdir()
    total = len(cohort.patients)
    for done, patient in enumerate(cohort.patients, start=1):
        write_patient(root, cohort.seed, patient)
        if progress is not None:
            progress(done, total)
    (root / "schema.yaml").write_text(schema_yaml(cohort), encoding="utf-8")
    (root / "ground_truth.json").write_text(json.dumps(ground_truth(cohort), indent=1) + "\n", encoding="utf-8")
    (root / "README.txt").write_text(readme(cohort), encoding="utf-8")
    (root / "manifest.csv").write_text(manifest_csv(cohort), encoding="utf-8")  # last: marks completion


def write_patient(root: Path, seed: int, patient: PatientCase) -> None:
    """Render and write every image of one patient and its masks under ``root``."""
    for idx, image in enumerate(patient.images):
        rendered = render_image(seed, patient, idx)
        if image.modality == "MG":
            write_mammogram(root / image.image_path, seed, patient, idx, rendered)
        else:
            folder = root / image.image_path
            folder.mkdir()
            names = _slice_names(seed, patient.index, idx, rendered.stored.shape[0])
            write_mr_series(folder, seed, patient, idx, rendered, names)
        if patient.lesion.present:
            _write_mask(root / image.mask_path, rendered.mask_image())


def _slice_names(seed: int, patient_index: int, image_index: int, n: int) -> list[str]:
    """Random-looking, unique file names that do not sort in slice order."""
    rng = rng_for(seed, STREAM_RENDER, patient_index, image_index, 99)
    codes = rng.choice(16 ** 6, size=n, replace=False)
    return [f"IM{int(c):06X}.dcm" for c in codes]


def _write_mask(path: Path, mask_image) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(mask_image.to_sitk(), str(path), True)


# ------------------------------------------------------------------------------------------- tables
def manifest_rows(cohort: Cohort) -> list[dict[str, str]]:
    """One row per image: patient_id, image, label, mask, dataset, then the clinical fields."""
    rows = []
    for p in cohort.patients:
        for image in p.images:
            row = {"patient_id": p.patient_id, "image": image.image_path, "label": p.label_name,
                   "mask": image.mask_path if p.lesion.present else "",
                   "dataset": "synth-mg" if image.modality == "MG" else "synth-mr"}
            row.update({name: observed_cell(p, name) for name in field_names()})
            rows.append(row)
    return rows


def manifest_csv(cohort: Cohort) -> str:
    """The manifest as CSV text."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*MANIFEST_COLUMNS, *field_names()], lineterminator="\n")
    writer.writeheader()
    writer.writerows(manifest_rows(cohort))
    return buf.getvalue()


def schema_dict() -> dict[str, Any]:
    """The clinical schema (CONVENTIONS.md format) with ``classes``."""
    return {"name": "mmxai-synth", "description": "Synthetic breast imaging cohort (fake patients).",
            "classes": list(CLASSES), "fields": [f.schema_entry() for f in FIELDS]}


def schema_yaml(cohort: Cohort) -> str:
    """``schema.yaml`` text with a header comment."""
    import yaml

    head = (f"# Clinical schema of a synthetic cohort ({GENERATOR} {GENERATOR_VERSION}, seed {cohort.seed}).\n"
            f"# {RESEARCH_USE_NOTICE}\n")
    return head + yaml.safe_dump(schema_dict(), sort_keys=False, allow_unicode=True, width=100,
                                 default_flow_style=None)


def ground_truth(cohort: Cohort, reference_n: int | None = None) -> dict[str, Any]:
    """The generating model, per-case truth, and AUCs of the true scores on this cohort and on a large
    in-memory reference cohort (``reference_n`` patients, default ``REFERENCE_N``; 0 = none)."""
    y = cohort.labels
    reference_n = REFERENCE_N if reference_n is None else reference_n
    ref = sample_cohort(reference_n, cohort.seed, cohort.kind) if reference_n else None
    return {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "seed": cohort.seed,
        "kind": cohort.kind,
        "n_patients": len(cohort.patients),
        "n_images": cohort.n_images(),
        "classes": list(CLASSES),
        "notice": RESEARCH_USE_NOTICE,
        "label_model": lm.describe(),
        "image_score": {
            "definition": "mean of the visible traits (u_size + u_contrast + u_shape) / 3; "
                          f"{NO_LESION_SCORE} when no lesion is drawn",
            "latent": f"s ~ N(0,1); no lesion when s < {NO_LESION_BELOW}; u_trait = s + N(0, {TRAIT_NOISE})",
            "traits": {"size": "radius_mm = clip(7.5 + 2.5 u_size, 4.5, 15)",
                       "brightness": "contrast = clip(0.32 + 0.12 u_contrast, 0.14, 0.7)",
                       "shape": "spiculation = clip(0.45 (u_shape + 0.3), 0, 1); irregularity = "
                                "clip(0.10 + 0.10 u_shape, 0, 0.4); margin_mm = clip(0.5 + 0.4 (u_shape + 1), 0.5, 1.7)"},
        },
        "missing": {"rate": MISSING_RATE, "mechanism": "missing completely at random, per field and patient; "
                    "written as empty cells; true values are in cases[].clinical_true"},
        "fields": {f.name: {"type": f.type, "noise": f.name in lm.NOISE_FIELDS} for f in FIELDS},
        "auc": _aucs(cohort),
        "auc_reference": ({"n_patients": reference_n, **_aucs(ref)} if ref is not None else None),
        "prevalence": float(np.mean(y)),
        "discordant_cases": [p.patient_id for p in cohort.patients if p.discordant],
        "cases": [_case_json(p) for p in cohort.patients],
    }


def _aucs(cohort: Cohort) -> dict[str, float]:
    y = cohort.labels
    return {"image_score": _r(lm.auc(cohort.image_scores, y)),
            "clinical_score": _r(lm.auc(cohort.clinical_scores, y)),
            "logit_both": _r(lm.auc(cohort.logits, y))}


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 4)


def _case_json(p: PatientCase) -> dict[str, Any]:
    return {
        "patient_id": p.patient_id, "label": p.label_name, "modality": p.modality,
        "image_score": round(p.image_score, 6), "image_evidence": round(p.image_evidence, 6),
        "clinical_score": round(p.clinical_score, 6), "logit": round(p.logit, 6),
        "p_malignant": round(p.probability, 6), "discordant": p.discordant,
        "discordant_injected": p.discordant_injected,
        "clinical_true": {name: FIELD_BY_NAME[name].json_value(v) for name, v in p.clinical.items()},
        "missing": [name for name, m in p.missing.items() if m],
        "lesion": p.lesion.to_json(),
        "images": [{**im.to_json(), "mask": im.mask_path if p.lesion.present else None} for im in p.images],
    }


def readme(cohort: Cohort) -> str:
    """A few lines that say what the folder is."""
    return (f"Synthetic multimodal breast imaging cohort written by {GENERATOR} {GENERATOR_VERSION} "
            f"(seed {cohort.seed}, kind {cohort.kind}, {len(cohort.patients)} patients, "
            f"{cohort.n_images()} images).\n{RESEARCH_USE_NOTICE} No real patient data: names, IDs and dates "
            "in the DICOM headers are fake.\n\nmanifest.csv   one row per image (paths relative to this folder)\n"
            "schema.yaml    clinical fields and classes\nground_truth.json  label model, coefficients, "
            "per-case scores, discordant cases\nimages/        DICOM (MG: one file; MR: one folder per series)\n"
            "masks/         lesion masks (NRRD, same geometry as the image)\n")


def timed_progress(prog: str, every: int | None = None) -> Progress:
    """A progress callback that prints ``prog: 40/400 patients (1.2 s)`` to stderr about 10 times."""
    import sys

    start = time.perf_counter()

    def report(done: int, total: int) -> None:
        step = every or max(total // 10, 1)
        if done % step == 0 or done == total:
            print(f"{prog}: {done}/{total} patients ({time.perf_counter() - start:.1f} s)", file=sys.stderr,
                  flush=True)

    return report
