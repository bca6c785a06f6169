"""The baselines every model is scored beside, each fitted on training rows only.

* **prior**: the training class frequencies for every row (the majority class wins).
* **momentum_sign**: the sign of the last 12-bar return, with the label frequencies that
  followed each sign in training as its probabilities.
* **baseline_model**: the fleet's transparent momentum rule
  (:class:`quantum.models.baseline.BaselineMomentum`). It gives P(LONG) and P(SHORT) only;
  for the three-class scores its two probabilities share ``1 - P_train(FLAT)`` and FLAT
  gets the training share. Its trading calls are its own rule (direction only when the
  trend agrees, confidence at least the threshold), exactly as the ai-engine acts on it.
"""

from __future__ import annotations

import numpy as np

from quantum.features import FEATURE_NAMES
from quantum.ml.labels import FLAT, LONG, SHORT
from quantum.ml.members import class_probabilities_from_labels
from quantum.models.baseline import BaselineMomentum


def tables(train_features: np.ndarray, train_labels: np.ndarray) -> dict[str, list[float]]:
    """What the baselines learn from training rows (stored with a model for ``evaluate``)."""
    up = train_features[:, FEATURE_NAMES.index("roc_12")] > 0
    return {"prior": class_probabilities_from_labels(train_labels).tolist(),
            "momentum_up": class_probabilities_from_labels(train_labels[up]).tolist(),
            "momentum_down": class_probabilities_from_labels(train_labels[~up]).tolist()}


def prior(table: dict[str, list[float]], rows: int) -> np.ndarray:
    return np.tile(np.asarray(table["prior"]), (rows, 1))


def momentum_sign(table: dict[str, list[float]], features: np.ndarray) -> np.ndarray:
    up = features[:, FEATURE_NAMES.index("roc_12")] > 0
    return np.where(up[:, None], np.asarray(table["momentum_up"]),
                    np.asarray(table["momentum_down"]))


def baseline_model(table: dict[str, list[float]], features: np.ndarray,
                   threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Three-class probabilities and the rule's own calls for ``features`` rows."""
    model = BaselineMomentum()
    flat_share = table["prior"][FLAT]
    index = {name: FEATURE_NAMES.index(name) for name in model.required_features}
    probabilities = np.empty((features.shape[0], 3))
    calls = np.full(features.shape[0], FLAT, dtype=np.int64)
    for row in range(features.shape[0]):
        values = {name: float(features[row, i]) for name, i in index.items()}
        prediction = model.predict(values)
        probabilities[row] = ((1 - flat_share) * prediction.prob_short, flat_share,
                              (1 - flat_share) * prediction.prob_long)
        if prediction.direction != "FLAT" and prediction.confidence >= threshold:
            calls[row] = LONG if prediction.direction == "LONG" else SHORT
    return np.clip(probabilities, 1e-6, 1.0), calls


def all_baselines(table: dict[str, list[float]], features: np.ndarray,
                  threshold: float) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """name -> (probabilities, own calls or None for the thresholded arg-max rule)."""
    model_probabilities, model_calls = baseline_model(table, features, threshold)
    return {"prior": (prior(table, features.shape[0]), None),
            "momentum_sign": (momentum_sign(table, features), None),
            "baseline_model": (model_probabilities, model_calls)}
