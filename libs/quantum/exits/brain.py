"""Exit rules for one position, evaluated bar by bar.

On each bar after the entry bar, in this order (the conservative order when one bar
touches several levels):

1. **stop** (initial stop, break-even stop or trailing stop): close everything at the stop,
   or at the open when the bar gapped through it;
2. **take-profit ladder**: each level touched closes its share of the *original* quantity
   at the level (or the open, when the bar gapped past it); after the first, the stop
   moves to break-even and the trailing stop arms;
3. **trailing stop** update from the bar's extreme (applies from the next bar);
4. **time stop**: close the rest at the bar's close once the holding time is reached;
5. **liquidation buffer**: close the rest when the close is within the buffer of the
   liquidation price.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ExitOrder:
    fraction: float  # of the remaining quantity
    price: float
    reason: str


@dataclass
class TrackedPosition:
    position_id: str
    symbol: str
    side: str
    entry_price: float
    entry_ts: int
    initial_quantity: float
    remaining: float
    stop: float
    stop_reason: str
    take_profits: list[dict[str, float]]
    tp_hit: int
    break_even_after_first_tp: bool
    trailing_atr_multiple: float | None
    trailing_armed: bool
    best_price: float
    atr: float
    time_stop_seconds: int | None
    liquidation_price: float
    liquidation_buffer_pct: float
    closing: bool = False
    trailing_callback_pct: float | None = None

    @classmethod
    def from_fill(cls, report: dict[str, Any]) -> TrackedPosition:
        plan = report["exit_plan"]
        return cls(
            position_id=report["position_id"],
            symbol=report["symbol"],
            side=report["position_side"],
            entry_price=report["price"],
            entry_ts=report["ts"],
            initial_quantity=report["quantity"],
            remaining=report["position_quantity"],
            stop=plan["stop_loss"],
            stop_reason="stop_loss",
            take_profits=[dict(tp) for tp in plan["take_profits"]],
            tp_hit=0,
            break_even_after_first_tp=plan["break_even_after_first_tp"],
            trailing_atr_multiple=plan.get("trailing_atr_multiple"),
            trailing_armed=False,
            best_price=report["price"],
            atr=plan.get("atr", 0.0),
            time_stop_seconds=plan.get("time_stop_seconds"),
            liquidation_price=report.get("liquidation_price", 0.0),
            liquidation_buffer_pct=plan.get("liquidation_buffer_pct", 0.01),
            trailing_callback_pct=plan.get("trailing_callback_pct"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def sign(self) -> float:
        return 1.0 if self.side == "LONG" else -1.0

    def _beyond(self, price: float, level: float) -> bool:
        """``price`` is at or past ``level`` in the position's favour."""
        return (price - level) * self.sign >= 0

    def evaluate(
        self, ts: int, open_: float, high: float, low: float, close: float
    ) -> list[ExitOrder]:
        if self.closing or self.remaining <= 0:
            return []
        favourable, adverse = (high, low) if self.side == "LONG" else (low, high)
        if (adverse - self.stop) * self.sign <= 0:  # the bar traded at or through the stop
            gapped = (open_ - self.stop) * self.sign < 0
            return self._close_all(open_ if gapped else self.stop, self.stop_reason)
        orders: list[ExitOrder] = []
        while self.tp_hit < len(self.take_profits):
            level = self.take_profits[self.tp_hit]
            if not self._beyond(favourable, level["price"]):
                break
            share = level["fraction"] * self.initial_quantity
            fraction = min(1.0, share / self.remaining) if self.remaining > 0 else 1.0
            price = open_ if self._beyond(open_, level["price"]) else level["price"]
            self.tp_hit += 1
            orders.append(ExitOrder(fraction, price, f"take_profit_{self.tp_hit}"))
            self.remaining -= min(self.remaining, share)
            if self.tp_hit == 1:
                if self.break_even_after_first_tp:
                    self.stop = self._tighter(self.stop, self.entry_price)
                    self.stop_reason = "break_even_stop"
                self.trailing_armed = (
                    self.trailing_atr_multiple is not None or self.trailing_callback_pct is not None
                )
            if self.remaining <= self.initial_quantity * 1e-9:
                self.closing = True
                return orders
        self.best_price = (
            max(self.best_price, favourable)
            if self.side == "LONG"
            else min(self.best_price, favourable)
        )
        trail = self._trail()
        if trail is not None and self._tighter(self.stop, trail) != self.stop:
            self.stop = trail
            self.stop_reason = "trailing_stop"
        if (
            self.time_stop_seconds is not None
            and ts - self.entry_ts >= self.time_stop_seconds * 1000
        ):
            return orders + self._close_all(close, "time_stop")
        if self.liquidation_price > 0:
            distance = (close - self.liquidation_price) * self.sign / close
            if distance <= self.liquidation_buffer_pct:
                return orders + self._close_all(close, "liquidation_buffer")
        return orders

    def _trail(self) -> float | None:
        """The trailing stop from the best price: ATR multiple, else callback percentage."""
        if not self.trailing_armed:
            return None
        if self.trailing_atr_multiple and self.atr > 0:
            return self.best_price - self.sign * self.trailing_atr_multiple * self.atr
        if self.trailing_callback_pct:
            return self.best_price * (1 - self.sign * self.trailing_callback_pct)
        return None

    def protective_levels(self) -> tuple[float, float | None]:
        """The stop and the furthest take-profit still ahead: what rests on the exchange."""
        ahead = self.take_profits[self.tp_hit :]
        return self.stop, (ahead[-1]["price"] if ahead else None)

    def _tighter(self, current: float, candidate: float) -> float:
        """The stop closer to the price: higher for a LONG, lower for a SHORT."""
        return max(current, candidate) if self.side == "LONG" else min(current, candidate)

    def _close_all(self, price: float, reason: str) -> list[ExitOrder]:
        self.closing = True
        self.remaining = 0.0
        return [ExitOrder(1.0, price, reason)]

    def close_now(self, price: float, reason: str) -> list[ExitOrder]:
        if self.closing or self.remaining <= 0:
            return []
        return self._close_all(price, reason)

    def reduce_now(self, fraction: float, price: float, reason: str) -> list[ExitOrder]:
        """Close ``fraction`` of what remains at ``price`` (an emergency exposure cut)."""
        if self.closing or self.remaining <= 0 or fraction <= 0:
            return []
        if fraction >= 1.0:
            return self._close_all(price, reason)
        self.remaining -= self.remaining * fraction
        return [ExitOrder(fraction, price, reason)]

    def unrealised(self, price: float) -> float:
        return self.sign * (price - self.entry_price) * self.remaining
