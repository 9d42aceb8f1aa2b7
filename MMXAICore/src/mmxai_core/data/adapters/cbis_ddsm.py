"""CBIS-DDSM (TCIA) -> MMXAI ``manifest.csv`` + ``schema.yaml`` (+ ROI masks as NRRD).

One manifest row per mammogram (patient, side, view; ``case_id`` = ``P_00001_LEFT_CC``), labelled
benign/malignant (the schema's ``classes``, malignant positive), with the official train/test split; the rules that combine several abnormalities of one image are in
:mod:`mmxai_core.data.adapters._cbis_combine`. Clinical fields: ``age`` (from the image's DICOM header,
PatientAge, not from the CSV), ``breast_density``, ``abnormality_type``, ``n_abnormalities``,
``mass_shape``, ``mass_margins``, ``calc_type``, ``calc_distribution``, ``subtlety`` and, only with
``include_assessment=True``, ``assessment`` (BI-RADS: nearly the label itself).

Paths: CSV paths are resolved by their case folder under ``image_root``
(:mod:`mmxai_core.data.adapters._cbis_paths`), so a real TCIA download works as downloaded. A row whose
file cannot be found is an error naming the CSV, row and column (all such rows are listed), unless
``drop_unresolved=True``: then those images (or only their masks) are left out and listed in the
summary. The manifest's ``image`` and ``mask`` paths are relative to ``out_dir``: best pass the
image root itself as ``out_dir`` (paths stay inside it, the folder moves as one); an ``out_dir`` beside
the data gives ``../`` paths that ``load_manifest`` accepts only with ``allow_outside=True``.

ROI masks (``masks=True``): the union of the image's abnormality masks, on the image's grid, written
as ``<out_dir>/masks/<patient>_<side>_<view>.nrrd`` (uint8 0/1). A mask of another size is resampled
(nearest neighbour) when its aspect ratio matches the image's within 1 %, otherwise refused with an
error naming the file (:mod:`mmxai_core.data.adapters._masks`).
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from mmxai_core.data.adapters._cbis_combine import AGE_RANGE, Mammogram, cbis_fields, group_by_image
from mmxai_core.data.adapters._cbis_csv import Abnormality, csv_kind_split, find_csvs, read_cbis_csv
from mmxai_core.data.adapters._cbis_paths import CaseFolderResolver
from mmxai_core.data.adapters._dicom import header_text, image_grid, parse_age, read_header
from mmxai_core.data.adapters._fields import field_spec, manifest_value
from mmxai_core.data.adapters._masks import fit_to_grid, pick_mask, write_mask
from mmxai_core.data.adapters._output import (AdapterSummary, drop, new_summary, relative_to,
                                              write_outputs)
from mmxai_core.errors import DatasetError

DATASET = "cbis-ddsm"
#: Class order of the schema: for two classes the second is the positive class.
CLASSES = ("benign", "malignant")
MASK_FOLDER = "masks"
_MAX_LISTED = 50


def adapt_cbis_ddsm(csvs: str | os.PathLike | Iterable[str | os.PathLike], image_root: str | os.PathLike,
                    out_dir: str | os.PathLike, *, include_assessment: bool = False, masks: bool = True,
                    drop_unresolved: bool = False, age_from_dicom: bool = True,
                    dataset: str = DATASET) -> AdapterSummary:
    """Convert CBIS-DDSM to ``out_dir/manifest.csv`` + ``out_dir/schema.yaml`` (+ ``out_dir/masks/``).

    Args:
        csvs: a folder holding the case-description CSVs, or a list of CSV files (their names say
            mass/calc and train/test).
        image_root: the folder the DICOM files were downloaded to (the case folders lie anywhere below).
        out_dir: output folder (created); best the image root itself.
        include_assessment: add the BI-RADS ``assessment`` field (a near label leak; off by default).
        masks: build the ROI-mask union per image (reads every mask; off for a quick manifest).
        drop_unresolved: leave out images (or masks) whose files cannot be found instead of failing.
        age_from_dicom: read PatientAge from each image's header (else ``age`` is left unknown).
        dataset: value of the manifest's ``dataset`` column.

    Returns:
        The :class:`AdapterSummary` (also written to ``out_dir/adapter_summary.json``).
    """
    paths = _csv_list(csvs)
    unusual: collections.Counter = collections.Counter()
    abnormalities = [a for p in paths for a in read_cbis_csv(p, need_masks=masks, unusual=unusual)]
    if not abnormalities:
        raise DatasetError(f"{', '.join(map(str, paths))}: no abnormality rows")
    images = group_by_image(abnormalities)
    resolver = CaseFolderResolver(image_root)
    summary = new_summary(dataset, out_dir)

    files, mask_sources, problems = _resolve(images, resolver, masks)
    if problems and not drop_unresolved:
        raise _unresolved_error(problems)
    kept = []
    for img in images:
        if img.name not in files:
            drop(summary, "image file not found", f"{img.name} ({_problems_for(problems, img)})")
            continue
        if masks and img.name not in mask_sources:
            drop(summary, "ROI mask not found (image kept without a mask)",
                 f"{img.name} ({_problems_for(problems, img)})")
        kept.append(img)

    values, ages_unknown = [], 0
    for img in kept:
        v = img.clinical(include_assessment)
        v["age"] = _age(files[img.name]) if age_from_dicom else None
        ages_unknown += v["age"] is None
        values.append(v)
    fields, left_out = cbis_fields(values, [a for img in kept for a in img.abnormalities], include_assessment)
    specs = [field_spec(f) for f in fields]

    mask_dir = summary.out_dir / MASK_FOLDER
    rows, resampled = [], 0
    for img, v in zip(kept, values):
        mask_rel = ""
        if masks and img.name in mask_sources:
            dest, n_res = _write_union(img, files[img.name], mask_sources[img.name], mask_dir / f"{img.name}.nrrd")
            resampled += n_res
            mask_rel = relative_to(dest, summary.out_dir)
        row = {"patient_id": img.key[0], "image": relative_to(files[img.name], summary.out_dir),
               "label": img.label, "mask": mask_rel, "dataset": dataset, "split": img.split,
               "case_id": img.name}
        for f in specs:
            try:
                row[f.name] = manifest_value(f, v.get(f.name))
            except ValueError as exc:
                first = img.abnormalities[0]
                raise DatasetError(f"{first.source}: row {first.row}, image {img.name}, field '{f.name}': {exc}") from None
        rows.append(row)

    _add_notes(summary, kept, unusual, ages_unknown if age_from_dicom else None, resampled, left_out,
               include_assessment)
    description = (f"Written by mmxai_core.data.adapters.cbis_ddsm from {', '.join(p.name for p in paths)}. "
                   "One row per mammogram (case_id = patient_side_view); the abnormalities of an image are "
                   "combined as documented in mmxai_core.data.adapters._cbis_combine.")
    return write_outputs(summary, rows, specs, classes=CLASSES, with_mask=masks, with_case_id=True,
                         description=description)


def _csv_list(csvs) -> list[Path]:
    if isinstance(csvs, (str, os.PathLike)):
        p = Path(csvs)
        paths = find_csvs(p) if p.is_dir() else [p]
    else:
        paths = [Path(c) for c in csvs]
    if not paths:
        raise DatasetError("no CBIS-DDSM CSV given")
    for p in paths:
        csv_kind_split(p)
        if not p.is_file():
            raise DatasetError(f"{p}: file not found")
    return paths


def _resolve(images: list[Mammogram], resolver: CaseFolderResolver, masks: bool):
    """(image file per name, mask candidates per name, problems [(abnormality, column, csv path, reason)])."""
    files: dict[str, Path] = {}
    mask_sources: dict[str, list[tuple[Abnormality, list[Path]]]] = {}
    problems: list[tuple[Abnormality, str, str, str]] = []
    for img in images:
        first_failure = None
        for a in img.abnormalities:
            path, why = resolver.resolve_image(a.image_path)
            if path is not None:
                files[img.name] = path
                break
            first_failure = first_failure or (a, "image file path", a.image_path, why)
        if img.name not in files:
            problems.append(first_failure)  # type: ignore[arg-type]
            continue
        if not masks:
            continue
        sources, complete = [], True
        for a in img.abnormalities:
            if a.mask_path is None:
                problems.append((a, "ROI mask file path", "", "empty value"))
                complete = False
                continue
            cands, why = resolver.mask_candidates(a.mask_path)
            if not cands:
                problems.append((a, "ROI mask file path", a.mask_path, why))
                complete = False
            sources.append((a, cands))
        if complete:
            mask_sources[img.name] = sources
    return files, mask_sources, problems


def _problem_text(problem: tuple[Abnormality, str, str, str]) -> str:
    a, column, csv_path, why = problem
    shown = f" '{csv_path}'" if csv_path else ""
    return f"{a.where(column)}: cannot resolve{shown}: {why}"


def _problems_for(problems, img: Mammogram) -> str:
    """The problems of one image as ``file row R: reason; ...``."""
    mine = [p for p in problems if p[0].image_key == img.key]
    return "; ".join(f"{p[0].source.name} row {p[0].row} {p[1]}: {p[3]}" for p in mine)


def _unresolved_error(problems) -> DatasetError:
    lines = [_problem_text(p) for p in problems]
    head = (f"{lines[0]} ({len(lines)} unresolved path(s) in all; fix the image root or pass "
            f"drop_unresolved=True / --drop-unresolved to leave them out)")
    rest = lines[1:_MAX_LISTED] + ([f"... and {len(lines) - _MAX_LISTED} more"] if len(lines) > _MAX_LISTED else [])
    return DatasetError("\n".join([head, *rest]))


def _age(path: Path) -> float | None:
    """PatientAge of the image in years; None when absent, unreadable or outside 0-120."""
    age = parse_age(header_text(read_header(path, ["PatientAge"]), "PatientAge"))
    return age if age is not None and 0 <= age <= AGE_RANGE[1] else None


def _write_union(img: Mammogram, image_path: Path, sources, dest: Path) -> tuple[Path, int]:
    """Union of the image's masks on its grid, written to ``dest``; returns (dest, masks resampled)."""
    grid = image_grid(image_path)
    rows, cols = grid.shape[1], grid.shape[2]
    union = np.zeros((rows, cols), bool)
    resampled = 0
    for a, cands in sources:
        path, mask = pick_mask(cands, a.where("ROI mask file path"))
        fitted, was = fit_to_grid(mask, rows, cols, mask_path=path, image_path=image_path)
        union |= fitted
        resampled += was
    return write_mask(union, grid, dest), resampled


def _add_notes(summary: AdapterSummary, kept: list[Mammogram], unusual, ages_unknown, resampled, left_out,
               include_assessment) -> None:
    notes = summary.notes
    both = [img.name for img in kept if len(img.splits) > 1]
    if both:
        notes.append(f"{len(both)} image(s) listed in both a train and a test CSV were put in test: "
                     f"{', '.join(both[:10])}{' ...' if len(both) > 10 else ''}")
    per_patient: dict[str, set[str]] = collections.defaultdict(set)
    for img in kept:
        per_patient[img.key[0]].add(img.split)
    mixed = sorted(p for p, s in per_patient.items() if len(s) > 1)
    if mixed:
        notes.append(f"{len(mixed)} patient(s) have images in both train and test (the official CBIS-DDSM "
                     f"mass and calc splits were drawn separately): {', '.join(mixed[:10])}"
                     f"{' ...' if len(mixed) > 10 else ''}")
    conflicts = sum(img.density()[1] for img in kept)
    if conflicts:
        notes.append(f"{conflicts} image(s) have disagreeing breast density values; the first was used")
    for what, n in sorted(unusual.items()):
        notes.append(f"{n} row(s) with {what} read as unknown")
    if ages_unknown:
        notes.append(f"{ages_unknown} image(s) without a readable, plausible (0-{AGE_RANGE[1]}) PatientAge in "
                     f"the DICOM header: age unknown")
    if resampled:
        notes.append(f"{resampled} ROI mask(s) resampled (nearest neighbour) to their image's size")
    if left_out:
        notes.append(f"field(s) {', '.join(left_out)} left out: no image has a value")
    notes.append("assessment (BI-RADS) " + ("INCLUDED: near label leak, report results with and without it"
                                            if include_assessment else "left out (near label leak); "
                                            "include_assessment=True adds it"))
