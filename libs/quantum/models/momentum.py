"""A momentum rule that trades its signal: the trading baseline beside the models.

    direction = sign of the ``lookback``-bar return (``roc_<lookback>``); confidence 1

It is always long or short, so it enters whenever a symbol is flat and the risk checks let
it, and holds for ``hold_bars`` (the HORIZON exit profile's time stop) or until its
stop. Unlike the probability baseline
``momentum_sign`` (whose calls are never confident, so it never trades), its results come
from the same backtest as every model's, costs included.
"""

from __future__ import annotations

from quantum.models.baseline import Direction, Prediction, Vote

LOOKBACKS = (12, 24, 48)


class MomentumRule:
    name = "momentum"
    version = "1"

    def __init__(self, lookback: int = 48, hold_bars: int | None = None) -> None:
        if lookback not in LOOKBACKS:
            raise ValueError(f"momentum lookback {lookback} is not one of {LOOKBACKS}")
        self.hold_bars = hold_bars
        self.feature = f"roc_{lookback}"
        self.required_features = (self.feature,)

    def predict(self, values: dict[str, float]) -> Prediction:
        move = values[self.feature]
        direction: Direction = "LONG" if move > 0 else "SHORT" if move < 0 else "FLAT"
        return Prediction(direction, 1.0, float(move > 0), float(move < 0),
                          (Vote(self.name, direction, 1.0),), horizon_bars=self.hold_bars)
