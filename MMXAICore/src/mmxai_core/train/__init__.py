"""Training and evaluation of the multimodal classifier. Research use, not for diagnosis.

Evaluation statistics live here; the training loop will join them later.

- :mod:`mmxai_core.train.metrics` -- point metrics (accuracy, sensitivity, specificity, F1, AUC) and
  :func:`~mmxai_core.train.metrics.evaluate_predictions`, the one-call evaluation with patient-level
  bootstrap CIs and calibration.
- :mod:`mmxai_core.train.thresholds` -- decision threshold chosen on validation data (Youden's J or a
  target sensitivity), then applied unchanged to test data.
- :mod:`mmxai_core.train.bootstrap` -- vectorised patient-level bootstrap (patients, not cases, are
  resampled).
- :mod:`mmxai_core.train.calibration` -- expected calibration error, reliability curve, Brier score.
- :mod:`mmxai_core.train.compare` -- paired comparisons of models scored on the same cases: paired
  patient-level bootstrap, DeLong's test for two correlated AUCs, ablation summaries.

Submodules are not imported here, so ``import mmxai_core.train`` stays cheap.
"""
