"""Temperature scaling: one parameter that makes confidence mean what it says.

Raw ensemble probabilities of boosted trees are usually over-confident and those of
forecasters mapped through a normal distribution often under-confident. Dividing the log
probabilities by a temperature ``T`` and renormalising keeps the ranking of the classes
(so the calls do not change) while fitting how sure they are; one parameter cannot overfit
a validation block of thousands of rows. ``T`` is fitted on validation rows only.
"""

from __future__ import annotations

import numpy as np

from quantum.ml.evaluation import EPSILON, log_loss


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(probabilities, EPSILON, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=-1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising log loss on these (validation) rows."""
    from scipy.optimize import minimize_scalar  # training only: the `ml` extra's

    result = minimize_scalar(
        lambda log_t: log_loss(apply_temperature(probabilities, float(np.exp(log_t))), labels),
        bounds=(np.log(0.05), np.log(20.0)), method="bounded",
    )
    return float(np.exp(result.x))
