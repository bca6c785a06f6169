"""meta-regime: classifies every symbol and the market from the closed bars.

Each ``market.kline`` updates its symbol's rolling state (:mod:`quantum.regime.rules`); a
symbol's regime, and the market's once every symbol classified at the previous bar has
reported this one, goes to ``meta.regime`` when it changes. The current regimes and the
scorecards (:mod:`quantum.regime.scoring`: every call judged ``horizon`` bars later on what
followed) are in this service's state key, where the intent-bridge and the risk-governor
read them (:mod:`quantum.regime.view`) and ``quantumctl regime`` shows them.

The service runs in replays and backtests (its calls steer sizing and risk through the
policy), and it is one of the settling services: sizing and risk act on a bar only after
its regime is in the state key, so a replay gives the same decisions at any speed.

At start it re-reads the bars its group handled (``restore_bars`` per symbol) to rebuild the
rolling windows and the calls still waiting for their outcome; the scorecards come from the
state key, so no call is scored twice.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Gauge

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import Kline, MetaRegime
from quantum.contracts.streams import MARKET_KLINES, META_REGIME
from quantum.regime.rules import (
    DEFAULT_RULES,
    LABELS,
    MARKET,
    RULES_VERSION,
    Reading,
    SymbolRegime,
    market_reading,
)
from quantum.regime.scoring import Outcome, PendingCalls, Scorecard
from quantum.registry.fleet import META_REGIME_KEY
from services.meta_regime.config import Settings

NAME = "meta-regime"
METRICS_INTERVAL_S = 1.0
log = structlog.get_logger(service=NAME)

CURRENT = Gauge("quantum_regime_current", "1 for the scope's current trend and volatility "
                "regime, 0 for the others", ["scope", "label"])
TREND_SCORE = Gauge("quantum_regime_trend_score", "Trend score of the newest bar", ["scope"])
VOL_RATIO = Gauge("quantum_regime_vol_ratio", "Short over baseline volatility", ["scope"])
CHANGES = Counter("quantum_regime_changes_total", "Regime changes published", ["scope"])
SCORED = Gauge("quantum_regime_scored_calls", "Calls judged against what followed", ["scope"])
HIT_RATE = Gauge("quantum_regime_hit_rate", "Share of a label's calls that what followed "
                 "bore out", ["scope", "label"])
BASE_RATE = Gauge("quantum_regime_base_rate", "Share of all scored calls after which the "
                  "label's outcome happened (what a label must beat)", ["scope", "label"])


@dataclass
class MarketCall:
    """The market's call at one bar, waiting for its members' outcomes."""

    reading: Reading
    members: frozenset[str]
    scores: list[float] = field(default_factory=list)
    vol_ratios: list[float] = field(default_factory=list)


class MetaRegimeService(ServiceBase):
    name = NAME

    def __init__(self, settings: Settings, ports: Ports) -> None:
        self.state = ports.state
        self.history = ports.history
        self.restore_bars = settings.restore_bars
        self.interval = settings.interval
        self.rules = DEFAULT_RULES
        self._reset()

    def _reset(self) -> None:
        self.symbols: dict[str, SymbolRegime] = {}
        self.pending: dict[str, PendingCalls] = {}
        self.cards: dict[str, Scorecard] = {}
        self.market: Reading | None = None
        self.bar_time = -1  # the bar the market is being gathered for
        self.gathered: dict[str, Reading] = {}
        self.expected: frozenset[str] = frozenset()
        self.market_done = False
        self.market_calls: dict[int, MarketCall] = {}
        self.bar_ms = 0
        self._changed_scopes: set[str] = set()
        self._metrics_at = -METRICS_INTERVAL_S
        self._dirty = False

    # --- restore --------------------------------------------------------------------------

    def restore(self) -> None:
        self._reset()
        raw = self.state.get(META_REGIME_KEY)
        if raw is not None:
            stored = orjson.loads(raw)
            self.cards = {scope: Scorecard.from_dict(card)
                          for scope, card in stored.get("scores", {}).items()}
        if self.restore_bars == 0:
            return
        bars: dict[str, list[Kline]] = {}
        for event in self.history.handled(MARKET_KLINES, NAME, self.restore_bars * 50):
            kline = event.payload
            if isinstance(kline, Kline) and kline.interval == self.interval:
                bars.setdefault(kline.symbol, []).append(kline)
        klines = [k for series in bars.values() for k in series[-self.restore_bars:]]
        klines.sort(key=lambda k: k.close_time)  # stable: each instant in handled order
        for kline in klines:
            self._observe(kline, None, None)
        self._changed_scopes.clear()
        log.info("warmed up", symbols=len(self.symbols), bars=len(klines))

    # --- handling -------------------------------------------------------------------------

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        kline = event.payload
        if isinstance(kline, Kline) and kline.interval == self.interval:
            self._observe(kline, event, out)

    def _observe(self, kline: Kline, event: Envelope[Any] | None, out: Outbox | None) -> None:
        """One bar: classify, score the call now due, gather the market. ``out`` None is the
        warm-up: nothing is published and nothing scored (those calls were scored before)."""
        self.bar_ms = kline.close_time - kline.open_time + 1
        tracker = self.symbols.get(kline.symbol)
        if tracker is None:
            tracker = self.symbols[kline.symbol] = SymbolRegime(kline.symbol, self.rules)
            self.pending[kline.symbol] = PendingCalls(self.rules)
        previous = tracker.reading
        reading = tracker.update(kline.close_time, kline.close)
        if reading is None:
            return
        self._dirty = True
        calls = self.pending[kline.symbol]
        calls.add(reading, kline.close)
        due = calls.due(kline.close, tracker.short_vol())
        if due is not None:
            call, outcome = due
            self._score(kline.symbol, call, outcome, live=out is not None)
        if out is not None:
            self._publish(reading, previous, event, out)
        self._gather(reading, event, out)

    def _score(self, scope: str, call: Reading, outcome: Outcome, live: bool) -> None:
        if live:
            self.cards.setdefault(scope, Scorecard()).add(call, outcome, self.rules)
            self._changed_scopes.add(scope)
        market = self.market_calls.get(call.bar_time)
        if market is None or scope not in market.members:
            return
        market.scores.append(outcome.forward_score)
        market.vol_ratios.append(outcome.forward_vol_ratio)
        if len(market.scores) == len(market.members):
            del self.market_calls[call.bar_time]
            if live:
                combined = Outcome(statistics.fmean(market.scores),
                                   statistics.median(market.vol_ratios))
                self.cards.setdefault(MARKET, Scorecard()).add(market.reading, combined,
                                                               self.rules)
                self._changed_scopes.add(MARKET)

    def _gather(self, reading: Reading, event: Envelope[Any] | None,
                out: Outbox | None) -> None:
        """The market's call at a bar, once every symbol classified at the previous bar has
        reported (a bar with nobody expected closes when the next bar begins)."""
        if reading.bar_time > self.bar_time:
            if not self.market_done and self.gathered:
                self._close_market(event, out)
            self.expected = frozenset(self.gathered)
            self.gathered = {}
            self.bar_time = reading.bar_time
            self.market_done = False
        elif reading.bar_time < self.bar_time:
            return  # a symbol behind the others: in its own scorecard, not in the market
        self.gathered[reading.scope] = reading
        if not self.market_done and self.expected and self.expected <= self.gathered.keys():
            self._close_market(event, out)

    def _close_market(self, event: Envelope[Any] | None, out: Outbox | None) -> None:
        self.market_done = True
        previous = self.market
        reading = market_reading(self.gathered.values(), self.bar_time, previous, self.rules)
        if reading is None:
            return
        self.market = reading
        self.market_calls[reading.bar_time] = MarketCall(reading, frozenset(self.gathered))
        horizon_ms = 2 * self.rules.horizon * max(self.bar_ms, 1)
        for bar_time in [t for t in self.market_calls if t < reading.bar_time - horizon_ms]:
            del self.market_calls[bar_time]  # a member stopped reporting: never complete
        if out is not None:
            self._publish(reading, previous, event, out)

    def _publish(self, reading: Reading, previous: Reading | None, event: Envelope[Any] | None,
                 out: Outbox) -> None:
        if (previous is not None and previous.trend == reading.trend
                and previous.volatility == reading.volatility):
            return
        regime = MetaRegime(
            scope=reading.scope, bar_time=reading.bar_time, trend=reading.trend,
            volatility=reading.volatility,
            previous_trend=previous.trend if previous else None,
            previous_volatility=previous.volatility if previous else None,
            trend_score=reading.trend_score, vol_ratio=reading.vol_ratio,
            baseline_vol=reading.baseline_vol, members=reading.members,
            rules_version=RULES_VERSION)
        out.emit(META_REGIME, new_envelope(regime, ts=reading.bar_time, source=NAME, cause=event,
                                           key=f"{reading.scope}:{reading.bar_time}"))
        CHANGES.labels(reading.scope).inc()
        for label in LABELS:
            CURRENT.labels(reading.scope, label).set(
                1 if label in (reading.trend, reading.volatility) else 0)
        log.debug("regime changed", scope=reading.scope, trend=reading.trend,
                 volatility=reading.volatility, bar_time=reading.bar_time)

    def on_batch_end(self, out: Outbox) -> None:
        if not self._dirty:
            return
        self._dirty = False
        now = time.monotonic()
        if now - self._metrics_at >= METRICS_INTERVAL_S:
            self._metrics_at = now
            self._export()
        out.put_state(META_REGIME_KEY, self.document())

    def _export(self) -> None:
        """Gauges, at most once a second of wall time (a replay handles thousands of bars a
        second; a scrape sees the newest values either way)."""
        readings = [t.reading for t in self.symbols.values() if t.reading is not None]
        for reading in readings + ([self.market] if self.market is not None else []):
            TREND_SCORE.labels(reading.scope).set(reading.trend_score)
            VOL_RATIO.labels(reading.scope).set(reading.vol_ratio)
        for scope in self._changed_scopes:
            card = self.cards[scope]
            SCORED.labels(scope).set(card.scored)
            for label, row in card.summary().items():
                if row["hit_rate"] is not None:
                    HIT_RATE.labels(scope, label).set(row["hit_rate"])
                if row["base_rate"] is not None:
                    BASE_RATE.labels(scope, label).set(row["base_rate"])
        self._changed_scopes.clear()

    def document(self) -> dict[str, Any]:
        """What the state key holds (:mod:`quantum.regime.view` reads it)."""
        return {
            "rules_version": RULES_VERSION,
            "bar_time": self.bar_time,
            "symbols": {s: t.reading.to_dict() for s, t in sorted(self.symbols.items())
                        if t.reading is not None},
            "market": self.market.to_dict() if self.market is not None else None,
            "scores": {scope: card.to_dict() for scope, card in sorted(self.cards.items())},
        }


def build(settings: Settings, ports: Ports) -> MetaRegimeService:
    return MetaRegimeService(settings, ports)
