"""Model training, evaluation and the model registry for the ai-engine.

Training code (labels, datasets, walk-forward splits, members, ensemble, calibration,
evaluation) lives here; serving reads the same artifacts through :mod:`quantum.ml.registry`
and :mod:`quantum.ml.ensemble`. Heavy imports (xgboost, lightgbm, torch, neuralforecast)
happen inside the functions that need them, so importing this package stays cheap.
"""
