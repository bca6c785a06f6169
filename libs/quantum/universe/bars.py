"""Per-symbol measures over the fleet's own closed bars, the last 24 hours of them.

Everything here is a function of bars at or before the newest one observed, so the
universe of a replay at time ``t`` is what the data up to ``t`` could say — and a symbol
that appears later in the data has no history before it does (no survivorship).

Measures (a day of bars, ``DAY_MS``):

* **quote volume**: the sum of ``close × volume`` (USD for USDⓈ-M contracts);
* **volatility**: realised, ``sqrt(Σ r²)`` of the log close-to-close returns of consecutive
  bars — a daily figure;
* **spread estimate** (no order book in the bars): Abdi and Ranaldo's close-high-low
  estimator, ``S² = 4 · mean[(c_t − η_t)(c_t − η_{t+1})]`` with ``c`` the log close and
  ``η`` the mid of the log high and log low, over consecutive bar pairs; a negative mean
  estimates zero. In basis points of the price;
* **completeness**: bars present in the day / bars a day holds, from the first bar of the
  symbol on (a symbol younger than a day is judged on the time since its first bar);
* **history**: bars seen since the first, and the time since the first (listing age).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

DAY_MS = 86_400_000
RESUM = 1024


@dataclass(frozen=True, slots=True)
class BarMeasures:
    """One symbol's measures at ``as_of`` (the close of its newest bar)."""

    symbol: str
    as_of: int
    quote_volume_24h: float
    volatility_24h: float | None
    spread_bps: float | None
    completeness: float
    history_bars: int
    first_open_time: int


@dataclass(slots=True)
class _Bar:
    open_time: int
    quote_volume: float
    squared_return: float | None  # vs the previous bar, when consecutive
    spread_term: float | None  # (c_prev − η_prev)(c_prev − η_this), when consecutive


@dataclass
class SymbolBars:
    """The last day of one symbol's bars, and its history counters."""

    symbol: str
    interval_ms: int
    first_open_time: int | None = None
    last_open_time: int | None = None
    history_bars: int = 0
    window: deque[_Bar] = field(default_factory=deque)
    _last_log_close: float = 0.0
    _last_mid: float = 0.0
    # running sums over the window (re-summed exactly every RESUM appends: no drift)
    _quote: float = 0.0
    _squared: float = 0.0
    _squared_n: int = 0
    _spread: float = 0.0
    _spread_n: int = 0
    _appends: int = 0

    def _add(self, bar: _Bar, sign: int) -> None:
        self._quote += sign * bar.quote_volume
        if bar.squared_return is not None:
            self._squared += sign * bar.squared_return
            self._squared_n += sign
        if bar.spread_term is not None:
            self._spread += sign * bar.spread_term
            self._spread_n += sign

    def _resum(self) -> None:
        self._quote = math.fsum(b.quote_volume for b in self.window)
        squared = [b.squared_return for b in self.window if b.squared_return is not None]
        spreads = [b.spread_term for b in self.window if b.spread_term is not None]
        self._squared, self._squared_n = math.fsum(squared), len(squared)
        self._spread, self._spread_n = math.fsum(spreads), len(spreads)

    def observe(self, open_time: int, high: float, low: float, close: float,
                volume: float) -> bool:
        """Add a closed bar; False (ignored) when it is not newer than the last one."""
        if self.last_open_time is not None and open_time <= self.last_open_time:
            return False
        log_close = math.log(close)
        mid = (math.log(high) + math.log(low)) / 2.0
        consecutive = self.last_open_time is not None and \
            open_time - self.last_open_time == self.interval_ms
        squared = spread = None
        if consecutive:
            squared = (log_close - self._last_log_close) ** 2
            spread = (self._last_log_close - self._last_mid) * (self._last_log_close - mid)
        if self.first_open_time is None:
            self.first_open_time = open_time
        self.last_open_time = open_time
        self.history_bars += 1
        self._last_log_close, self._last_mid = log_close, mid
        bar = _Bar(open_time, close * volume, squared, spread)
        self.window.append(bar)
        self._add(bar, 1)
        horizon = open_time - DAY_MS
        while self.window and self.window[0].open_time <= horizon:
            self._add(self.window.popleft(), -1)
        self._appends += 1
        if self._appends % RESUM == 0:
            self._resum()
        return True

    def measures(self) -> BarMeasures | None:
        """The measures now; None before the first bar."""
        if self.last_open_time is None or self.first_open_time is None:
            return None
        covered = min(DAY_MS, self.last_open_time - self.first_open_time + self.interval_ms)
        expected = max(1, covered // self.interval_ms)
        spread_bps = None
        if self._spread_n > 0:
            mean = self._spread / self._spread_n
            spread_bps = 2.0 * math.sqrt(mean) * 1e4 if mean > 0 else 0.0
        return BarMeasures(
            symbol=self.symbol,
            as_of=self.last_open_time + self.interval_ms - 1,
            quote_volume_24h=max(0.0, self._quote),
            volatility_24h=math.sqrt(max(0.0, self._squared)) if self._squared_n else None,
            spread_bps=spread_bps,
            completeness=min(1.0, len(self.window) / expected),
            history_bars=self.history_bars,
            first_open_time=self.first_open_time,
        )

    def counters(self) -> dict[str, int | None]:
        return {"first_open_time": self.first_open_time, "last_open_time": self.last_open_time,
                "history_bars": self.history_bars}


class BarBook:
    """Every symbol's :class:`SymbolBars`."""

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self.symbols: dict[str, SymbolBars] = {}

    def observe(self, symbol: str, open_time: int, high: float, low: float, close: float,
                volume: float) -> bool:
        bars = self.symbols.get(symbol)
        if bars is None:
            bars = self.symbols[symbol] = SymbolBars(symbol, self.interval_ms)
        return bars.observe(open_time, high, low, close, volume)

    def measures(self) -> dict[str, BarMeasures]:
        out = {}
        for symbol, bars in self.symbols.items():
            found = bars.measures()
            if found is not None:
                out[symbol] = found
        return out
