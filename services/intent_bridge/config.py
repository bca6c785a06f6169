"""intent-bridge settings: sizing and exit plan."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    risk_per_trade: share of equity lost if the stop is hit (before the confidence multiplier).
    min_notional_usd / max_notional_usd: bounds of a position's notional.
    leverage: leverage used for new positions (capped by the risk policy's max_leverage).
    exit_profile: DEFAULT or CHALLENGE_100.
    stop_atr_multiple: stop distance in ATRs (1R).
    min_confidence: the confidence that maps to the 0.5× multiplier (1.0 maps to 1.5×).
    """

    risk_per_trade: float = Field(0.01, gt=0, le=0.1)
    min_notional_usd: float = Field(10.0, gt=0)
    max_notional_usd: float = Field(10_000.0, gt=0)
    leverage: int = Field(5, ge=1, le=125)
    exit_profile: Literal["DEFAULT", "CHALLENGE_100"] = "DEFAULT"
    stop_atr_multiple: float = Field(1.5, gt=0)
    min_confidence: float = Field(0.65, ge=0, lt=1)
