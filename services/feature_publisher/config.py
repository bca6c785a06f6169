"""feature-publisher settings."""

from __future__ import annotations

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    restore_bars: closed bars per symbol re-read from ``market.klines`` at start to warm up.
    """

    restore_bars: int = Field(300, ge=0, le=10_000)
