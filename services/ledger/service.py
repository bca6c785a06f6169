"""ledger: the books against the venue — income history (realised PnL, commissions, funding
fees) compared with the journal, per trade and per UTC day.

A comparison (:mod:`quantum.ledger`) runs ``ledger_settle_s`` after start, every
``ledger_interval_s`` and once each closed trade (``trade.closed``) has settled. On Binance
the income comes from ``GET /fapi/v1/income``; on the paper venue from the income trail
execution writes with the book, so the default paper fleet checks its journal too.

Each *new* difference beyond tolerance is one ``ledger.difference`` event on
``ledger.events`` (``trade`` or ``day``, with the component, both amounts and the
tolerance), and ``resolved`` when it is gone, so a difference that persists does not flood
the stream; a comparison that cannot be made (the journal or the venue does not answer) is
the difference ``unavailable`` until one can. The open differences are in the state key
``quantum:state:ledger`` with the last comparison's summary and days, and in the gauge
``quantum_ledger_open_differences`` that the alert ``QuantumLedgerDiffers`` watches.

The ledger never changes the books: a difference is for an operator (docs/RUNBOOK.md,
"ledger-differs").
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Gauge

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import LedgerDifference, TradeClosed
from quantum.contracts.streams import LEDGER_EVENTS
from quantum.journal.database import make_engine, resolve_url
from quantum.ledger.compare import Comparison, Difference, Tolerance
from quantum.ledger.config import Settings
from quantum.ledger.run import LedgerUnavailable, run
from quantum.ledger.sources import IncomeSource, income_source
from quantum.registry.fleet import LEDGER_KEY

NAME = "ledger"
log = structlog.get_logger(service=NAME)

DIFFERENCES = Counter("quantum_ledger_differences_total",
                      "Differences found between the venue's income and the journal",
                      ["kind", "component"])
OPEN_DIFFERENCES = Gauge("quantum_ledger_open_differences",
                         "Differences (or an unavailable comparison) not yet resolved")
LARGEST = Gauge("quantum_ledger_largest_difference_usdt",
                "The largest open difference, in the settlement asset")
TRADES_COMPARED = Gauge("quantum_ledger_trades_compared", "Trades in the last comparison")
LAST_COMPARISON = Gauge("quantum_ledger_last_comparison_timestamp_seconds",
                        "When the last comparison was made")
PASSES = Counter("quantum_ledger_passes_total", "Comparisons", ["outcome"])


class Ledger(ServiceBase):
    name = NAME

    def __init__(self, settings: Settings, ports: Ports,
                 source: IncomeSource | None = None) -> None:
        self.settings = settings
        self.state = ports.state
        self.clock = ports.clock
        self.source = source or income_source(settings, ports.state)
        self.engine = make_engine(resolve_url(settings.database_url.get_secret_value()),
                                  pool_size=1)
        self.tolerance = Tolerance(absolute=settings.ledger_tolerance_usdt,
                                   ratio=settings.ledger_tolerance_ratio)
        self.open: dict[str, dict[str, Any]] = {}  # difference key → its event
        self.next_pass = self.clock.wall() + settings.ledger_settle_s
        self.passes = 0
        self.last: Comparison | None = None

    def restore(self) -> None:
        raw = self.state.get(LEDGER_KEY)
        state = orjson.loads(raw) if raw else {}
        self.open = state.get("open", {})
        self.passes = int(state.get("passes", 0))
        OPEN_DIFFERENCES.set(len(self.open))

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        if isinstance(event.payload, TradeClosed):  # compare it once it has settled
            soon = self.clock.wall() + self.settings.ledger_settle_s + 1.0
            self.next_pass = min(self.next_pass, soon)

    def on_idle(self, out: Outbox, now: float) -> None:
        if now < self.next_pass:
            return
        self.next_pass = now + self.settings.ledger_interval_s
        self.run_pass(out, int(now * 1000))

    def close(self) -> None:
        self.engine.dispose()

    # --- one comparison -------------------------------------------------------------------

    def run_pass(self, out: Outbox, now_ms: int) -> list[LedgerDifference]:
        """Compare, emit what is new or resolved, record; returns the events emitted."""
        settings = self.settings
        found: dict[str, LedgerDifference]
        try:
            comparison = run(self.engine, self.source, now_ms=now_ms,
                             lookback_days=settings.ledger_lookback_days,
                             settle_ms=int(settings.ledger_settle_s * 1000),
                             tolerance=self.tolerance,
                             slack_ms=int(settings.ledger_match_slack_s * 1000),
                             asset=settings.ledger_asset)
        except LedgerUnavailable as e:
            log.warning("ledger comparison failed; retrying next interval", source=e.source,
                        error=e.detail)
            found = {k: LedgerDifference.model_validate(v) for k, v in self.open.items()}
            found[f"unavailable:{e.source}"] = LedgerDifference(
                kind="unavailable", scope=e.source, symbol="", component="", venue_amount=0.0,
                journal_amount=0.0, difference=0.0, tolerance=0.0, detail=e.detail, ts=now_ms)
            PASSES.labels("unavailable").inc()
            return self._publish(out, found, now_ms, None)
        self.last = comparison
        found = {d.key: self._event(d, now_ms) for d in comparison.differences}
        PASSES.labels("differs" if found else "match").inc()
        TRADES_COMPARED.set(len(comparison.trades))
        LAST_COMPARISON.set(now_ms / 1000)
        return self._publish(out, found, now_ms, comparison)

    @staticmethod
    def _event(difference: Difference, now_ms: int) -> LedgerDifference:
        return LedgerDifference(
            kind=difference.kind,
            scope=difference.scope, symbol=difference.symbol,
            component=difference.component,
            venue_amount=difference.venue_amount, journal_amount=difference.journal_amount,
            difference=difference.difference, tolerance=difference.tolerance,
            detail=difference.detail, ts=now_ms)

    def _publish(self, out: Outbox, found: dict[str, LedgerDifference], now_ms: int,
                 comparison: Comparison | None) -> list[LedgerDifference]:
        self.passes += 1
        emitted: list[LedgerDifference] = []
        for key, event in found.items():
            if key not in self.open:
                emitted.append(event)
                DIFFERENCES.labels(event.kind, event.component or "none").inc()
        for key, previous in self.open.items():
            if key not in found:
                emitted.append(LedgerDifference(
                    kind="resolved", scope=previous["scope"], symbol=previous["symbol"],
                    component=previous["component"], venue_amount=0.0, journal_amount=0.0,
                    difference=0.0, tolerance=0.0,
                    detail=f"{previous['kind']} {key} no longer differs (or left the window)",
                    ts=now_ms))
        for i, event in enumerate(emitted):
            out.emit(LEDGER_EVENTS, new_envelope(event, ts=now_ms, source=NAME,
                                                 key=f"{now_ms}:{self.passes}:{i}"))
            log.warning("ledger difference", kind=event.kind, scope=event.scope,
                        symbol=event.symbol, component=event.component,
                        venue=event.venue_amount, journal=event.journal_amount,
                        detail=event.detail)
        self.open = {k: v.model_dump(mode="json") for k, v in found.items()}
        OPEN_DIFFERENCES.set(len(self.open))
        LARGEST.set(max((abs(v["difference"]) for v in self.open.values()), default=0.0))
        state: dict[str, Any] = {"open": self.open, "passes": self.passes,
                                 "last_pass_ms": now_ms, "venue": self.source.name}
        if comparison is not None:
            state["summary"] = comparison.summary()
            state["days"] = comparison.days
        else:
            previous = orjson.loads(self.state.get(LEDGER_KEY) or b"{}")
            state["summary"] = previous.get("summary")
            state["days"] = previous.get("days", [])
        out.put_state(LEDGER_KEY, state)
        return emitted


def build(settings: Settings, ports: Ports) -> Ledger:
    return Ledger(settings, ports)
