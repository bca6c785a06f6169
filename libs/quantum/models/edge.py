"""The edge model as the ai-engine serves it: expected return per bar, batch at a time.

Direction is the sign of the calibrated expected return ``mu``; confidence is the chance the
move has that sign (``Phi(|mu| / s)``). Neither decides alone: the ai-engine compares ``mu``
with the trade's full cost (:mod:`quantum.risk.costs`) and acts only beyond the policy's
margin, with the probability of beating that cost as the intent's confidence.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from quantum.models.baseline import Direction, Prediction, Vote
from quantum.models.ensemble import Row

if TYPE_CHECKING:
    from quantum.ml.edge import EdgeModel


class ServedEdge:
    name = "edge"

    def __init__(self, model: EdgeModel, version: str) -> None:
        self.model = model
        self.version = version

    @property
    def horizon(self) -> int:
        return self.model.horizon

    @property
    def spread(self) -> float:
        return self.model.calibration.spread

    def predict_batch(self, rows: list[Row]) -> list[Prediction | None]:
        if not rows:
            return []
        names = self.model.feature_names
        features = np.array([[row.values[n] for n in names] for row in rows], dtype=np.float32)
        mu = self.model.expected_return(features)
        spread = self.spread
        out: list[Prediction | None] = []
        for value in mu.tolist():
            if not math.isfinite(value):
                out.append(None)
                continue
            up = 0.5 * math.erfc(-value / (spread * math.sqrt(2.0)))  # P(return > 0)
            direction: Direction = "LONG" if value > 0 else "SHORT" if value < 0 else "FLAT"
            confidence = max(up, 1.0 - up)
            out.append(Prediction(direction, confidence, up, 1.0 - up,
                                  (Vote(self.name, direction, confidence),),
                                  expected_return=value, spread=spread,
                                  horizon_bars=self.horizon))
        return out
