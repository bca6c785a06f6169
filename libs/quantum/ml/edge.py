"""The edge model: the expected return of a trade over its horizon, calibrated, with its spread.

A LightGBM regressor is fitted on a fold's **train** rows to the forward log return over the
label horizon (winsorised at ``clip_sigmas`` standard deviations so a handful of crash bars do
not own the fit). Its raw output is not a return one can compare with a fee: boosted trees
over noisy targets are biased towards the training mean and badly scaled. So the raw output
is **calibrated on the validation rows** (never the test rows) by an isotonic regression of
the realised forward return on it (monotone: a higher raw score never means a lower expected
return), and the spread of the realised return around the calibrated mean is measured there
too. Serving then has, per bar:

* ``expected_return`` (mu): the calibrated mean forward log return over the horizon;
* ``spread`` (s): the standard deviation of the realised return around mu on validation;
* ``P(win)`` for a side and a cost c: ``1 - Phi((c - mu) / s)`` for a long and
  ``Phi((-c - mu) / s)`` for a short, the probability the trade beats its cost.

The decision rule (:mod:`quantum.risk.costs`) acts only when mu exceeds the full cost of the
trade by the policy's margin; the calibration is reported per decile of mu on test blocks
(:func:`calibration_table`), so a miscalibrated model is visible, not trusted.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

EDGE = "edge.json"
BOOSTER = "edge-lightgbm.txt"
THREADS = 2


class EdgeConfig(BaseModel):
    """Sizes of the edge regressor (chosen for 2 cores and ~800k rows).

    Attributes:
        rounds: boosting rounds.
        leaves: leaves per tree.
        learning_rate: shrinkage.
        min_rows_leaf: rows a leaf needs (large: the target is mostly noise).
        feature_fraction / bagging_fraction: column and row subsampling per tree.
        clip_sigmas: the target is winsorised at this many standard deviations.
        max_rows: training rows kept (the newest), to bound the fit time.
        seed: every random choice.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rounds: int = Field(150, ge=1)
    leaves: int = Field(15, ge=2)
    learning_rate: float = Field(0.05, gt=0, le=1)
    min_rows_leaf: int = Field(500, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.7, gt=0, le=1)
    clip_sigmas: float = Field(5.0, gt=0)
    max_rows: int = Field(600_000, ge=100)
    seed: int = 7


@dataclass(frozen=True)
class Calibration:
    """Isotonic map raw score -> expected return (knots, linear between, clipped outside)."""

    knots_x: np.ndarray
    knots_y: np.ndarray
    spread: float

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.knots_x, self.knots_y)

    def document(self) -> dict[str, Any]:
        return {"knots_x": self.knots_x.tolist(), "knots_y": self.knots_y.tolist(),
                "spread": self.spread}

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Calibration:
        x = np.asarray(doc["knots_x"], dtype=np.float64)
        y = np.asarray(doc["knots_y"], dtype=np.float64)
        if x.size == 0 or x.size != y.size or not np.all(np.diff(x) >= 0):
            raise ValueError("edge calibration knots are empty, unequal or unsorted")
        spread = float(doc["spread"])
        if not spread > 0:
            raise ValueError(f"edge calibration spread {spread} is not positive")
        return cls(x, y, spread)


def fit_calibration(raw: np.ndarray, realised: np.ndarray, max_knots: int = 64) -> Calibration:
    """Isotonic regression of ``realised`` on ``raw``, thinned to at most ``max_knots``."""
    from sklearn.isotonic import IsotonicRegression

    ok = np.isfinite(raw) & np.isfinite(realised)
    if ok.sum() < 50:
        raise ValueError(f"only {int(ok.sum())} validation rows to calibrate the edge on")
    iso = IsotonicRegression(out_of_bounds="clip").fit(raw[ok], realised[ok])
    x = np.asarray(iso.X_thresholds_, dtype=np.float64)
    y = np.asarray(iso.y_thresholds_, dtype=np.float64)
    if x.size > max_knots:
        keep = np.unique(np.linspace(0, x.size - 1, max_knots).round().astype(int))
        x, y = x[keep], y[keep]
    fitted = np.interp(raw[ok], x, y)
    spread = float(np.std(realised[ok] - fitted)) or 1e-6
    return Calibration(x, y, spread)


def win_probability(mu: np.ndarray, spread: float, cost: np.ndarray | float,
                    side: int) -> np.ndarray:
    """P(the trade's return beats ``cost``): side +1 long, -1 short (normal spread)."""
    z = (np.asarray(cost) - side * np.asarray(mu)) / spread
    return 0.5 * np.vectorize(math.erfc)(z / math.sqrt(2.0))


class EdgeModel:
    """A fitted booster with its calibration; predicts mu for feature rows."""

    def __init__(self, booster: Any, calibration: Calibration, horizon: int,
                 feature_names: tuple[str, ...]) -> None:
        self.booster = booster
        self.calibration = calibration
        self.horizon = horizon
        self.feature_names = feature_names

    def raw(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(features, num_threads=THREADS),
                          dtype=np.float64)

    def expected_return(self, features: np.ndarray) -> np.ndarray:
        return self.calibration(self.raw(features))

    def save(self, directory: Path, extra: dict[str, Any]) -> list[str]:
        self.booster.save_model(str(directory / BOOSTER))
        (directory / EDGE).write_text(json.dumps({
            "horizon": self.horizon, "feature_names": list(self.feature_names),
            "calibration": self.calibration.document(), **extra}, indent=1, sort_keys=True))
        return [BOOSTER, EDGE]

    @classmethod
    def load(cls, directory: Path) -> EdgeModel:
        import lightgbm

        doc = json.loads((directory / EDGE).read_text())
        booster = lightgbm.Booster(model_file=str(directory / BOOSTER))
        return cls(booster, Calibration.from_document(doc["calibration"]), int(doc["horizon"]),
                   tuple(doc["feature_names"]))


def fit_edge(features: np.ndarray, forward_return: np.ndarray, train: np.ndarray,
             validation: np.ndarray, horizon: int, feature_names: tuple[str, ...],
             config: EdgeConfig | None = None) -> tuple[EdgeModel, dict[str, Any]]:
    """Fit on ``train`` rows, calibrate on ``validation`` rows; returns the model and facts."""
    import lightgbm

    config = config or EdgeConfig()
    started = time.perf_counter()
    rows = train[-config.max_rows:]
    target = forward_return[rows].astype(np.float64)
    sigma = float(np.nanstd(target)) or 1e-6
    target = np.clip(target, -config.clip_sigmas * sigma, config.clip_sigmas * sigma)
    params = {"objective": "regression", "num_leaves": config.leaves,
              "learning_rate": config.learning_rate, "min_data_in_leaf": config.min_rows_leaf,
              "feature_fraction": config.feature_fraction,
              "bagging_fraction": config.bagging_fraction, "bagging_freq": 1,
              "seed": config.seed, "deterministic": True, "num_threads": THREADS,
              "verbosity": -1}
    dataset = lightgbm.Dataset(features[rows], label=target, free_raw_data=True)
    booster = lightgbm.train(params, dataset, num_boost_round=config.rounds)
    fit_seconds = time.perf_counter() - started
    model = EdgeModel(booster, Calibration(np.zeros(1), np.zeros(1), 1.0), horizon,
                      feature_names)
    raw_validation = model.raw(features[validation])
    model.calibration = fit_calibration(raw_validation, forward_return[validation])
    facts = {"train_rows": int(rows.size), "validation_rows": int(validation.size),
             "target_std": sigma, "fit_seconds": fit_seconds,
             "spread": model.calibration.spread,
             "validation_calibration": calibration_table(
                 model.calibration(raw_validation), forward_return[validation])}
    return model, facts


def calibration_table(mu: np.ndarray, realised: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Deciles of predicted mu: mean predicted vs mean realised, the slope of realised on
    predicted (1 = calibrated, 0 = no information) and the overall bias."""
    ok = np.isfinite(mu) & np.isfinite(realised)
    mu, realised = mu[ok], realised[ok]
    if mu.size < bins:
        return {"rows": int(mu.size), "bins": []}
    order = np.argsort(mu, kind="stable")
    table = []
    for part in np.array_split(order, bins):
        table.append({"predicted": float(mu[part].mean()), "realised": float(realised[part].mean()),
                      "rows": int(part.size)})
    variance = float(np.var(mu))
    slope = float(np.cov(mu, realised)[0, 1] / variance) if variance > 0 else 0.0
    return {"rows": int(mu.size), "bias": float(mu.mean() - realised.mean()), "slope": slope,
            "correlation": float(np.corrcoef(mu, realised)[0, 1]) if variance > 0 else 0.0,
            "bins": table}


def save_version(registry: Any, version: str, model: EdgeModel, train_features: np.ndarray,
                 metadata: dict[str, Any], config: EdgeConfig | None = None) -> None:
    """A registry version of kind ``edge``: booster, calibration and the training feature
    distribution (the drift reference), hashed in the manifest like every version."""
    from quantum.features import SCHEMA_HASH
    from quantum.ml import drift
    from quantum.ml.registry import REFERENCE

    reference = drift.reference(train_features, model.feature_names)

    def write(directory: Path) -> None:
        model.save(directory, {"edge_config": (config or EdgeConfig()).model_dump()})
        (directory / REFERENCE).write_text(json.dumps(reference))

    registry.save(version, write, {"kind": "edge", "horizon": model.horizon,
                                   "feature_schema_hash": SCHEMA_HASH,
                                   "feature_names": list(model.feature_names), **metadata})

