"""ai-engine settings."""

from __future__ import annotations

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    min_confidence: no intent below this confidence.
    bias_window / bias_threshold: the supervisor blocks new intents when more than
        ``bias_threshold`` of the last ``bias_window`` directional signals point one way.
    """

    min_confidence: float = Field(0.65, ge=0, le=1)
    bias_window: int = Field(20, ge=2)
    bias_threshold: float = Field(0.7, gt=0.5, le=1)
