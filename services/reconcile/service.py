"""reconcile: the exchange is the truth; find where the fleet's book differs and fix it.

A pass runs at start (from the idle hook: start-up never waits on the exchange), every
``reconcile_interval_s`` and shortly after fills. It compares the exchange's positions,
open orders and resting protective orders with execution's book (its state key, read
only) and emits one ``reconcile.events`` event per *new* difference — and ``resolved``
when one disappears — so a difference that persists does not flood the stream.

What it does about each:

* ``unknown_position`` — on the exchange, not in the book: protected by a close-position
  stop ``unknown_position_stop_pct`` from its entry, or closed reduce-only, as the policy
  says. Client ids derive from the symbol and amount, so repeated passes act once.
* ``missing_position`` — in the book, not on the exchange: execution (which consumes this
  stream) closes it out at the last price with reason ``reconcile_missing``.
* ``quantity_mismatch`` — both hold it with different sizes: execution adopts the
  exchange's size.
* ``orphan_order`` — a protective order of ours for a symbol with no position (the
  orphaned stop that fires on a later position): cancelled.
* ``unprotected_position`` — a book position with no protective order resting: execution
  re-places them.

A symbol with an order in flight is skipped for that pass (its fill would look like
drift), so passes converge instead of fighting execution.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Gauge

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import ExecutionReport, ReconcileEvent
from quantum.contracts.streams import RECONCILE_EVENTS
from quantum.exchange.venues.binance.factory import http_client
from quantum.exchange.venues.binance.filters import ExchangeDataError, OrderRefused
from quantum.exchange.venues.binance.http import (
    BinanceFutures,
    ExchangePosition,
    ExchangeRejected,
    ExchangeUnavailable,
)
from quantum.exchange.venues.binance.weights import RateLimited
from quantum.registry.fleet import EXECUTION_KEY, RECONCILE_KEY
from services.reconcile.config import Settings

NAME = "reconcile"
OUR_PREFIXES = ("qp", "qr")
IN_FLIGHT = ("new", "uncertain", "open")
log = structlog.get_logger(service=NAME)

DIFFERENCES = Counter("quantum_reconcile_differences_total", "Differences found", ["kind"])
OPEN_DIFFERENCES = Gauge("quantum_reconcile_open_differences", "Differences not yet resolved")
PASSES = Counter("quantum_reconcile_passes_total", "Reconcile passes", ["outcome"])


class Reconcile(ServiceBase):
    name = NAME

    def __init__(self, settings: Settings, ports: Ports,
                 adapter: BinanceFutures | None = None) -> None:
        self.settings = settings
        self.state = ports.state
        self.clock = ports.clock
        self.adapter = adapter
        if adapter is None and settings.exchange == "binance":
            self.adapter = http_client(settings)
        if self.adapter is None:
            log.info("paper mode: the paper book is its own exchange; passes compare nothing")
        self.open: dict[str, dict[str, Any]] = {}  # difference key → its event
        self.next_pass = 0.0  # wall seconds; 0 = at once
        self.passes = 0
        self._clock_synced = False

    def restore(self) -> None:
        raw = self.state.get(RECONCILE_KEY)
        state = orjson.loads(raw) if raw else {}
        self.open = state.get("open", {})
        self.passes = int(state.get("passes", 0))

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        report = event.payload
        if isinstance(report, ExecutionReport) and report.kind == "fill":
            soon = self.clock.wall() + self.settings.reconcile_settle_s
            self.next_pass = min(self.next_pass, soon) if self.next_pass else soon

    def on_idle(self, out: Outbox, now: float) -> None:
        if self.adapter is None or now < self.next_pass:
            return
        self.next_pass = now + self.settings.reconcile_interval_s
        self.run_pass(out, int(now * 1000))

    # --- one pass -------------------------------------------------------------------------

    def run_pass(self, out: Outbox, now_ms: int) -> list[ReconcileEvent]:
        """Compare, act, emit; returns the events emitted."""
        assert self.adapter is not None
        found: dict[str, ReconcileEvent] = {}
        try:
            if not self._clock_synced:
                self.adapter.sync_time()
                self._clock_synced = True
            positions = {p.symbol: p for p in self.adapter.positions()}
            protective = self.adapter.open_protective()
            book = self._book()
            self._compare(book, positions, protective, now_ms, found)
            outcome = "ok"
        except (ExchangeUnavailable, RateLimited, ExchangeRejected, ExchangeDataError) as e:
            log.warning("reconcile pass failed; retrying next interval", error=str(e))
            found = {"exchange_unreachable:": self._event(
                "exchange_unreachable", "", None, 0.0, 0.0, "retry next interval", str(e),
                now_ms)}
            found.update({k: ReconcileEvent.model_validate(v) for k, v in self.open.items()})
            outcome = "failed"
        PASSES.labels(outcome).inc()
        self.passes += 1
        return self._publish(out, found, now_ms)

    def _book(self) -> dict[str, Any]:
        raw = self.state.get(EXECUTION_KEY)
        book = orjson.loads(raw) if raw else {}
        return book if isinstance(book, dict) else {}

    def _compare(self, book: dict[str, Any], positions: dict[str, ExchangePosition],
                 protective: list[Any], now_ms: int, found: dict[str, ReconcileEvent]) -> None:
        internal: dict[str, dict[str, Any]] = book.get("positions", {}) or {}
        busy = {i["symbol"] for i in (book.get("intents", {}) or {}).values()
                if i.get("status") in IN_FLIGHT}
        resting = {o.symbol for o in protective}
        for symbol in sorted(set(internal) | set(positions)):
            if symbol in busy:
                continue
            mine, theirs = internal.get(symbol), positions.get(symbol)
            if theirs is not None and mine is None:
                self._unknown(theirs, symbol in resting, now_ms, found)
            elif mine is not None and theirs is None:
                found[f"missing_position:{symbol}"] = self._event(
                    "missing_position", symbol, mine["position_id"], 0.0, mine["quantity"],
                    "close_out", "the book holds a position the exchange does not", now_ms)
            elif mine is not None and theirs is not None:
                filters = self.adapter.filters(symbol) if self.adapter else None
                tolerance = float(filters.step_size) / 2 if filters else 1e-9
                if abs(abs(theirs.amount) - mine["quantity"]) > tolerance:
                    found[f"quantity_mismatch:{symbol}"] = self._event(
                        "quantity_mismatch", symbol, mine["position_id"], abs(theirs.amount),
                        mine["quantity"], "adopt_exchange_quantity",
                        "sizes differ between the exchange and the book", now_ms)
                if symbol not in resting and (book.get("protections", {}) or {}).get(symbol):
                    found[f"unprotected_position:{symbol}"] = self._event(
                        "unprotected_position", symbol, mine["position_id"], abs(theirs.amount),
                        mine["quantity"], "replace_protective_orders",
                        "no protective order rests on the exchange", now_ms)
        for order in protective:
            if order.symbol not in positions and order.client_algo_id.startswith(OUR_PREFIXES):
                assert self.adapter is not None
                self.adapter.cancel_protective(order.symbol, order.client_algo_id)
                found[f"orphan_order:{order.client_algo_id}"] = self._event(
                    "orphan_order", order.symbol, None, 0.0, 0.0, "cancelled",
                    f"{order.order_type} {order.client_algo_id} rests with no position", now_ms)

    def _unknown(self, position: ExchangePosition, protected: bool, now_ms: int,
                 found: dict[str, ReconcileEvent]) -> None:
        assert self.adapter is not None
        policy = self.settings.unknown_position_policy
        close_side = "SELL" if position.amount > 0 else "BUY"
        tag = f"{position.symbol.lower()}-{abs(position.amount):g}".replace(".", "p")
        try:
            if policy == "close":
                filters = self.adapter.filters(position.symbol)
                quantity = filters.round_quantity(abs(position.amount))
                self.adapter.ensure_market(symbol=position.symbol, side=close_side,
                                           quantity=quantity, client_order_id=f"qrc-{tag}"[:36],
                                           reduce_only=True)
                action = "closed"
            elif not protected:
                pct = self.settings.unknown_position_stop_pct
                sign = 1.0 if position.amount > 0 else -1.0
                self.adapter.place_protective(
                    symbol=position.symbol, side=close_side, order_type="STOP_MARKET",
                    trigger=position.entry_price * (1 - sign * pct),
                    client_algo_id=f"qrs-{tag}"[:36])
                action = "protected"
            else:
                action = "already_protected"
        except (ExchangeRejected, OrderRefused) as e:
            action = f"action_refused:{e.code}"
        found[f"unknown_position:{position.symbol}"] = self._event(
            "unknown_position", position.symbol, None, abs(position.amount), 0.0, action,
            f"{position.side} {abs(position.amount):g} at {position.entry_price:g} not in the "
            "book", now_ms)

    def _event(self, kind: str, symbol: str, position_id: str | None, exchange_quantity: float,
               internal_quantity: float, action: str, detail: str, now_ms: int) -> ReconcileEvent:
        return ReconcileEvent(kind=kind, symbol=symbol, position_id=position_id,  # type: ignore[arg-type]
                              exchange_quantity=exchange_quantity,
                              internal_quantity=internal_quantity, action=action, detail=detail,
                              ts=now_ms)

    def _publish(self, out: Outbox, found: dict[str, ReconcileEvent],
                 now_ms: int) -> list[ReconcileEvent]:
        emitted: list[ReconcileEvent] = []
        for key, event in found.items():
            if key not in self.open:
                emitted.append(event)
                DIFFERENCES.labels(event.kind).inc()
        for key, previous in self.open.items():
            if key not in found:
                emitted.append(self._event("resolved", previous["symbol"],
                                           previous.get("position_id"), 0.0, 0.0, "none",
                                           f"{previous['kind']} no longer seen", now_ms))
        for i, event in enumerate(emitted):
            out.emit(RECONCILE_EVENTS, new_envelope(event, ts=now_ms, source=NAME,
                                                    key=f"{now_ms}:{self.passes}:{i}"))
            log.warning("reconcile difference", kind=event.kind, symbol=event.symbol,
                        action=event.action, detail=event.detail)
        self.open = {k: v.model_dump(mode="json") for k, v in found.items()}
        OPEN_DIFFERENCES.set(len(self.open))
        out.put_state(RECONCILE_KEY, {"open": self.open, "passes": self.passes,
                                      "last_pass_ms": now_ms})
        return emitted


def build(settings: Settings, ports: Ports) -> Reconcile:
    return Reconcile(settings, ports)
