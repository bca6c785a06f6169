"""The baseline: a transparent momentum rule every model must beat.

    z = roc_12 / (rv_48 · √12)            12-bar return in units of its expected noise
    p_long = 1 / (1 + e^(−z)),  p_short = 1 − p_long
    direction = the likelier side, but FLAT when the trend (close vs EMA 48) disagrees

No parameters are fitted, so it cannot overfit; it is kept after the ensemble lands as the
benchmark in every evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Direction = Literal["LONG", "SHORT", "FLAT"]


@dataclass(frozen=True, slots=True)
class Vote:
    member: str
    direction: Direction
    confidence: float


@dataclass(frozen=True, slots=True)
class Prediction:
    direction: Direction
    confidence: float
    prob_long: float
    prob_short: float
    votes: tuple[Vote, ...]
    # a model that knows the size of the move (quantum.models.edge) says what it expects:
    # the calibrated mean log return over ``horizon_bars`` and its spread; the ai-engine
    # then acts on that net of costs instead of on the confidence
    expected_return: float | None = None
    spread: float | None = None
    horizon_bars: int | None = None


class BaselineMomentum:
    name = "baseline-momentum"
    version = "1"
    required_features = ("roc_12", "rv_48", "ema_ratio_48")

    def predict(self, values: dict[str, float]) -> Prediction:
        noise = values["rv_48"] * math.sqrt(12.0)
        z = values["roc_12"] / noise if noise > 0 else 0.0
        z = max(-30.0, min(30.0, z))
        prob_long = 1.0 / (1.0 + math.exp(-z))
        prob_short = 1.0 - prob_long
        trend = values["ema_ratio_48"]
        direction: Direction
        if prob_long > prob_short and trend > 0:
            direction = "LONG"
        elif prob_short > prob_long and trend < 0:
            direction = "SHORT"
        else:
            direction = "FLAT"
        confidence = max(prob_long, prob_short)
        vote = Vote(self.name, direction, confidence)
        return Prediction(direction, confidence, prob_long, prob_short, (vote,))
