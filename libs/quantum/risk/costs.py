"""What a trade costs before it earns anything, in log-return units of its notional.

``full cost = entry fee + exit fee + 2 x slippage + expected funding over the holding time``

* the entry fee is the maker fee for a resting post-only entry, the taker fee otherwise;
  exits, stops and take-profits are always taker orders;
* slippage (the paper exchange's ``slippage_bps``) is paid on every market fill: the exit
  always, the entry unless it rests as a maker order (a limit fills at its price);
* funding: a long pays the funding rate at each settlement it holds through (a short
  receives it), every 8 hours on Binance USD-M; over ``hold_bars`` five-minute bars the
  expected payment is ``rate x hold_bars x 5 / 480`` with the sign of the side. The rate is
  the last settled one, the best causal estimate of the next.

The ai-engine acts on a model's expected return only when it exceeds this cost by the
policy's ``strategy.cost_margin`` (:meth:`CostModel.edge`); the same numbers are what the
paper exchange charges, so the decision and the books agree.
"""

from __future__ import annotations

from dataclasses import dataclass

BAR_MINUTES = 5
FUNDING_INTERVAL_MINUTES = 480


@dataclass(frozen=True)
class CostModel:
    taker_fee: float = 0.0004
    maker_fee: float = 0.0002
    slippage_bps: float = 2.0

    def fees(self, entry_order: str = "taker") -> float:
        slippage = self.slippage_bps / 10_000
        if entry_order == "maker":
            return self.maker_fee + self.taker_fee + slippage
        return 2 * (self.taker_fee + slippage)

    @staticmethod
    def funding(side: int, hold_bars: int, funding_rate: float) -> float:
        """Expected funding paid (positive) or received (negative) over the hold."""
        return side * funding_rate * hold_bars * BAR_MINUTES / FUNDING_INTERVAL_MINUTES

    def cost(self, side: int, hold_bars: int, funding_rate: float,
             entry_order: str = "taker") -> float:
        return self.fees(entry_order) + self.funding(side, hold_bars, funding_rate)

    def edge(self, expected_return: float, side: int, hold_bars: int, funding_rate: float,
             entry_order: str = "taker") -> float:
        """Expected return of ``side`` (+1 long, -1 short) net of the full cost."""
        return side * expected_return - self.cost(side, hold_bars, funding_rate, entry_order)
