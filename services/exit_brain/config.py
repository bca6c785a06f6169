"""exit-brain settings."""

from __future__ import annotations

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    evaluate_entry_bar: also check levels against the bar a position was filled in.
    """

    evaluate_entry_bar: bool = False
