"""The position record both venues book: the paper exchange in event time, Binance from fills.

One record for both, so a position (its fees, funding, realised PnL and the exits that
closed it) and the ``trade.closed`` built from it mean the same thing in replay and live.
It lives beside the venue protocol, not in either venue package, so neither venue imports
the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Position:
    position_id: str
    symbol: str
    side: str
    quantity: float
    initial_quantity: float
    entry_price: float
    leverage: int
    opened_ts: int
    stop_distance: float
    exit_plan: dict[str, Any] | None
    fees: float = 0.0
    funding: float = 0.0
    realised: float = 0.0
    exit_value: float = 0.0  # Σ price × quantity of exits
    exit_quantity: float = 0.0
    mark_price: float = 0.0

    @property
    def sign(self) -> float:
        return 1.0 if self.side == "LONG" else -1.0

    @property
    def notional(self) -> float:
        return self.quantity * self.mark_price

    @property
    def margin(self) -> float:
        return self.quantity * self.entry_price / self.leverage

    def unrealised(self) -> float:
        return self.sign * (self.mark_price - self.entry_price) * self.quantity
