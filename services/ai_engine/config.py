"""ai-engine settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    min_confidence: no intent below this confidence. The default, 0.95, makes the baseline
        trade rarely: walk-forward backtests found nothing that beats staying flat net of
        costs (docs/MODELS.md, "The default"), and at 0.65 the baseline churned fees.
    bias_window: directional signals the supervisor judges together
        (:mod:`quantum.models.supervision`); until it is full nothing is blocked.
    bias_threshold: a model share of one side at or below this is balanced, never blocked.
    bias_tolerance: above the threshold, new intents are blocked only when the model's
        share of its side exceeds the market's realised share of that side (each signal's
        symbol's move over ``bias_horizon_bars``) by more than this.
    bias_horizon_bars: the horizon, in 5-minute bars, over which a signal's market move is
        measured (the label horizon: 12 = one hour).
    bias_dead_zone: market moves within plus or minus this log return count as flat (half up,
        half down); the default is the round-trip taker fee, as for the labels.
    model: ``baseline`` (the transparent momentum rule, the default because the ensemble
        has not beaten it out of sample; see docs/MODELS.md) or ``ensemble`` (the
        registry's four-member ensemble).
        ``edge`` (a registry version of the calibrated expected-return model,
        :mod:`quantum.ml.edge`: it acts only when the expected return beats the trade's full
        cost by the policy's ``strategy.cost_margin``) or ``momentum`` (the trading
        baseline: the sign of the ``momentum_lookback``-bar return, always in the market).
    momentum_lookback: bars of the momentum rule's return (12, 24 or 48).
    momentum_hold_bars: how long the momentum rule holds (with the HORIZON exit profile).
    taker_fee / maker_fee / slippage_bps: what the trade will cost, as the exchange charges
        it (the paper exchange reads the same keys): the edge model's cost gate.
    models_dir: the model registry directory.
    model_version: the ensemble version to serve; empty means the registry's active one.
    drift_window: feature vectors in the rolling PSI window.
    drift_every: feature vectors between PSI computations.
    drift_threshold: PSI of any feature above this emits a ``feature_drift`` event.
    """

    min_confidence: float = Field(0.95, ge=0, le=1)
    bias_window: int = Field(20, ge=2)
    bias_threshold: float = Field(0.7, gt=0.5, le=1)
    bias_tolerance: float = Field(0.2, ge=0, le=0.5)
    bias_horizon_bars: int = Field(12, ge=1)
    bias_dead_zone: float = Field(0.0008, ge=0)
    model: Literal["baseline", "ensemble", "edge", "momentum"] = "baseline"
    momentum_lookback: int = 48

    @field_validator("momentum_lookback")
    @classmethod
    def _a_return_the_features_have(cls, value: int) -> int:
        from quantum.models.momentum import LOOKBACKS

        if value not in LOOKBACKS:
            raise ValueError(f"must be one of {LOOKBACKS} (the feature set's roc periods)")
        return value

    momentum_hold_bars: int = Field(48, ge=1)
    taker_fee: float = Field(0.0004, ge=0, le=0.01)
    maker_fee: float = Field(0.0002, ge=-0.001, le=0.01)
    slippage_bps: float = Field(2.0, ge=0, le=100)
    models_dir: str = "models"
    model_version: str = ""
    drift_window: int = Field(500, ge=10)
    drift_every: int = Field(100, ge=1)
    drift_threshold: float = Field(0.25, gt=0)
