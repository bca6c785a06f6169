"""risk-governor settings: the pre-trade limits."""

from __future__ import annotations

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    max_position_margin_usd: margin of one position (notional / leverage).
    max_leverage: leverage cap.
    min_notional_usd: exchange minimum order notional.
    max_concurrent_positions: open positions plus approved, unfilled plans.
    max_gross_exposure: gross notional / equity.
    min_confidence: plans below are rejected.
    cooldown_seconds: per symbol, between approvals (event time).
    max_data_age_seconds: a plan older than this (event time) is stale.
    daily_drawdown_limit / weekly_drawdown_limit: from the period's starting equity.
    universe: comma-separated tradable symbols; empty = any.
    """

    max_position_margin_usd: float = Field(2000.0, gt=0)
    max_leverage: int = Field(10, ge=1, le=125)
    min_notional_usd: float = Field(5.0, ge=0)
    max_concurrent_positions: int = Field(20, ge=1)
    max_gross_exposure: float = Field(2.0, gt=0)
    min_confidence: float = Field(0.65, ge=0, le=1)
    cooldown_seconds: int = Field(120, ge=0)
    max_data_age_seconds: int = Field(300, ge=1)
    daily_drawdown_limit: float = Field(0.15, gt=0, le=1)
    weekly_drawdown_limit: float = Field(0.25, gt=0, le=1)
    universe: str = ""
