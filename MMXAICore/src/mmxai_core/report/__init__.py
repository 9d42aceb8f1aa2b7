"""Reports of evaluation results. Research use, not for diagnosis.

- :mod:`mmxai_core.report.tables` -- JSON / CSV / Markdown metric tables and ablation tables (atomic
  writes).
- :mod:`mmxai_core.report.plots` -- reliability diagram and grouped metric bar chart (PNG, matplotlib Agg;
  every figure carries the research-use notice).

Submodules are not imported here, so ``import mmxai_core.report`` does not load matplotlib.
"""
