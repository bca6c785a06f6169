"""The ensemble: weighted members, calibrated confidence, a quorum.

Weights are learned on validation rows (never on test rows): soft-max parameters that
minimise the log loss of the weighted mean of the members' probabilities. A temperature
(:mod:`quantum.ml.calibration`) is then fitted on a later, separate part of the validation
block so the confidence the fleet thresholds on is calibrated.

At serving time a member may be absent (its file missing or corrupt, or its input window
not yet full for a symbol): its weight is dropped and the rest renormalised. Below the
quorum the ensemble gives no prediction at all; nothing ever stands in for a member.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from quantum.ml.calibration import apply_temperature, fit_temperature
from quantum.ml.evaluation import log_loss
from quantum.ml.members import Member

DEFAULT_QUORUM = 3


def fit_weights(member_probabilities: Mapping[str, np.ndarray],
                labels: np.ndarray) -> dict[str, float]:
    """Weights (summing to 1) minimising the validation log loss of the weighted mixture."""
    # scipy is the `ml` extra's (training); the services that only load and serve an
    # ensemble (clm, intent-bridge, ai-engine) import this module on the base install.
    from scipy.optimize import minimize
    names = sorted(member_probabilities)
    stacked = np.stack([member_probabilities[n] for n in names])  # members x rows x 3

    def loss(parameters: np.ndarray) -> float:
        weights = np.exp(parameters - parameters.max())
        weights /= weights.sum()
        return log_loss(np.tensordot(weights, stacked, axes=1), labels)

    result = minimize(loss, np.zeros(len(names)), method="Nelder-Mead" if len(names) > 1 else
                      "Powell", options={"maxiter": 400, "xatol": 1e-4, "fatol": 1e-7})
    weights = np.exp(result.x - result.x.max())
    weights /= weights.sum()
    return {name: float(w) for name, w in zip(names, weights, strict=True)}


def mix(member_probabilities: Mapping[str, np.ndarray], weights: Mapping[str, float],
        temperature: float) -> np.ndarray:
    """Calibrated weighted mixture over the members present (weights renormalised)."""
    present = [n for n in member_probabilities if weights.get(n, 0.0) > 0]
    total = sum(weights[n] for n in present)
    if not present or total <= 0:
        raise ValueError("no weighted member present")
    mixture = sum(weights[n] / total * member_probabilities[n] for n in present)
    return apply_temperature(np.asarray(mixture), temperature)


def fit_ensemble(member_probabilities: Mapping[str, np.ndarray],
                 labels: np.ndarray) -> tuple[dict[str, float], float]:
    """Weights on the first 60 % of the validation rows, temperature on the rest."""
    cut = int(labels.size * 0.6)
    weights = fit_weights({n: p[:cut] for n, p in member_probabilities.items()}, labels[:cut])
    later = {n: p[cut:] for n, p in member_probabilities.items()}
    temperature = fit_temperature(mix(later, weights, 1.0), labels[cut:])
    return weights, temperature


@dataclass
class Ensemble:
    """Loaded members with their learned weights; ``missing`` says why a member is absent."""

    version: str
    members: dict[str, Member]
    weights: dict[str, float]
    temperature: float
    quorum: int = DEFAULT_QUORUM
    missing: dict[str, str] = field(default_factory=dict)
    expected: tuple[str, ...] = ()

    @property
    def loaded(self) -> tuple[str, ...]:
        return tuple(sorted(self.members))

    @property
    def quorate(self) -> bool:
        return len(self.members) >= self.quorum

    def member_probabilities(self, features: np.ndarray, windows: np.ndarray | None,
                             ) -> dict[str, np.ndarray]:
        """Each loaded member's probabilities; forecasters are skipped without ``windows``."""
        out: dict[str, np.ndarray] = {}
        for name, member in self.members.items():
            if name in ("nhits", "patchtst") and windows is None:
                continue
            out[name] = member.predict_proba(features, windows if windows is not None else
                                             np.empty((features.shape[0], 0), np.float32))
        return out

    def combine(self, member_probabilities: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """The calibrated mixture, or None when fewer than ``quorum`` members voted."""
        if len(member_probabilities) < self.quorum:
            return None
        return mix(member_probabilities, self.weights, self.temperature)

    def predict_proba(self, features: np.ndarray, windows: np.ndarray | None) -> np.ndarray | None:
        return self.combine(self.member_probabilities(features, windows))
