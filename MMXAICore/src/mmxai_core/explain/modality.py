"""Two-player Shapley split of one prediction between the image and the clinical data (research use only).

Players: I (the image; absent = the model's learned missing-image token, as with ``image_present=False``)
and C (all clinical data; absent = every clinical field unknown). With the four corner values

    v(I, C)  both as entered            v(I, 0)  image, no clinical data
    v(0, C)  clinical data, no image    v(0, 0)  neither

the Shapley values are

    phi_image    = 1/2 [(v(I, C) - v(0, C)) + (v(I, 0) - v(0, 0))]
    phi_clinical = 1/2 [(v(I, C) - v(I, 0)) + (v(0, C) - v(0, 0))]

and phi_image + phi_clinical = v(I, C) - v(0, 0). The image is encoded once; the four corners are four
decode rows. A case without an image, or a variant that ignores a modality, gives that modality 0.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mmxai_core.explain.value_function import CoalitionValue


@dataclasses.dataclass
class ModalitySplit:
    """image, clinical: the two Shapley values; v_both = v(I, C) = f(x), v_image_only = v(I, 0),
    v_clinical_only = v(0, C), v_neither = v(0, 0); target / output as in the value function."""

    image: float
    clinical: float
    v_both: float
    v_image_only: float
    v_clinical_only: float
    v_neither: float
    target: int
    output: str

    @property
    def interaction(self) -> float:
        """v(I,C) - v(I,0) - v(0,C) + v(0,0): the part the two modalities only make together (split
        equally between them by the Shapley values)."""
        return self.v_both - self.v_image_only - self.v_clinical_only + self.v_neither

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantity": "two-player Shapley split of the prediction: image (absent = missing-image token) "
                        "vs clinical data (absent = all fields unknown)",
            "image": float(self.image), "clinical": float(self.clinical),
            "corners": {"image_and_clinical": float(self.v_both), "image_only": float(self.v_image_only),
                        "clinical_only": float(self.v_clinical_only), "neither": float(self.v_neither)},
            "interaction": float(self.interaction), "target": self.target, "output": self.output,
        }


def split_of_game(vf: CoalitionValue) -> ModalitySplit:
    """The split from a prepared :class:`CoalitionValue` (image already encoded)."""
    n_fields = len(vf.field_names)
    rows = np.stack([np.ones(n_fields, dtype=bool), np.zeros(n_fields, dtype=bool)])  # (2, F): C, 0
    with_image = vf.evaluate_known(rows, image=True)
    without = vf.evaluate_known(rows, image=False)
    v_ic, v_i0 = float(with_image[0]), float(with_image[1])
    v_0c, v_00 = float(without[0]), float(without[1])
    phi_image = 0.5 * ((v_ic - v_0c) + (v_i0 - v_00))
    phi_clin = 0.5 * ((v_ic - v_i0) + (v_0c - v_00))
    return ModalitySplit(phi_image, phi_clin, v_ic, v_i0, v_0c, v_00, vf.target, vf.output)


def modality_split(model, images=None, clin_values=None, clin_missing=None, *, slice_mask=None,
                   image_present: bool | None = None, target: int | None = None,
                   output: str = "probability") -> ModalitySplit:
    """Image vs clinical split of one case (inputs as in :func:`mmxai_core.explain.shapley.clinical_shapley`:
    images (1, S, 1, H, W) or (1, 1, H, W) or None, clin_values / clin_missing (F,) or (1, F))."""
    vf = CoalitionValue(model, images, clin_values, clin_missing, slice_mask=slice_mask,
                        image_present=image_present, target=target, output=output)
    return split_of_game(vf)


__all__ = ["ModalitySplit", "modality_split", "split_of_game"]
