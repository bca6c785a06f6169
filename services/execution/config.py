"""execution settings: which exchange, and the paper exchange's economics."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    exchange: ``paper`` (simulated fills).
    initial_balance: paper wallet balance in USDT.
    taker_fee: fee rate per fill.
    slippage_bps: adverse slippage on market fills, in basis points.
    maintenance_margin_rate: for the paper liquidation price.
    """

    exchange: Literal["paper"] = "paper"
    initial_balance: float = Field(10_000.0, gt=0)
    taker_fee: float = Field(0.0004, ge=0, le=0.01)
    slippage_bps: float = Field(2.0, ge=0, le=100)
    maintenance_margin_rate: float = Field(0.004, gt=0, lt=1)
