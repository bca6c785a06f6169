"""clm settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    models_dir: the model registry directory (shared with the ai-engine).
    training_data_dir: directory of ``<SYMBOL>-5m.csv.gz`` files retraining reads.
    training_symbols: comma list of symbols to train on; empty means all in the directory.
    training_lookback_days: days of the newest data each retraining uses.
    retrain_interval_s: seconds between scheduled retraining runs (default 4 hours).
    retrain_on_start: start a run as soon as the service starts.
    retrain_members: members each run trains.
    retrain_folds: walk-forward folds each run also evaluates (0: none, the shadow test
        decides).
    retrain_neural_steps: optimiser steps per network in a run.
    retrain_tree_rounds: boosting rounds of the tree members in a run.
    shadow_predictions: resolved live predictions before the shadow test decides.
    shadow_metric: the metric the test is decided on, declared when it starts.
    shadow_margin: the candidate must beat the active model by at least this much on the
        shadow metric to count as better there (reported; the backtest decides).
    retrain_on_drift: start a run when the live features drift from the active version's
        training distribution (PSI, :mod:`quantum.ml.drift`, computed here from the
        served feature vectors).
    drift_threshold: a feature PSI above this is drift.
    drift_window: feature vectors (all symbols) in the rolling PSI window.
    drift_every: feature vectors between PSI computations.
    drift_retrain_interval_s: a drift-triggered run starts only this long after the last run
        of any kind started (at most one per interval; drift persisting past it starts the
        next).
    promotion_margin: the candidate's backtest net return over the shadow window must beat
        the active model's by more than this (a fraction of the balance) to be promoted.
    """

    models_dir: str = "models"
    training_data_dir: str = "data/sample"
    training_symbols: str = ""
    training_lookback_days: float = Field(60.0, gt=0)
    retrain_interval_s: float = Field(4 * 3600.0, gt=0)
    retrain_on_start: bool = False
    retrain_members: str = "xgboost,lightgbm,nhits,patchtst"
    retrain_folds: int = Field(0, ge=0)
    retrain_neural_steps: int = Field(300, ge=1)
    retrain_tree_rounds: int = Field(300, ge=1)
    shadow_predictions: int = Field(500, ge=1)
    shadow_metric: Literal["log_loss", "brier"] = "log_loss"
    shadow_margin: float = Field(0.0, ge=0)
    retrain_on_drift: bool = True
    drift_threshold: float = Field(0.25, gt=0)
    drift_window: int = Field(500, ge=10)
    drift_every: int = Field(100, ge=1)
    drift_retrain_interval_s: float = Field(3600.0, gt=0)
    promotion_margin: float = Field(0.0, ge=0)
