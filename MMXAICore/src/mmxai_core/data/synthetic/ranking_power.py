"""How many training patients the synthetic cohort needs before "every informative field above every noise
field" is a property of the fields and not of the sample (research use only, not for diagnosis).

The item-14 target of the explanation issue ranks the clinical fields by mean |Shapley value| and asks that
every informative field (:data:`~.label_model.CLINICAL_COEFS`) come above every noise field
(:data:`~.fields.NOISE_FIELDS`). A model fitted to n patients also fits the chance associations of the noise
fields in those n patients, and the weakest informative field (``prior_biopsy``: log-odds 0.85 in 15 % of
the patients, a mean |contribution| of about 0.22 log-odds) is of the size of such an association when n is
a few hundred. This module measures how often the *best case* meets the target:

* draw ``n_train`` patients from the cohort's own distributions (:func:`~.fields.sample_clinical`, a
  standard-normal image score ``S``) and labels from the label model (:func:`~.label_model.logit`);
* fit a logistic regression of the label model's own form (numeric fields and density codes linear,
  ``ln(ca15_3)``, booleans 0/1, one-hot categories, ``S`` and the density x ``S`` interaction) on complete
  data, i.e. the true model class with the true image score, no missing cells and no image to learn;
* rank the fields by mean |contribution| (log-odds, centred on the training means) over ``n_test`` fresh
  patients; the target is met when the smallest informative field beats the largest noise field.

A network trained on images can only do worse than this estimator at the same n, so the rate bounds what
any demo model can be expected to reach. ``python -m mmxai_core.data.synthetic.ranking_power --n 280 560``
prints the rates (README, "Known limitations").
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np

from mmxai_core.data.synthetic import fields as synth_fields
from mmxai_core.data.synthetic import label_model

#: Inverse L2 strength of the logistic regression (scikit-learn's default; weaker shrinkage changes little,
#: stronger shrinkage lowers the rate: it shrinks the weak true effects as well).
DEFAULT_C = 1.0


def design(values: dict[str, np.ndarray], image_score: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """Design matrix (n, p) in the label model's form and the field that owns each column (None for the
    image columns ``S`` and ``(density - 1.5) * S``)."""
    columns: list[np.ndarray] = []
    owner: list[str | None] = []
    for field in synth_fields.FIELDS:
        x = values[field.name]
        if field.type == "categorical":
            for code in range(1, len(field.categories)):          # code 0 is the reference
                columns.append((x == code).astype(float))
                owner.append(field.name)
            continue
        columns.append(np.log(x) if field.name == "ca15_3" else x.astype(float))
        owner.append(field.name)
    density = values[label_model.INTERACTION_FIELD] - label_model.DENSITY_CENTER
    columns += [image_score, density * image_score]
    owner += [None, None]
    return np.column_stack(columns), owner


def mean_abs_contributions(model, x_train: np.ndarray, x_test: np.ndarray, owner: list[str | None]
                           ) -> dict[str, float]:
    """Mean over the test rows of |sum of a field's column contributions| (log-odds, columns centred on
    the training means)."""
    per_column = (x_test - x_train.mean(axis=0)) * model.coef_[0]
    out = {}
    for name in dict.fromkeys(o for o in owner if o is not None):
        cols = [j for j, o in enumerate(owner) if o == name]
        out[name] = float(np.abs(per_column[:, cols].sum(axis=1)).mean())
    return out


def ranking_rate(n_train: int, reps: int, n_test: int = 2000, seed: int = 0, c: float = DEFAULT_C) -> dict:
    """Fraction of ``reps`` simulated cohorts of ``n_train`` patients in which the fitted model of the true
    form ranks every informative field above every noise field (see the module docstring).

    Returns ``{"n_train", "n_test", "reps", "met", "rate", "weakest"}``; ``weakest`` counts which
    informative field came lowest.
    """
    from sklearn.linear_model import LogisticRegression

    if n_train < 20 or reps < 1 or n_test < 1:
        raise ValueError(f"need n_train >= 20, reps >= 1, n_test >= 1; got {n_train}, {reps}, {n_test}")
    informative, noise = list(label_model.CLINICAL_COEFS), list(synth_fields.NOISE_FIELDS)
    met, weakest = 0, {name: 0 for name in informative}
    n = n_train + n_test
    for rep in range(reps):
        rng = np.random.default_rng([seed, rep])
        values = synth_fields.sample_clinical(rng, n)
        score = rng.standard_normal(n)
        labels = rng.random(n) < label_model.sigmoid(label_model.logit(score, values))
        x, owner = design(values, score)
        fit = LogisticRegression(C=c, max_iter=5000).fit(x[:n_train], labels[:n_train])
        contrib = mean_abs_contributions(fit, x[:n_train], x[n_train:], owner)
        low = min(informative, key=contrib.get)
        weakest[low] += 1
        met += contrib[low] > max(contrib[name] for name in noise)
    return {"n_train": n_train, "n_test": n_test, "reps": reps, "met": met, "rate": met / reps,
            "weakest": {k: v for k, v in weakest.items() if v}}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmxai_core.data.synthetic.ranking_power",
                                description="How often the true model class, fitted to n synthetic patients, "
                                            "ranks every informative clinical field above every noise field "
                                            "(research use, not for diagnosis).")
    p.add_argument("--n", type=int, nargs="+", default=[280, 560, 1120, 2240], help="training patients")
    p.add_argument("--reps", type=int, default=200, help="simulated cohorts per n (default 200)")
    p.add_argument("--n-test", type=int, default=2000, help="patients the ranking is measured on (the demo's "
                                                            "test split has 60)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        for n in args.n:
            r = ranking_rate(n, args.reps, args.n_test, args.seed)
            print(f"n_train {n:5d}: target met in {r['met']:3d}/{r['reps']} cohorts ({100 * r['rate']:.0f} %); "
                  f"weakest informative field: {r['weakest']}", flush=True)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
