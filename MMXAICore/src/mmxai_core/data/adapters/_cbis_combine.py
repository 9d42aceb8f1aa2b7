"""How the abnormality rows of one CBIS-DDSM mammogram become one manifest row, and its clinical fields.

An image is (patient, side, view). Its rows come from the mass and/or calc CSVs.

* **label**: ``malignant`` if ANY abnormality is MALIGNANT, else ``benign`` (BENIGN_WITHOUT_CALLBACK is
  benign).
* **split**: the official split of the CSV(s) the rows came from; an image listed in a train AND a test
  CSV goes to ``test`` (never train on an image that is also evaluated) and is reported.
* **descriptors** (mass shape + margins; calc type + distribution) are those of the image's *primary*
  mass / calcification: the one with the lowest ``abnormality id`` of that type. One lesion's
  descriptors stay together (shape and margins are never mixed from two masses), each descriptor stays
  one categorical field (the model tokenises each field; multi-hot over CBIS's ~20 shape/margin
  combinations would add dozens of sparse fields), and the choice is blind to pathology, so it adds no
  label information ("the most suspicious lesion" would need the pathology or the BI-RADS assessment).
* ``abnormality_type``: ``mass``, ``calcification`` or ``calcification+mass`` (all types present);
  ``n_abnormalities``: the number of annotated findings on the image.
* ``subtlety``: the maximum over the abnormalities (the most conspicuous finding);
  ``assessment`` (only on request): the maximum BI-RADS category.
* ``breast_density``: a property of the breast, equal on all rows; the first known value is used and
  disagreements are counted.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from mmxai_core.data.adapters._cbis_csv import (ASSESSMENT_LEVELS, DENSITY_LEVELS, SUBTLETY_LEVELS,
                                                Abnormality)
from mmxai_core.data.adapters._fields import make_field

DESCRIPTOR_FIELDS = {"mass shape": "mass_shape", "mass margins": "mass_margins", "calc type": "calc_type",
                     "calc distribution": "calc_distribution"}
_KIND_ORDER = {"mass": 0, "calc": 1}
AGE_RANGE = (0, 120)


@dataclasses.dataclass
class Mammogram:
    """The abnormality rows of one image, in a fixed order (mass before calc, then abnormality id)."""

    abnormalities: list[Abnormality]

    @property
    def key(self) -> tuple[str, str, str]:
        return self.abnormalities[0].image_key

    @property
    def name(self) -> str:
        """``P_00001_LEFT_CC``: used for the mask file name and in reports."""
        return "_".join(self.key)

    @property
    def label(self) -> str:
        return "malignant" if any(a.pathology == "malignant" for a in self.abnormalities) else "benign"

    @property
    def splits(self) -> set[str]:
        return {a.split for a in self.abnormalities}

    @property
    def split(self) -> str:
        """``test`` if any row came from a test CSV, else ``train``."""
        return "test" if "test" in self.splits else "train"

    def primary(self, kind: str) -> Abnormality | None:
        """The lowest-numbered abnormality from the ``kind`` ("mass"/"calc") CSV, or None."""
        rows = [a for a in self.abnormalities if a.kind == kind]
        return min(rows, key=lambda a: (a.abnormality_id, a.row)) if rows else None

    def density(self) -> tuple[int | None, bool]:
        """(first known density, whether known values disagree)."""
        known = [a.density for a in self.abnormalities if a.density is not None]
        return (known[0] if known else None), len(set(known)) > 1

    def clinical(self, include_assessment: bool) -> dict[str, Any]:
        """Clinical values by field name (None = unknown); age is added by the adapter (DICOM header)."""
        out: dict[str, Any] = {"breast_density": self.density()[0]}
        types = sorted({a.abnormality_type for a in self.abnormalities})
        out["abnormality_type"] = "+".join(types)
        out["n_abnormalities"] = len(self.abnormalities)
        for kind, names in (("mass", ("mass shape", "mass margins")), ("calc", ("calc type", "calc distribution"))):
            first = self.primary(kind)
            for name in names:
                out[DESCRIPTOR_FIELDS[name]] = None if first is None else first.descriptors.get(name)
        subtle = [a.subtlety for a in self.abnormalities if a.subtlety is not None]
        out["subtlety"] = max(subtle) if subtle else None
        if include_assessment:
            birads = [a.assessment for a in self.abnormalities if a.assessment is not None]
            out["assessment"] = max(birads) if birads else None
        return out


def group_by_image(abnormalities: Iterable[Abnormality]) -> list[Mammogram]:
    """One :class:`Mammogram` per (patient, side, view), sorted by that key."""
    groups: dict[tuple[str, str, str], list[Abnormality]] = {}
    for a in abnormalities:
        groups.setdefault(a.image_key, []).append(a)
    return [Mammogram(sorted(rows, key=lambda a: (_KIND_ORDER[a.kind], a.abnormality_id, str(a.source), a.row)))
            for _, rows in sorted(groups.items())]


def cbis_fields(values: list[dict[str, Any]], abnormalities: Iterable[Abnormality],
                include_assessment: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """The schema fields for the CBIS-DDSM clinical values, and the names of fields left out because
    no row has a value for them (e.g. calc descriptors when only mass CSVs were given).

    Descriptor categories are every value found in the CSVs (not only those of primary lesions), so
    the schema holds the dataset's whole vocabulary."""
    vocab: dict[str, set[str]] = {}
    for a in abnormalities:
        for column, value in a.descriptors.items():
            if value is not None:
                vocab.setdefault(DESCRIPTOR_FIELDS[column], set()).add(value)

    def observed(name: str) -> list[str]:
        seen = {str(v[name]) for v in values if v.get(name) is not None}
        return sorted(seen | vocab.get(name, set()))

    fields = [
        make_field("age", "numeric", "Age", unit="years", range=list(AGE_RANGE), dicom="PatientAge",
                   help="Patient age at the examination, from the DICOM header (PatientAge) of the image."),
        make_field("breast_density", "ordinal", "Breast density (BI-RADS)", categories=list(DENSITY_LEVELS),
                   help="ACR BI-RADS breast composition: 1 fatty ... 4 extremely dense."),
        make_field("abnormality_type", "categorical", "Abnormality type(s)",
                   categories=["calcification", "calcification+mass", "mass"],
                   help="Types of all annotated findings on the image, joined by '+'."),
        make_field("n_abnormalities", "numeric", "Number of findings", range=[1, 100],
                   help="Number of annotated findings on the image."),
    ]
    descriptor_help = {
        "mass_shape": ("Mass shape", "BI-RADS shape of the primary (lowest-numbered) mass; unknown without a mass."),
        "mass_margins": ("Mass margins", "BI-RADS margins of the primary (lowest-numbered) mass."),
        "calc_type": ("Calcification type", "Morphology of the primary (lowest-numbered) calcification finding."),
        "calc_distribution": ("Calcification distribution", "Distribution of the primary calcification finding."),
    }
    left_out = []
    for name, (label, help_text) in descriptor_help.items():
        cats = observed(name)
        if cats:
            fields.append(make_field(name, "categorical", label, categories=cats, help=help_text))
        else:
            left_out.append(name)
    fields.append(make_field("subtlety", "ordinal", "Subtlety", categories=list(SUBTLETY_LEVELS),
                             help="Radiologist's subtlety rating, 1 subtle ... 5 obvious; the maximum over the "
                                  "image's findings."))
    if include_assessment:
        fields.append(make_field(
            "assessment", "ordinal", "BI-RADS assessment", categories=list(ASSESSMENT_LEVELS),
            help="BI-RADS assessment category (maximum over the image's findings). WARNING: it is the "
                 "radiologist's malignancy judgement and nearly gives the label away; report results "
                 "with and without it."))
    return fields, left_out
