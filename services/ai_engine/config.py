"""ai-engine settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    min_confidence: no intent below this confidence.
    bias_window / bias_threshold: the supervisor blocks new intents when more than
        ``bias_threshold`` of the last ``bias_window`` directional signals point one way.
    model: ``baseline`` (the transparent momentum rule, the default because the ensemble
        has not beaten it out of sample; see docs/MODELS.md) or ``ensemble`` (the
        registry's four-member ensemble).
    models_dir: the model registry directory.
    model_version: the ensemble version to serve; empty means the registry's active one.
    drift_window: feature vectors in the rolling PSI window.
    drift_every: feature vectors between PSI computations.
    drift_threshold: PSI of any feature above this emits a ``feature_drift`` event.
    """

    min_confidence: float = Field(0.65, ge=0, le=1)
    bias_window: int = Field(20, ge=2)
    bias_threshold: float = Field(0.7, gt=0.5, le=1)
    model: Literal["baseline", "ensemble"] = "baseline"
    models_dir: str = "models"
    model_version: str = ""
    drift_window: int = Field(500, ge=10)
    drift_every: int = Field(100, ge=1)
    drift_threshold: float = Field(0.25, gt=0)
