"""universe: rank every tradable symbol and publish the universe the fleet may trade.

Inputs: the fleet's closed bars (``market.klines``: volume, spread estimate, volatility,
history, completeness; :mod:`quantum.universe.bars`), its realised results per symbol
(``trade.closed``) and, with ``QT_SOURCE=binance``, the exchange's listing, 24 h statistics
and book (:mod:`quantum.universe.exchange`). The policy store's ``universe`` section holds
the filters and profile size (:mod:`quantum.universe.ranking`).

When it ranks:

* **replay** (``QT_SOURCE=replay``): on the event clock, when the first bar of a new
  ranking period arrives (every ``rank_interval_minutes``), on the bars closed before that
  bar — every symbol's, complete — so the fleet replay and the in-process backtest rank at
  the same instants on the same figures. A symbol exists only from its first bar in the
  data and enters only once it has ``min_history_bars``: no survivorship.
* **live** (``QT_SOURCE=binance``): on the wall clock every ``rank_interval_minutes``; the
  exchange is asked each time. While it cannot be reached the last selection stays in
  force and the service retries with a doubling wait (5 s up to ``QT_RETRY_MAX_S``),
  heartbeating and answering the watchdog all along.

Each ranking is written to ``quantum:state:universe:ranking`` (every candidate, its
figures and reasons: what ``quantumctl universe show|diff`` read); the selection to
``quantum:state:universe``, which the risk-governor checks plans against and the
market-publisher follows live. ``universe.updated`` is published when the selection or the
policy version changes, with what entered and left.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Gauge

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.config import ConfigError
from quantum.contracts.events import Kline, TradeClosed, UniverseUpdated
from quantum.contracts.streams import MARKET_KLINES, UNIVERSE_UPDATED
from quantum.registry.fleet import UNIVERSE_KEY, UNIVERSE_RANKING_KEY
from quantum.risk.policy import PolicyCache
from quantum.universe import exchange
from quantum.universe.bars import BarBook, SymbolBars
from quantum.universe.ranking import Candidate, Ranking, from_bars, rank
from services.universe.config import Settings

NAME = "universe"
WARMUP_ENTRIES = 60_000  # handled klines read back at restore: a day of 200 symbols
RETRY_FIRST_S = 5.0

log = structlog.get_logger(service=NAME)

RANKINGS = Counter("quantum_universe_rankings_total", "Rankings made", ["source"])
UPDATES = Counter("quantum_universe_updates_total", "universe.updated events published")
SELECTED = Gauge("quantum_universe_selected_symbols", "Symbols in the selection in force")
CANDIDATES = Gauge("quantum_universe_candidates", "Symbols ranked in the last ranking")
SOURCE_UP = Gauge("quantum_universe_source_up",
                  "1 when the last request to the exchange succeeded (live only)")
SOURCE_FAILURES = Counter("quantum_universe_source_failures_total",
                          "Failed requests to the exchange", ["error"])
SKIPPED_ROWS = Counter("quantum_universe_skipped_rows_total",
                       "Exchange rows that did not parse and were left out")

INTERVAL_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000,
               "30m": 1_800_000, "1h": 3_600_000}


class UniverseService(ServiceBase):
    name = NAME

    def __init__(self, settings: Settings, ports: Ports) -> None:
        if settings.interval not in INTERVAL_MS:
            raise ConfigError(f"bad setting QT_INTERVAL: one of {', '.join(INTERVAL_MS)}, "
                              f"got {settings.interval!r}")
        self.settings = settings
        self.state = ports.state
        self.clock = ports.clock
        self.history = ports.history
        self.policies = PolicyCache(ports.state)
        self.interval_ms = INTERVAL_MS[settings.interval]
        self.live = settings.source == "binance"
        self._adapter: Any = None
        self._reset()

    def _reset(self) -> None:
        self.book = BarBook(self.interval_ms)
        self.results: dict[str, tuple[float, int]] = {}
        self.selected: tuple[str, ...] | None = None
        self.selected_version = -1
        self.last_period = -1
        self.bar_time: int | None = None
        self.results_changed = False
        self.next_attempt = 0.0
        self.retry_s = RETRY_FIRST_S
        self.last_ranking: dict[str, Any] = {
            "ts": 0, "policy_version": 0, "source": "binance" if self.live else "bars",
            "symbols": [], "members": []}

    # --- state ----------------------------------------------------------------------------

    def restore(self) -> None:
        """The selection, results and history counters from the ranking key; the last day
        of bars from the klines this group handled."""
        self._reset()
        raw_selection, raw_ranking = self.state.get_many([UNIVERSE_KEY, UNIVERSE_RANKING_KEY])
        if raw_selection is not None:
            doc = orjson.loads(raw_selection)
            self.selected = tuple(doc["symbols"])
            self.selected_version = int(doc["policy_version"])
        counters: dict[str, dict[str, Any]] = {}
        if raw_ranking is not None:
            doc = orjson.loads(raw_ranking)
            self.last_ranking = {k: doc[k] for k in
                                 ("ts", "policy_version", "source", "symbols", "members")}
            self.results = {s: (float(v[0]), int(v[1])) for s, v in doc["results"].items()}
            self.last_period = int(doc["last_period"])
            self.bar_time = doc.get("bar_time")
            counters = doc["bars"]
        after: dict[str, int] = {}
        for event in self.history.handled(MARKET_KLINES, NAME, WARMUP_ENTRIES):
            kline = event.payload
            if not isinstance(kline, Kline) or kline.interval != self.settings.interval:
                continue
            if self.book.observe(kline.symbol, kline.open_time, kline.high, kline.low,
                                 kline.close, kline.volume):
                known = counters.get(kline.symbol, {}).get("last_open_time")
                if known is None or kline.open_time > known:
                    after[kline.symbol] = after.get(kline.symbol, 0) + 1
                if self.bar_time is None or kline.open_time > self.bar_time:
                    self.bar_time = kline.open_time
        for symbol, saved in counters.items():
            bars = self.book.symbols.get(symbol)
            if bars is None:  # no bar of it in the last handled entries: counters only
                bars = self.book.symbols[symbol] = SymbolBars(symbol, self.interval_ms)
            bars.first_open_time = saved["first_open_time"]
            bars.history_bars = int(saved["history_bars"]) + after.get(symbol, 0)
            if bars.last_open_time is None:
                bars.last_open_time = saved["last_open_time"]
        SELECTED.set(len(self.selected or ()))

    # --- events ---------------------------------------------------------------------------

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        payload = event.payload
        if isinstance(payload, TradeClosed):
            pnl, trades = self.results.get(payload.symbol, (0.0, 0))
            self.results[payload.symbol] = (pnl + payload.net_pnl, trades + 1)
            self.results_changed = True
            return
        if not isinstance(payload, Kline) or payload.interval != self.settings.interval:
            return
        if self.bar_time is not None and payload.open_time > self.bar_time:
            # a new bar time: every symbol's bars before it are in (replay: the barrier)
            period = payload.open_time // self._rank_ms()
            if not self.live and period > self.last_period:
                self.last_period = period
                self._rank(out, payload.open_time - 1, self._bar_candidates(payload.open_time - 1),
                           cause=event)
        if self.bar_time is None or payload.open_time > self.bar_time:
            self.bar_time = payload.open_time
        self.book.observe(payload.symbol, payload.open_time, payload.high, payload.low,
                          payload.close, payload.volume)

    def on_batch_end(self, out: Outbox) -> None:
        if self.results_changed:
            self.results_changed = False
            self._save_counters(out)

    def on_idle(self, out: Outbox, now: float) -> None:
        if not self.live or now < self.next_attempt:
            return
        try:
            snapshot = exchange.fetch(self.adapter(), int(now * 1000))
        except Exception as e:  # noqa: BLE001 - any failure of the source: retry later
            SOURCE_UP.set(0)
            SOURCE_FAILURES.labels(type(e).__name__).inc()
            log.warning("universe_source_unavailable", error=f"{type(e).__name__}: {e}",
                        retry_in_s=self.retry_s)
            self.next_attempt = now + self.retry_s
            self.retry_s = min(self.settings.retry_max_s, self.retry_s * 2)
            return
        SOURCE_UP.set(1)
        SKIPPED_ROWS.inc(snapshot.skipped)
        self.retry_s = RETRY_FIRST_S
        self.next_attempt = now + self._rank_ms() / 1000
        candidates = exchange.candidates(snapshot, self.book.measures(), self.results,
                                         self.interval_ms)
        self._rank(out, snapshot.fetched_ms, candidates, cause=None)

    # --- ranking --------------------------------------------------------------------------

    def adapter(self) -> Any:
        """The venue's REST adapter for public data (no keys: nothing here is signed)."""
        if self._adapter is None:
            from quantum.exchange.venues.binance.http import BinanceFutures

            self._adapter = BinanceFutures(
                api_key="", api_secret="", testnet=self.settings.binance_testnet,
                rest_url=self.settings.binance_rest_url or None,
                timeout_s=self.settings.binance_timeout_s)
        return self._adapter

    def _rank_ms(self) -> int:
        return self.policies.policy.universe.rank_interval_minutes * 60_000

    def _bar_candidates(self, now_ms: int) -> dict[str, Candidate]:
        return from_bars(self.book.measures(), self.results, now_ms)

    def _rank(self, out: Outbox, now_ms: int, candidates: dict[str, Candidate],
              cause: Envelope[Any] | None) -> None:
        policy = self.policies.refresh()
        ranking = rank(candidates, policy.universe, self.selected or ())
        source = "binance" if self.live else "bars"
        RANKINGS.labels(source).inc()
        CANDIDATES.set(len(ranking.members))
        previous = self.selected
        changed = previous is None or set(previous) != set(ranking.symbols) \
            or policy.version != self.selected_version
        self._save_ranking(out, now_ms, policy.version, ranking)
        if not changed:
            return
        entered = tuple(s for s in ranking.symbols if s not in (previous or ()))
        left = tuple(s for s in (previous or ()) if s not in ranking.symbols)
        self.selected, self.selected_version = ranking.symbols, policy.version
        SELECTED.set(len(ranking.symbols))
        out.put_state(UNIVERSE_KEY, {"ts": now_ms, "symbols": list(ranking.symbols),
                                     "policy_version": policy.version, "source": source})
        update = UniverseUpdated(ts=now_ms, policy_version=policy.version, source=source,
                                 symbols=ranking.symbols, entered=entered, left=left,
                                 members=ranking.members)
        out.emit(UNIVERSE_UPDATED, new_envelope(update, ts=now_ms, source=NAME, cause=cause,
                                                key=f"{source}:{now_ms}"))
        UPDATES.inc()
        if entered or left:
            log.info("universe_changed", entered=list(entered), left=list(left),
                     size=len(ranking.symbols), policy_version=policy.version)

    def _counters(self) -> dict[str, Any]:
        return {"results": {s: list(v) for s, v in self.results.items()},
                "last_period": self.last_period, "bar_time": self.bar_time,
                "bars": {s: b.counters() for s, b in self.book.symbols.items()}}

    def _save_ranking(self, out: Outbox, now_ms: int, version: int, ranking: Ranking) -> None:
        self.last_ranking = {
            "ts": now_ms, "policy_version": version, "source": "binance" if self.live
            else "bars", "symbols": list(ranking.symbols),
            "members": [m.model_dump(mode="json") for m in ranking.members]}
        out.put_state(UNIVERSE_RANKING_KEY, {**self.last_ranking, **self._counters()})

    def _save_counters(self, out: Outbox) -> None:
        """Results changed between rankings: keep them (and the counters) with the acks."""
        out.put_state(UNIVERSE_RANKING_KEY, {**self.last_ranking, **self._counters()})


def build(settings: Settings, ports: Ports) -> UniverseService:
    return UniverseService(settings, ports)
