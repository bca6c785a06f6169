"""Labels and targets, one definition for training, evaluation and the CLM's shadow test.

* ``future_log_return[t] = ln(close[t + horizon] / close[t])``: what a position opened at
  the close of bar ``t`` and closed ``horizon`` bars later earns before costs.
* ``direction[t]``: LONG when that return exceeds ``dead_zone``, SHORT when it is below
  ``-dead_zone``, FLAT otherwise. The dead zone covers the round-trip taker fee, so a
  LONG or SHORT label means the move would have paid for its own fees.

The last ``horizon`` bars of a series have no label (NaN / -1): their future is unknown.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SHORT, FLAT, LONG = 0, 1, 2
CLASS_NAMES = ("SHORT", "FLAT", "LONG")
UNLABELLED = -1


class LabelSpec(BaseModel):
    """How targets are made; stored with every model.

    Attributes:
        horizon: bars ahead the direction is judged (12 five-minute bars = one hour).
        taker_fee: fee rate per fill, as the paper exchange charges it.
        dead_zone: absolute log return below which the label is FLAT; at least the round
            trip ``2 * taker_fee`` (checked).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizon: int = Field(default=12, ge=1)
    taker_fee: float = Field(default=0.0004, ge=0)
    dead_zone: float = Field(default=0.0008, ge=0)

    def model_post_init(self, __context: object) -> None:
        if self.dead_zone < 2 * self.taker_fee - 1e-12:
            raise ValueError(f"dead_zone {self.dead_zone} does not cover the round-trip fee "
                             f"{2 * self.taker_fee}")

    @property
    def round_trip_fee(self) -> float:
        return 2 * self.taker_fee


def future_log_return(close: np.ndarray, horizon: int) -> np.ndarray:
    """``ln(close[t+h]/close[t])``, NaN for the last ``horizon`` bars."""
    close = np.asarray(close, dtype=np.float64)
    out = np.full(close.shape, np.nan)
    if close.size > horizon:
        out[:-horizon] = np.log(close[horizon:] / close[:-horizon])
    return out


def direction_labels(future_return: np.ndarray, dead_zone: float) -> np.ndarray:
    """SHORT/FLAT/LONG (0/1/2) from future returns; ``UNLABELLED`` where the return is NaN."""
    labels = np.full(future_return.shape, FLAT, dtype=np.int64)
    labels[future_return > dead_zone] = LONG
    labels[future_return < -dead_zone] = SHORT
    labels[~np.isfinite(future_return)] = UNLABELLED
    return labels
