"""The regime rules: trend and volatility of one symbol, and of the market, from closed bars.

Every number here is a documented constant of :class:`RegimeRules` (``docs/regime.md``
states them in prose). On 5-minute bars, with ``r_t = ln(close_t / close_{t-1})``:

* **short volatility** ``σ_s``: root mean square of the last ``short_window`` (48 bars, 4 h)
  returns; **baseline volatility** ``σ_b``: the same over the last ``baseline_window`` (864
  bars, 3 days). A symbol is classified once it has ``min_history`` (288, one day) returns.
* **trend score** ``z = ln(close_t / close_{t-L}) / (σ_b · √L)`` with ``L = trend_lookback``
  (48): the move of the last four hours in units of what a random walk with the baseline
  volatility would move. ``z ≥ 2`` enters ``trend_up``, ``z ≤ −2`` enters ``trend_down``; a
  trend is kept while ``|z| ≥ 1`` in its direction (hysteresis), otherwise ``range``.
* **volatility ratio** ``v = σ_s / σ_b``: above 1.5 enters ``high_vol`` (kept while
  ``v ≥ 1.3``), below 0.7 enters ``low_vol`` (kept while ``v ≤ 0.8``), else ``normal_vol``.
* **the market**: the mean trend score and the median volatility ratio of the symbols
  classified at the same bar, through the same thresholds and hysteresis.

The baseline is the symbol's own recent past, not a fixed number: "high" volatility is high
for that market, so the same rules hold for BTC and for a small altcoin.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

TREND_UP = "trend_up"
TREND_DOWN = "trend_down"
RANGE = "range"
LOW_VOL = "low_vol"
NORMAL_VOL = "normal_vol"
HIGH_VOL = "high_vol"
TREND_LABELS = (TREND_UP, TREND_DOWN, RANGE)
VOLATILITY_LABELS = (LOW_VOL, NORMAL_VOL, HIGH_VOL)
LABELS = TREND_LABELS + VOLATILITY_LABELS
MARKET = "MARKET"  # the scope name of the market-wide regime
RULES_VERSION = 1


@dataclass(frozen=True)
class RegimeRules:
    """The constants of the rules (see the module docstring); 5-minute bars assumed."""

    short_window: int = 48
    baseline_window: int = 864
    min_history: int = 288
    trend_lookback: int = 48
    trend_enter: float = 2.0
    trend_exit: float = 1.0
    high_vol_enter: float = 1.5
    high_vol_exit: float = 1.3
    low_vol_enter: float = 0.7
    low_vol_exit: float = 0.8

    @property
    def horizon(self) -> int:
        """Bars after a call at which it is scored: the short window, so the forward
        volatility of a call is the short volatility measured ``horizon`` bars later."""
        return self.short_window


DEFAULT_RULES = RegimeRules()


def trend_label(score: float, previous: str | None, rules: RegimeRules = DEFAULT_RULES) -> str:
    """The trend regime of a trend score, given the previous one (hysteresis)."""
    if previous == TREND_UP and score >= rules.trend_exit:
        return TREND_UP
    if previous == TREND_DOWN and score <= -rules.trend_exit:
        return TREND_DOWN
    if score >= rules.trend_enter:
        return TREND_UP
    if score <= -rules.trend_enter:
        return TREND_DOWN
    return RANGE


def volatility_label(ratio: float, previous: str | None,
                     rules: RegimeRules = DEFAULT_RULES) -> str:
    """The volatility regime of a short/baseline ratio, given the previous one."""
    if previous == HIGH_VOL and ratio >= rules.high_vol_exit:
        return HIGH_VOL
    if previous == LOW_VOL and ratio <= rules.low_vol_exit:
        return LOW_VOL
    if ratio > rules.high_vol_enter:
        return HIGH_VOL
    if ratio < rules.low_vol_enter:
        return LOW_VOL
    return NORMAL_VOL


@dataclass(frozen=True)
class Reading:
    """One classification: a symbol's (or the market's) regime at a bar's close."""

    scope: str  # a symbol, or MARKET
    bar_time: int  # the bar's close time, ms
    trend: str
    volatility: str
    trend_score: float
    vol_ratio: float
    baseline_vol: float  # σ_b per bar (for the market: the members' median)
    members: int = 1

    def to_dict(self) -> dict[str, float | int | str]:
        return {"scope": self.scope, "bar_time": self.bar_time, "trend": self.trend,
                "volatility": self.volatility, "trend_score": self.trend_score,
                "vol_ratio": self.vol_ratio, "baseline_vol": self.baseline_vol,
                "members": self.members}


class SymbolRegime:
    """The rolling state of one symbol: O(1) work per bar (running sums of squares)."""

    def __init__(self, symbol: str, rules: RegimeRules = DEFAULT_RULES) -> None:
        self.symbol = symbol
        self.rules = rules
        span = max(rules.trend_lookback, rules.horizon) + 1
        self.closes: deque[float] = deque(maxlen=span)
        self.returns: deque[float] = deque(maxlen=rules.baseline_window)
        self.sum_baseline = 0.0
        self.sum_short = 0.0
        self.appended = 0
        self.last_bar_time = -1
        self.reading: Reading | None = None

    def _append(self, value: float) -> None:
        rules = self.rules
        square = value * value
        if len(self.returns) == rules.baseline_window:
            self.sum_baseline -= self.returns[0] ** 2
        if len(self.returns) >= rules.short_window:
            self.sum_short -= self.returns[-rules.short_window] ** 2
        self.returns.append(value)
        self.sum_baseline += square
        self.sum_short += square
        self.appended += 1
        if self.appended % rules.baseline_window == 0:  # no drift of the running sums
            self.sum_baseline = math.fsum(r * r for r in self.returns)
            self.sum_short = math.fsum(r * r for r in list(self.returns)[-rules.short_window:])

    def update(self, bar_time: int, close: float) -> Reading | None:
        """Take a closed bar; the regime at its close, or None (warming up, or a bar that is
        not newer than the last one)."""
        if bar_time <= self.last_bar_time or not close > 0:
            return None
        self.last_bar_time = bar_time
        if self.closes:
            self._append(math.log(close / self.closes[-1]))
        self.closes.append(close)
        rules = self.rules
        if len(self.returns) < rules.min_history:
            return None
        baseline = math.sqrt(max(self.sum_baseline, 0.0) / len(self.returns))
        if baseline <= 0:
            return None
        short = math.sqrt(max(self.sum_short, 0.0) / rules.short_window)
        past = self.closes[-1 - rules.trend_lookback]
        score = math.log(close / past) / (baseline * math.sqrt(rules.trend_lookback))
        ratio = short / baseline
        previous = self.reading
        self.reading = Reading(
            scope=self.symbol, bar_time=bar_time,
            trend=trend_label(score, previous.trend if previous else None, rules),
            volatility=volatility_label(ratio, previous.volatility if previous else None, rules),
            trend_score=score, vol_ratio=ratio, baseline_vol=baseline)
        return self.reading

    def close_back(self, bars: int) -> float | None:
        """The close ``bars`` bars before the newest, when held."""
        return self.closes[-1 - bars] if len(self.closes) > bars else None

    def short_vol(self) -> float:
        return math.sqrt(max(self.sum_short, 0.0) / self.rules.short_window)


def market_reading(readings: Iterable[Reading], bar_time: int, previous: Reading | None,
                   rules: RegimeRules = DEFAULT_RULES) -> Reading | None:
    """The market's regime from its members' readings at one bar (None without members)."""
    members = list(readings)
    if not members:
        return None
    score = statistics.fmean(m.trend_score for m in members)
    ratio = statistics.median(m.vol_ratio for m in members)
    return Reading(
        scope=MARKET, bar_time=bar_time,
        trend=trend_label(score, previous.trend if previous else None, rules),
        volatility=volatility_label(ratio, previous.volatility if previous else None, rules),
        trend_score=score, vol_ratio=ratio,
        baseline_vol=statistics.median(m.baseline_vol for m in members),
        members=len(members))
