"""apply-layer settings."""

from __future__ import annotations

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    approval_max_age_seconds: an approval older than this (event time from its plan's bar)
        is not fresh and is dropped.
    """

    approval_max_age_seconds: int = Field(600, ge=1)
