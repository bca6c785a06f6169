"""The live venue: the fleet's book of orders and positions kept against Binance futures.

Crash safety is the point of this module. An order's life:

1. ``submit``/``harvest`` (in the runner's handler) only records an **intent** with its
   client order id; the runner commits it with the ack of the event that caused it.
2. ``poll`` (the runner's idle hook) sends intents in state ``new``, each exactly once. An
   intent whose outcome is unknown is ``uncertain``: restored after a restart (the process
   may have died after sending and before recording), or given an ambiguous answer (a
   timeout, a broken connection, ``-1006``/``-1007`` "execution status unknown", ``-4116``
   duplicate id, a malformed answer). An uncertain intent is **never sent again** while it
   may exist; it is **queried by its client order id** on successive polls with back-off
   (0.25 s doubling to 30 s) until the exchange knows it. "Unknown order" (``-2013``) to
   such a query is not an answer: a request that timed out can still reach the matching
   engine, and a fresh order may not be visible to queries yet. See "Declaring an order
   not placed" below. The stand-in tests kill the process between send and record, and
   time out a new order while answering "unknown order" to the first queries, to prove
   an order is placed at most once.
3. Fills arrive on the user data stream (``ORDER_TRADE_UPDATE``); while the stream is down
   or after a gap, open intents are polled over REST. Both sources give the *cumulative*
   filled quantity, so a fill seen twice is counted once, and partial fills add up.

**Declaring an order not placed.** Binance refuses a signed request the moment it handles
it when its ``timestamp`` is more than ``recvWindow`` behind the server clock (``-1021``).
So once ``recvWindow`` has passed since the last send (measured on the local clock from just
after the attempt, which is later than the request's timestamp), a request still in flight
can no longer be *accepted*; what remains is the lag of queries behind the matching engine,
which ``unknown_order_margin_s`` (60 s by default) covers with room to spare. An uncertain
intent that every query (at least three) has answered "unknown order" through
``recvWindow + unknown_order_margin_s`` after its last possible send is declared not
placed. An entry is then reported as a reject (``-2013``, "not placed") and never sent:
its approval is stale by then, and a later copy of it would be a new decision. A
reduce-only exit is sent again under the *same* client id, at most twice: it cannot open
or grow a position (the exchange refuses it with ``-2022``), and should the first exist
after all the exchange answers ``-4116`` and the query resumes. An order that was
acknowledged (``open``) and then queried as unknown is kept open and queried again: the
exchange told us it exists.

Only market entries are sent: a maker entry (``LIMIT``/``GTX``, the policy's
``sizing.entry_order=maker``) is refused at once with reason ``order_type_unsupported``
(fail closed, logged as an error), never sent.

Done intents are kept for ``intent_retention_ms`` of event time, not by a count: the book
must recognise a copy of an order for at least as long as its approval is fresh.

**After state loss** (no state key at restore) the book is rebuilt from the exchange
before any intent is sent: wallet balance and leverage (``account``), positions
(``positionRisk``), open orders (``openOrders``) and the protective orders resting on
them (``openAlgoOrders``). What the exchange does not know is lost and says so: position
ids are new (``rb-<symbol>-<ms>``), realised PnL, fees and funding restart at zero, and a
position without a resting stop has no protection until the exit-brain or reconcile gives
it one.

Positions, fees, funding and closed trades are booked as the paper exchange books them
(:class:`~quantum.exchange.position.Position`), so ``trade.closed`` means the same thing in
replay and live. Protective ``STOP_MARKET``/``TAKE_PROFIT_MARKET`` orders (close-position,
mark-price triggered) rest on the exchange for every open position and follow the
exit-brain's levels: a new one is placed before the old one is cancelled, so a position is
never left unprotected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from quantum.contracts.events import (
    BookSource,
    BookSummary,
    ExecutionReport,
    ExitLevels,
    HarvestIntent,
    OrderRequest,
    PortfolioState,
    PositionView,
    ReconcileEvent,
    Tick,
    TradeClosed,
)
from quantum.exchange.position import Position
from quantum.exchange.venues.binance.config import LiveConfig
from quantum.exchange.venues.binance.filters import ExchangeDataError, OrderRefused
from quantum.exchange.venues.binance.http import (
    OUTCOME_UNKNOWN_CODES,
    UNKNOWN_ORDER,
    BinanceFutures,
    ExchangeRejected,
    ExchangeUnavailable,
    OrderState,
)
from quantum.exchange.venues.binance.weights import RateLimited
from quantum.exchange.venues.binance.ws import UserStream

log = structlog.get_logger(component="live-venue")


def _standing(may_send: Callable[[], bool]) -> bool:
    """Whether a request may be signed now (``Ports.standing``: the instance's lease)."""
    if may_send():
        return True
    log.warning("not sending: this instance's lease lapsed during the idle hook")
    return False
EPSILON = 1e-12
OPEN_STATUSES = ("new", "uncertain", "open")
QUERY_BACKOFF_S = (0.25, 30.0)  # first wait between queries of an uncertain order, and cap
MIN_UNKNOWN_QUERIES = 3  # "unknown order" answers needed before an order is declared not placed
MAX_EXIT_RESENDS = 2  # a reduce-only exit declared not placed is sent again at most this often
MAKER_UNSUPPORTED = ("maker entries (LIMIT GTX) are not implemented on the Binance venue: "
                     "set the policy's sizing.entry_order=taker")


@dataclass
class Intent:
    """An order the fleet wants on the exchange, and what became of it."""

    client_order_id: str
    plan_id: str
    position_id: str
    symbol: str
    side: str
    position_side: str
    quantity: float
    reference_price: float
    leverage: int
    reduce_only: bool
    reason: str
    created_ts: int
    exit_plan: dict[str, Any] | None = None
    status: str = "new"  # new | uncertain | open | done
    executed: float = 0.0
    cost: float = 0.0
    fees: float = 0.0
    attempts: int = 0
    error: str | None = None
    sent_ms: int = 0  # wall clock just after the last send attempt (0: unknown)
    queries: int = 0  # queries of this uncertain intent answered "unknown order"
    next_query_ms: int = 0  # wall clock of the next query of an uncertain intent
    resends: int = 0  # times a reduce-only exit declared not placed was sent again


@dataclass
class Protection:
    """The levels a position should be protected at, and what rests on the exchange."""

    stop: float
    take_profit: float | None
    version: int = 0
    placed_stop_id: str | None = None
    placed_stop: float | None = None
    placed_tp_id: str | None = None
    placed_tp: float | None = None


@dataclass
class LiveExchange:
    """Binance futures behind the :class:`~quantum.exchange.base.Venue` interface."""

    adapter: BinanceFutures
    config: LiveConfig
    balance: float = 0.0
    realised_pnl: float = 0.0
    fees_paid: float = 0.0
    funding_paid: float = 0.0
    clock_ms: int = 0
    intents: dict[str, Intent] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    protections: dict[str, Protection] = field(default_factory=dict)
    last_price: dict[str, float] = field(default_factory=dict)
    listen_key: str = ""
    _stream: UserStream | None = None
    _ready: bool = False
    _last_poll: float = 0.0
    _last_keepalive: float = 0.0
    _last_balance: float = -1e18
    rebuild_pending: bool = False  # state was lost: rebuild from the exchange before sending
    rebuilt: BookSummary | None = None  # the last rebuild, until execution has reported it

    # --- persistence ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "balance": self.balance, "realised_pnl": self.realised_pnl,
            "fees_paid": self.fees_paid, "funding_paid": self.funding_paid,
            "clock_ms": self.clock_ms, "last_price": self.last_price,
            "intents": {k: asdict(v) for k, v in self.intents.items()},
            "positions": {k: asdict(v) for k, v in self.positions.items()},
            "protections": {k: asdict(v) for k, v in self.protections.items()},
            "listen_key": self.listen_key, "rebuild_pending": self.rebuild_pending,
        }

    def restore(self, data: dict[str, Any] | None) -> None:
        """Load committed state. Intents never confirmed become ``uncertain``: they may have
        been sent just before the process died, so they are queried before any re-send."""
        data = data or {}
        self.balance = float(data.get("balance", 0.0))
        self.realised_pnl = float(data.get("realised_pnl", 0.0))
        self.fees_paid = float(data.get("fees_paid", 0.0))
        self.funding_paid = float(data.get("funding_paid", 0.0))
        self.clock_ms = int(data.get("clock_ms", 0))
        self.last_price = dict(data.get("last_price", {}))
        self.intents = {k: Intent(**v) for k, v in data.get("intents", {}).items()}
        for intent in self.intents.values():
            if intent.status == "new":
                # Sent or not before the process died: if it was, it was before now.
                intent.status, intent.sent_ms = "uncertain", 0
            if intent.status == "uncertain":
                intent.next_query_ms = 0
        self.positions = {k: Position(**v) for k, v in data.get("positions", {}).items()}
        self.protections = {k: Protection(**v) for k, v in data.get("protections", {}).items()}
        self.listen_key = str(data.get("listen_key", ""))
        self.rebuild_pending = bool(data.get("rebuild_pending", False))

    def restored(self, snapshot: dict[str, Any] | None) -> LiveExchange:
        """This venue with its book reloaded from a committed snapshot: the adapter, its
        clock offset and the user stream are kept."""
        self.restore(snapshot)
        return self

    def rebuild_from_exchange(self) -> bool:
        """State was lost: empty the book and rebuild it from the exchange in the idle hook,
        before any intent is sent (until then :attr:`rebuild_pending` holds entries back)."""
        self.restore(None)
        self.rebuild_pending = True
        return True

    def take_income(self) -> list[dict[str, Any]]:
        """None: Binance keeps the income history itself (``GET /fapi/v1/income``)."""
        return []

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream = None

    # --- what execution asks of a venue ---------------------------------------------------

    @property
    def settles_in_handlers(self) -> bool:
        """Handlers only record intents; fills are booked in :meth:`poll`."""
        return False

    @property
    def levels_in_state(self) -> bool:
        """The exit-brain's levels are kept (protections): the resting orders follow them."""
        return True

    def take_rebuilt(self) -> BookSummary | None:
        """The last rebuild's summary, cleared (execution reports it once)."""
        summary, self.rebuilt = self.rebuilt, None
        return summary

    def book_summary(self, source: BookSource, detail: str) -> BookSummary:
        return BookSummary(
            source=source, balance=self.balance, positions=tuple(sorted(self.positions)),
            open_orders=sum(1 for i in self.intents.values() if i.status in OPEN_STATUSES),
            detail=detail)

    # --- recording (in the handler; nothing is sent here) ---------------------------------

    def knows(self, client_order_id: str) -> bool:
        """Whether an intent with this client id is in the book (open, or done and kept)."""
        return client_order_id in self.intents

    def refuse(self, order: OrderRequest, ts: int, reason: str, message: str) -> ExecutionReport:
        """A reject for an entry execution refused; kept as a done intent (duplicate guard)."""
        self.clock_ms = max(self.clock_ms, ts)
        intent = Intent(
            client_order_id=order.client_order_id, plan_id=order.plan_id,
            position_id=order.plan_id, symbol=order.symbol, side=order.side,
            position_side=order.position_side, quantity=order.quantity,
            reference_price=order.reference_price, leverage=order.leverage,
            reduce_only=order.reduce_only, reason=reason, created_ts=ts, status="done",
            error=f"{reason}: {message}")
        self.intents[order.client_order_id] = intent
        return self._report_for(intent, "reject", 0.0, 0.0, 0.0, ts, message=message)

    def submit(self, order: OrderRequest, ts: int) -> list[ExecutionReport]:
        if order.client_order_id in self.intents:
            return []
        if order.order_type != "MARKET":  # fail closed: only market entries are sent here
            log.error("maker entries are not supported on Binance: order refused",
                      client_order_id=order.client_order_id, order_type=order.order_type)
            return [self.refuse(order, ts, "order_type_unsupported", MAKER_UNSUPPORTED)]
        self.clock_ms = max(self.clock_ms, ts)
        self.intents[order.client_order_id] = Intent(
            client_order_id=order.client_order_id, plan_id=order.plan_id,
            position_id=order.plan_id, symbol=order.symbol, side=order.side,
            position_side=order.position_side, quantity=order.quantity,
            reference_price=order.reference_price, leverage=order.leverage,
            reduce_only=order.reduce_only, reason=order.reason, created_ts=ts,
            exit_plan=order.exit_plan.model_dump(mode="json") if order.exit_plan else None,
        )
        return []

    def harvest(self, intent: HarvestIntent) -> tuple[list[ExecutionReport], list[TradeClosed]]:
        client_id = "qx-" + intent.harvest_id.replace("-", "")[:32]
        if client_id in self.intents:
            return [], []
        position = self.positions.get(intent.symbol)
        side = "SELL" if intent.side == "LONG" else "BUY"
        if position is None or position.position_id != intent.position_id:
            report = self._report_for(Intent(
                client_order_id=client_id, plan_id=intent.position_id,
                position_id=intent.position_id, symbol=intent.symbol, side=side,
                position_side=intent.side, quantity=0.0, reference_price=intent.price,
                leverage=1, reduce_only=True, reason=intent.reason, created_ts=intent.ts,
                status="done"), "reject", 0.0, 0.0, 0.0, intent.ts, code=-2022,
                message="no such open position")
            return [report], []
        open_exits = sum(i.quantity - i.executed for i in self.intents.values()
                         if i.symbol == intent.symbol and i.reduce_only
                         and i.status in OPEN_STATUSES)
        available = max(0.0, position.quantity - open_exits)
        quantity = available if intent.fraction >= 1.0 else min(
            available, position.quantity * intent.fraction)
        self.intents[client_id] = Intent(
            client_order_id=client_id, plan_id=position.position_id,
            position_id=position.position_id, symbol=intent.symbol, side=side,
            position_side=intent.side, quantity=quantity, reference_price=intent.price,
            leverage=position.leverage, reduce_only=True, reason=intent.reason,
            created_ts=intent.ts,
        )
        self.clock_ms = max(self.clock_ms, intent.ts)
        return [], []

    def on_tick(self, tick: Tick) -> tuple[list[ExecutionReport], list[TradeClosed], bool]:
        self.last_price[tick.symbol] = tick.close
        self.clock_ms = max(self.clock_ms, tick.ts)
        position = self.positions.get(tick.symbol)
        if position is None:
            return [], [], False
        position.mark_price = tick.mark_price or tick.close
        if tick.funding_rate is not None:
            payment = position.sign * position.quantity * position.mark_price * tick.funding_rate
            position.funding += payment
            self.funding_paid += payment
            return [], [], True
        return [], [], False

    def cancel_all(self, ts: int) -> list[ExecutionReport]:
        """Entry intents not yet sent are dropped (sent ones are market orders: filled)."""
        reports = []
        for intent in self.intents.values():
            if intent.status == "new" and not intent.reduce_only:
                intent.status = "done"
                reports.append(self._report_for(intent, "cancel", 0.0, 0.0, 0.0, ts))
        return reports

    @property
    def resting_entries(self) -> bool:
        """Never: limit entries are refused (:data:`MAKER_UNSUPPORTED`)."""
        return False

    def cancel_resting(self, ts: int, reason: str) -> list[ExecutionReport]:
        return []

    def set_levels(self, levels: ExitLevels) -> None:
        position = self.positions.get(levels.symbol)
        if position is None or position.position_id != levels.position_id:
            return
        protection = self.protections.get(levels.symbol)
        if protection is None:
            self.protections[levels.symbol] = Protection(levels.stop, levels.take_profit)
        else:
            protection.stop, protection.take_profit = levels.stop, levels.take_profit

    def on_reconcile(self, event: ReconcileEvent) -> tuple[list[ExecutionReport],
                                                           list[TradeClosed]]:
        """Close out a position the exchange no longer has; adopt the exchange's quantity."""
        position = self.positions.get(event.symbol)
        if position is None or (event.position_id and event.position_id != position.position_id):
            return [], []
        if event.kind == "missing_position":
            price = self.last_price.get(event.symbol, position.mark_price or position.entry_price)
            return self._book_reduce(position, position.quantity, price, 0.0, event.ts,
                                     "reconcile_missing", "qr-" + position.position_id[:20])
        if event.kind == "quantity_mismatch" and event.exchange_quantity > 0:
            position.quantity = abs(event.exchange_quantity)
        protection = self.protections.get(event.symbol)
        if event.kind == "unprotected_position" and protection is not None:
            protection.placed_stop = protection.placed_tp = None  # re-placed on the next poll
        return [], []

    # --- exchange I/O (the idle hook) -----------------------------------------------------

    def poll(self, now_ms: int, may_send: Callable[[], bool] = lambda: True
             ) -> tuple[list[ExecutionReport], list[TradeClosed], bool]:
        reports: list[ExecutionReport] = []
        trades: list[TradeClosed] = []
        try:
            self._start(now_ms)
            if self.rebuild_pending:
                try:
                    self._rebuild(now_ms)
                except (ExchangeRejected, ExchangeDataError) as e:
                    log.error("book rebuild failed; nothing is sent until it succeeds",
                              error=str(e))
                    return reports, trades, False
            changed = self._drain_stream(now_ms, reports, trades)
            self._send_intents(now_ms, reports, trades, may_send)
            changed |= self._poll_open(now_ms, reports, trades)
            self._protect(now_ms, may_send)
            self._keepalive()
        except RateLimited as e:
            log.warning("rate limited; exchange calls paused", wait_s=round(e.retry_after, 1))
            changed = False
        except ExchangeUnavailable as e:
            log.warning("exchange unreachable", error=str(e))
            changed = False
        return reports, trades, changed or bool(reports or trades)

    def _start(self, now_ms: int) -> None:
        if self._ready:
            return
        self.adapter.sync_time()
        self.adapter.load_filters()
        if self.balance == 0.0:
            self.balance = self.adapter.wallet_balance()
        if self.config.ws_url:
            self.listen_key = self.adapter.start_user_stream()
            self._stream = UserStream(self.config.ws_url, self.listen_key)
            self._stream.start()
            self._last_keepalive = time.monotonic()
        self._ready = True
        log.info("live venue ready", clock_offset_ms=self.adapter.clock_offset_ms,
                 symbols=len(self.adapter.load_filters()), user_stream=bool(self.config.ws_url))

    def _keepalive(self) -> None:
        stream = self._stream
        if stream is None:
            return
        if stream.key_rejected:
            self.listen_key = self.adapter.start_user_stream()
            stream.use_key(self.listen_key)
        elif time.monotonic() - self._last_keepalive >= self.config.keepalive_interval_s:
            self.adapter.keepalive_user_stream(self.listen_key)
            self._last_keepalive = time.monotonic()

    def _drain_stream(self, now_ms: int, reports: list[ExecutionReport],
                      trades: list[TradeClosed]) -> bool:
        if self._stream is None:
            return False
        changed = False
        for event in self._stream.drain():
            if event.get("e") == "ORDER_TRADE_UPDATE" and isinstance(event.get("o"), dict):
                changed |= self._on_stream_order(event["o"], now_ms, reports, trades)
            elif event.get("e") == "ACCOUNT_UPDATE":
                changed |= self._on_account(event.get("a"))
        return changed

    def _on_stream_order(self, data: dict[str, Any], now_ms: int,
                         reports: list[ExecutionReport], trades: list[TradeClosed]) -> bool:
        intent = self.intents.get(str(data.get("c", "")))
        if intent is None:
            return False
        try:
            cumulative = float(data["z"])
            last_price = float(data["L"])
            commission = float(data.get("n") or 0.0)
            status = str(data["X"])
        except (KeyError, TypeError, ValueError) as e:
            log.warning("malformed ORDER_TRADE_UPDATE; polling instead", error=repr(e))
            intent.status = "uncertain" if intent.status == "new" else intent.status
            return False
        return self._advance(intent, cumulative, last_price, commission, status,
                             int(data.get("T") or now_ms), reports, trades)

    def _on_account(self, data: Any) -> bool:
        if not isinstance(data, dict):
            return False
        for row in data.get("B", []) or []:
            if isinstance(row, dict) and row.get("a") == "USDT":
                try:
                    self.balance = float(row["wb"])
                except (KeyError, TypeError, ValueError):
                    return False
                return True
        return False

    def _send_intents(self, now_ms: int, reports: list[ExecutionReport],
                      trades: list[TradeClosed], may_send: Callable[[], bool]) -> None:
        """Query the uncertain intents, send the new ones. A new one waits (stays new) while
        this instance may not send: whoever holds the lease next queries it first."""
        for intent in sorted(self.intents.values(), key=lambda i: (i.created_ts,
                                                                   i.client_order_id)):
            if intent.status == "uncertain":
                self._resolve(intent, now_ms, reports, trades)
            elif intent.status == "new" and _standing(may_send):
                self._send_new(intent, now_ms, reports, trades)

    def _send_new(self, intent: Intent, now_ms: int, reports: list[ExecutionReport],
                  trades: list[TradeClosed]) -> None:
        """Send an intent once; an answer that leaves its outcome unknown makes it uncertain."""
        intent.attempts += 1
        try:
            state = self._send(intent)
        except OrderRefused as e:  # refused here, before anything was sent
            reports.append(self._reject(intent, e.code, e.message, now_ms))
            return
        except ExchangeRejected as e:
            if e.code in OUTCOME_UNKNOWN_CODES or e.status >= 500:
                self._uncertain(intent, f"{e.code}: {e.message}", now_ms)
            else:
                reports.append(self._reject(intent, e.code, e.message, now_ms))
            return
        except (ExchangeUnavailable, ExchangeDataError) as e:
            self._uncertain(intent, str(e), now_ms)
            return
        intent.status = "open"
        reports.append(self._report_for(intent, "ack", 0.0, 0.0, 0.0, now_ms))
        self._apply_rest(intent, state, now_ms, reports, trades)

    def _uncertain(self, intent: Intent, error: str, now_ms: int) -> None:
        intent.status, intent.error = "uncertain", error
        intent.sent_ms, intent.queries = max(now_ms, int(time.time() * 1000)), 0
        intent.next_query_ms = now_ms + int(QUERY_BACKOFF_S[0] * 1000)
        log.warning("order outcome unknown; querying by client id",
                    client_order_id=intent.client_order_id, error=error)

    def _resolve(self, intent: Intent, now_ms: int, reports: list[ExecutionReport],
                 trades: list[TradeClosed]) -> None:
        """Query an uncertain intent by its client id (never re-send it while it may exist)."""
        if now_ms < intent.next_query_ms:
            return
        if intent.sent_ms == 0:  # restored: any send happened before this first query
            intent.sent_ms = now_ms
        try:
            state = self.adapter.query_order(intent.symbol, intent.client_order_id)
        except (ExchangeRejected, ExchangeDataError) as e:
            # Not an answer about the order (a refused or malformed query): ask again later,
            # and never count it towards declaring the order not placed.
            log.warning("query of an uncertain order failed", error=str(e),
                        client_order_id=intent.client_order_id)
            intent.error = str(e)
            intent.next_query_ms = now_ms + int(QUERY_BACKOFF_S[1] * 1000)
            return
        if state is not None:
            log.info("uncertain order found on the exchange",
                     client_order_id=intent.client_order_id, queries=intent.queries + 1)
            intent.status, intent.queries = "open", 0
            reports.append(self._report_for(intent, "ack", 0.0, 0.0, 0.0, now_ms))
            self._apply_rest(intent, state, now_ms, reports, trades)
            return
        intent.queries += 1
        deadline = (intent.sent_ms + self.config.recv_window_ms
                    + int(self.config.unknown_order_margin_s * 1000))
        if intent.queries >= MIN_UNKNOWN_QUERIES and now_ms >= deadline:
            self._not_placed(intent, now_ms, reports)
            return
        wait = min(QUERY_BACKOFF_S[1], QUERY_BACKOFF_S[0] * 2 ** (intent.queries - 1))
        intent.next_query_ms = now_ms + int(wait * 1000)

    def _not_placed(self, intent: Intent, now_ms: int, reports: list[ExecutionReport]) -> None:
        seconds = (now_ms - intent.sent_ms) / 1000
        log.warning("order unknown to the exchange past recvWindow; declared not placed",
                    client_order_id=intent.client_order_id, queries=intent.queries,
                    seconds=round(seconds, 1), reduce_only=intent.reduce_only)
        if intent.reduce_only and intent.resends < MAX_EXIT_RESENDS:
            intent.resends += 1
            intent.status, intent.queries = "new", 0
            return
        reports.append(self._reject(
            intent, UNKNOWN_ORDER,
            f"not placed: unknown to the exchange after {intent.queries} queries over "
            f"{seconds:.0f} s", now_ms))

    def _send(self, intent: Intent) -> OrderState:
        filters = self.adapter.filters(intent.symbol)
        if not intent.reduce_only:
            self.adapter.configure(intent.symbol, intent.leverage, self.config.margin_type)
        quantity = filters.prepare(intent.quantity, intent.reference_price,
                                   reduce_only=intent.reduce_only)
        arguments: dict[str, Any] = {
            "symbol": intent.symbol, "side": intent.side, "quantity": quantity,
            "client_order_id": intent.client_order_id, "reduce_only": intent.reduce_only,
        }
        return self.adapter.place_market(**arguments)

    def _poll_open(self, now_ms: int, reports: list[ExecutionReport],
                   trades: list[TradeClosed]) -> bool:
        stream = self._stream
        due = time.monotonic() - self._last_poll >= self.config.poll_interval_s
        gap = stream is None or stream.gap or not stream.connected.is_set()
        if not (due or gap):
            return False
        if stream is not None and stream.connected.is_set():
            stream.gap = False  # connected again: what was missed is fetched now
        self._last_poll = time.monotonic()
        changed = False
        for intent in list(self.intents.values()):
            if intent.status != "open":
                continue
            state = self.adapter.query_order(intent.symbol, intent.client_order_id)
            if state is None:
                # The exchange acknowledged it: a miss now is a lagging query, not a reject.
                log.warning("acknowledged order not found by its query; asking again",
                            client_order_id=intent.client_order_id)
                continue
            changed |= self._apply_rest(intent, state, now_ms, reports, trades)
        if time.monotonic() - self._last_balance >= 60.0:
            self.balance = self.adapter.wallet_balance()
            self._last_balance = time.monotonic()
        self._prune()
        return changed

    def _prune(self) -> None:
        """Forget done intents older than the retention window (event time)."""
        horizon = self.clock_ms - self.config.intent_retention_ms
        for key in [k for k, v in self.intents.items()
                    if v.status == "done" and v.created_ts < horizon]:
            del self.intents[key]

    # --- rebuild after state loss ---------------------------------------------------------

    def _rebuild(self, now_ms: int) -> None:
        """The book from the exchange: balance, positions, open and protective orders."""
        account = self.adapter.account()
        exchange_positions = self.adapter.positions()
        open_orders = self.adapter.open_orders()
        protective = self.adapter.open_protective() if self.config.protective_orders else []
        self.balance = account.wallet_balance
        self._last_balance = time.monotonic()
        self.realised_pnl = self.fees_paid = self.funding_paid = 0.0
        self.clock_ms = max(self.clock_ms, now_ms)
        self.positions, self.protections = {}, {}
        for found in exchange_positions:
            self.positions[found.symbol] = Position(
                position_id=f"rb-{found.symbol}-{now_ms}", symbol=found.symbol,
                side=found.side, quantity=abs(found.amount),
                initial_quantity=abs(found.amount), entry_price=found.entry_price,
                leverage=max(1, account.leverage.get(found.symbol, 1)), opened_ts=now_ms,
                stop_distance=0.0, exit_plan=None, mark_price=found.mark_price)
        for order in open_orders:
            self._adopt_open_order(order, now_ms)
        self._adopt_protection(protective)
        self.rebuild_pending = False
        self.rebuilt = self.book_summary(
            "rebuilt_from_venue",
            f"{len(self.protections)} of {len(self.positions)} positions protected by "
            "resting stops")
        log.warning("book rebuilt from the exchange", balance=self.balance,
                    positions=sorted(self.positions), open_orders=self.rebuilt.open_orders)

    def _adopt_open_order(self, order: OrderState, now_ms: int) -> None:
        if order.client_order_id in self.intents:
            return  # recorded since the restore
        held = self.positions.get(order.symbol)
        if held is not None and (order.reduce_only or held.side == (
                "LONG" if order.side == "BUY" else "SHORT")):
            position_id, position_side = held.position_id, held.side
        else:
            position_id = f"rb-{order.client_order_id}"
            position_side = "LONG" if order.side == "BUY" else "SHORT"
        self.intents[order.client_order_id] = Intent(
            client_order_id=order.client_order_id, plan_id=position_id, position_id=position_id,
            symbol=order.symbol, side=order.side, position_side=position_side,
            quantity=order.quantity,
            reference_price=order.average_price or (held.mark_price if held else 0.0),
            leverage=held.leverage if held else 1, reduce_only=order.reduce_only,
            reason="rebuilt", created_ts=now_ms, status="open",
            executed=order.executed_quantity,
            cost=order.executed_quantity * order.average_price)

    def _adopt_protection(self, protective: list[Any]) -> None:
        """Take over the stop (and take-profit) resting on each rebuilt position."""
        for symbol in self.positions:
            stops = [o for o in protective if o.symbol == symbol and o.order_type == "STOP_MARKET"]
            takes = [o for o in protective
                     if o.symbol == symbol and o.order_type == "TAKE_PROFIT_MARKET"]
            if not stops:
                continue
            stop, take = stops[0], takes[0] if takes else None
            self.protections[symbol] = Protection(
                stop=stop.trigger_price, take_profit=take.trigger_price if take else None,
                placed_stop_id=stop.client_algo_id, placed_stop=stop.trigger_price,
                placed_tp_id=take.client_algo_id if take else None,
                placed_tp=take.trigger_price if take else None)

    def _apply_rest(self, intent: Intent, state: OrderState, now_ms: int,
                    reports: list[ExecutionReport], trades: list[TradeClosed]) -> bool:
        delta = state.executed_quantity - intent.executed
        price = ((state.average_price * state.executed_quantity - intent.cost) / delta
                 if delta > EPSILON else state.average_price)
        fee = max(0.0, delta) * price * self.config.taker_fee
        return self._advance(intent, state.executed_quantity, price, fee, state.status,
                             state.update_time or now_ms, reports, trades)

    def _advance(self, intent: Intent, cumulative: float, price: float, fee: float,
                 status: str, ts: int, reports: list[ExecutionReport],
                 trades: list[TradeClosed]) -> bool:
        """Book the part of ``cumulative`` not yet booked (idempotent across sources)."""
        delta = cumulative - intent.executed
        if status in ("FILLED", "CANCELED", "EXPIRED", "REJECTED"):
            if intent.status != "done" and status != "FILLED" and delta <= EPSILON:
                reports.append(self._report_for(intent, "cancel", 0.0, 0.0, 0.0, ts,
                                                message=status))
            intent.status = "done" if delta <= EPSILON or status == "FILLED" else intent.status
        if delta <= EPSILON:
            return False
        intent.executed = cumulative
        intent.cost += price * delta
        intent.fees += fee
        self.fees_paid += fee
        self.balance -= fee
        if intent.status in ("new", "uncertain"):
            intent.status = "open"
        if status == "FILLED":
            intent.status = "done"
        if intent.reduce_only:
            position = self.positions.get(intent.symbol)
            if position is None:
                return True
            new_reports, new_trades = self._book_reduce(position, delta, price, fee, ts,
                                                        intent.reason, intent.client_order_id,
                                                        intent=intent)
            reports.extend(new_reports)
            trades.extend(new_trades)
            return True
        self._book_entry(intent, delta, price, fee, ts)
        reports.append(self._report_for(intent, "fill", delta, price, fee, ts))
        return True

    def _book_entry(self, intent: Intent, quantity: float, price: float, fee: float,
                    ts: int) -> None:
        position = self.positions.get(intent.symbol)
        if position is None or position.position_id != intent.position_id:
            plan = intent.exit_plan
            stop_distance = abs(intent.reference_price - plan["stop_loss"]) if plan else 0.0
            position = Position(
                position_id=intent.position_id, symbol=intent.symbol,
                side=intent.position_side, quantity=0.0, initial_quantity=0.0,
                entry_price=price, leverage=intent.leverage, opened_ts=ts,
                stop_distance=stop_distance, exit_plan=plan, mark_price=price,
            )
            self.positions[intent.symbol] = position
            if plan and self.config.protective_orders:
                final_tp = plan["take_profits"][-1]["price"] if plan["take_profits"] else None
                self.protections[intent.symbol] = Protection(plan["stop_loss"], final_tp)
        total = position.quantity + quantity
        position.entry_price = (position.entry_price * position.quantity + price * quantity) / total
        position.quantity = total
        position.initial_quantity += quantity
        position.fees += fee

    def _book_reduce(self, position: Position, quantity: float, price: float, fee: float,
                     ts: int, reason: str, client_order_id: str, *,
                     intent: Intent | None = None) -> tuple[list[ExecutionReport],
                                                            list[TradeClosed]]:
        quantity = min(quantity, position.quantity)
        pnl = position.sign * (price - position.entry_price) * quantity
        position.quantity -= quantity
        position.realised += pnl
        position.fees += fee
        position.exit_value += price * quantity
        position.exit_quantity += quantity
        position.mark_price = price
        self.realised_pnl += pnl
        self.balance += pnl
        source = intent or Intent(
            client_order_id=client_order_id, plan_id=position.position_id,
            position_id=position.position_id, symbol=position.symbol,
            side="SELL" if position.side == "LONG" else "BUY", position_side=position.side,
            quantity=quantity, reference_price=price, leverage=position.leverage,
            reduce_only=True, reason=reason, created_ts=ts, status="done")
        trades: list[TradeClosed] = []
        if position.quantity <= position.initial_quantity * 1e-9:
            position.quantity = 0.0
            del self.positions[position.symbol]
            trades.append(self._closed(position, ts, reason))
        report = self._report_for(source, "fill", quantity, price, fee, ts,
                                  position=self.positions.get(position.symbol))
        return [report], trades

    def _closed(self, position: Position, ts: int, reason: str) -> TradeClosed:
        net = position.realised - position.fees - position.funding
        risk = position.initial_quantity * position.stop_distance
        return TradeClosed(
            trade_id=position.position_id, symbol=position.symbol, side=position.side,
            quantity=position.initial_quantity, entry_price=position.entry_price,
            exit_price=position.exit_value / position.exit_quantity,
            entry_ts=position.opened_ts, exit_ts=ts, gross_pnl=position.realised,
            fees=position.fees, funding=position.funding, net_pnl=net,
            r_multiple=net / risk if risk > 0 else None, exit_reason=reason,
            holding_seconds=max(0.0, (ts - position.opened_ts) / 1000),
            leverage=position.leverage,
        )

    # --- protective orders ----------------------------------------------------------------

    def _protect(self, now_ms: int, may_send: Callable[[], bool]) -> None:
        if not self.config.protective_orders or not _standing(may_send):
            return
        for symbol, protection in list(self.protections.items()):
            position = self.positions.get(symbol)
            if position is None:
                for placed in (protection.placed_stop_id, protection.placed_tp_id):
                    if placed:
                        self.adapter.cancel_protective(symbol, placed)
                del self.protections[symbol]
                continue
            self._sync_protection(position, protection)

    def _sync_protection(self, position: Position, protection: Protection) -> None:
        close_side = "SELL" if position.side == "LONG" else "BUY"
        filters = self.adapter.filters(position.symbol)
        wanted = [("STOP_MARKET", protection.stop, "placed_stop_id", "placed_stop")]
        if protection.take_profit is not None:
            wanted.append(("TAKE_PROFIT_MARKET", protection.take_profit, "placed_tp_id",
                           "placed_tp"))
        for order_type, level, id_field, price_field in wanted:
            target = float(filters.round_price(level))
            if getattr(protection, price_field) == target:
                continue
            protection.version += 1
            kind = "s" if order_type == "STOP_MARKET" else "t"
            new_id = f"qp{kind}-{position.position_id.replace('-', '')[:24]}-{protection.version}"
            old_id = getattr(protection, id_field)
            try:
                self.adapter.place_protective(symbol=position.symbol, side=close_side,
                                              order_type=order_type, trigger=target,
                                              client_algo_id=new_id)
            except ExchangeRejected as e:
                # e.g. -2021 "would immediately trigger": the exit-brain closes it itself.
                log.warning("protective order refused", symbol=position.symbol,
                            order_type=order_type, trigger=target, code=e.code)
                setattr(protection, price_field, target)
                continue
            setattr(protection, id_field, new_id)
            setattr(protection, price_field, target)
            if old_id:
                self.adapter.cancel_protective(position.symbol, old_id)

    # --- reports and portfolio ------------------------------------------------------------

    def liquidation_price(self, position: Position) -> float:
        move = 1.0 / position.leverage - self.config.maintenance_margin_rate
        return max(0.0, position.entry_price * (1 - position.sign * move))

    def _reject(self, intent: Intent, code: int, message: str, ts: int) -> ExecutionReport:
        intent.status, intent.error = "done", f"{code}: {message}"
        log.warning("order rejected", client_order_id=intent.client_order_id, code=code,
                    message=message)
        return self._report_for(intent, "reject", 0.0, 0.0, 0.0, ts, code=code, message=message)

    def _report_for(self, intent: Intent, kind: str, quantity: float, price: float, fee: float,
                    ts: int, *, code: int | None = None, message: str | None = None,
                    position: Position | None = None) -> ExecutionReport:
        held = position if position is not None else self.positions.get(intent.symbol)
        if held is not None and held.position_id != intent.position_id:
            held = None
        plan = intent.exit_plan if kind == "fill" and not intent.reduce_only else None
        return ExecutionReport.model_validate({
            "kind": kind, "client_order_id": intent.client_order_id, "plan_id": intent.plan_id,
            "symbol": intent.symbol, "side": intent.side, "position_side": intent.position_side,
            "position_id": intent.position_id if (held is not None or kind == "fill") else None,
            "quantity": quantity, "price": price, "fee": fee, "reduce_only": intent.reduce_only,
            "reason": intent.reason, "code": code, "message": message, "ts": ts,
            "exit_plan": plan, "position_quantity": held.quantity if held else 0.0,
            "liquidation_price": self.liquidation_price(held) if held else 0.0,
        })

    def portfolio(self) -> PortfolioState:
        views = tuple(
            PositionView(
                position_id=p.position_id, symbol=p.symbol, side=p.side,
                quantity=p.quantity, entry_price=p.entry_price,
                mark_price=p.mark_price or p.entry_price, leverage=p.leverage, margin=p.margin,
                liquidation_price=self.liquidation_price(p), unrealised_pnl=p.unrealised(),
                opened_ts=p.opened_ts,
            )
            for p in sorted(self.positions.values(), key=lambda p: p.symbol) if p.quantity > 0
        )
        unrealised = sum(v.unrealised_pnl for v in views)
        return PortfolioState(
            ts=self.clock_ms, balance=self.balance, equity=self.balance + unrealised,
            unrealised_pnl=unrealised, realised_pnl=self.realised_pnl, fees_paid=self.fees_paid,
            funding_paid=self.funding_paid,
            gross_exposure=sum(abs(p.notional) for p in self.positions.values()),
            net_exposure=sum(p.sign * p.notional for p in self.positions.values()),
            positions=views,
            pending_orders=sum(1 for i in self.intents.values() if i.status in OPEN_STATUSES),
        )
