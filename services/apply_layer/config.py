"""apply-layer settings."""

from __future__ import annotations

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    approval_max_age_seconds: an approval older than this (event time from its plan's bar)
        is not fresh and is dropped.
    bar_interval_seconds: the length of the bars the fleet trades on (the market-publisher's
        ``interval``): a maker entry expires ``sizing.maker_ttl_bars`` bars after its bar.
    """

    approval_max_age_seconds: int = Field(600, ge=1)
    bar_interval_seconds: int = Field(300, ge=1)
