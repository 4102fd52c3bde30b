"""The evaluation harness: grid runs, the run store, metrics and reports.

Modules (imported on use, so that ``import infscale.evaluation`` stays light):

* :mod:`infscale.evaluation.harness` — :class:`~infscale.evaluation.harness.EvalConfig`,
  ``start_run`` / ``run_eval``: strategies x budgets x seeds over a dataset with bounded
  concurrency, sample pools reused across budgets, resumable after a kill.
* :mod:`infscale.evaluation.store` — the SQLite run store: runs, every sample (prompt, text,
  tokens, seed, scores, answer, correctness) and every strategy result.
* :mod:`infscale.evaluation.metrics` — pure functions over stored results: accuracy with
  small-sample intervals (Wilson, Beta-binomial), unbiased pass@k, coverage vs k with its
  exponentiated power-law fit, majority@k, cost per problem, paired comparisons, weak-verifier
  false-positive rate and ceiling, and a reusable holdout (Thresholdout). numpy only.
* :mod:`infscale.evaluation.report` — terminal tables and one self-contained HTML page with
  inline SVG plots drawn from a :func:`~infscale.evaluation.metrics.summarize` summary.

The usage is in ``docs/evaluation.md``; the formulas and their references in
``docs/evaluation-metrics.md``.
"""

from __future__ import annotations

__all__: list[str] = []
