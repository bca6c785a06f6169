"""reconcile settings: how often, and what to do with a position the fleet does not know."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantum.exchange.venues.binance.config import BinanceAccessSettings


class Settings(BinanceAccessSettings):
    """Attributes:
    reconcile_interval_s: seconds between passes (one also runs at start).
    reconcile_settle_s: after a fill, wait this long before an extra pass.
    unknown_position_policy: ``protect`` (rest a close-position stop) or ``close`` it.
    unknown_position_stop_pct: distance of that stop from the entry price.
    """

    reconcile_interval_s: float = Field(60.0, gt=0)
    reconcile_settle_s: float = Field(2.0, ge=0)
    unknown_position_policy: Literal["protect", "close"] = "protect"
    unknown_position_stop_pct: float = Field(0.02, gt=0, lt=0.5)
