"""Research: walk-forward backtests as the judge of a strategy, and the parameter search.

* :mod:`quantum.research.folds` — the time blocks of each fold and the forward returns of
  any horizon from one dataset;
* :mod:`quantum.research.trading` — one block backtested through the in-process engine (the
  fleet's handlers, full costs) and its figures; the baselines that need no model;
* :mod:`quantum.research.walkforward` — ``quantumctl walkforward``;
* :mod:`quantum.research.optimize` — ``quantumctl optimize`` (Optuna, shared studies on
  PostgreSQL).
"""
