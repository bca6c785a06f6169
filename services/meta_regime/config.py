"""meta-regime settings. The rules' constants are :class:`quantum.regime.rules.RegimeRules`'
documented defaults (``docs/regime.md``), the same in live trading, replays and tests."""

from __future__ import annotations

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    restore_bars: closed bars per symbol re-read from ``market.klines`` at start to warm up
        (the baseline window, 864 bars, plus the scoring horizon, 48, for the same calls as
        before the restart).
    interval: the bar interval classified; bars of other intervals are ignored.
    """

    restore_bars: int = Field(960, ge=0, le=10_000)
    interval: str = "5m"
