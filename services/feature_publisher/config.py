"""feature-publisher settings."""

from __future__ import annotations

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    restore_bars: closed bars per symbol re-read from ``market.klines`` at start to warm up
        (at least the feature schema's warm-up, 512 bars, for identical values).
    """

    restore_bars: int = Field(600, ge=0, le=10_000)
