"""execution: places orders on the exchange and owns positions, balance and closed trades.

Consumes entry orders (``apply.result``, from the apply-layer only), reduce-only exits and
the exit-brain's protective levels (``harvest.intent``), prices (``market.tick``) and
reconcile's findings (``reconcile.events``). Publishes every ack, fill and reject to
``execution.result``, each closed trade to ``trade.closed`` and the portfolio after every
change to ``portfolio.state``; the venue's full state and the portfolio are written to
their state keys in the same transaction as the acks, so a crash loses nothing. The paper
venue's income (commissions, realised PnL, funding, as Binance's income history books them)
is appended to ``quantum:state:execution:income`` in that transaction too: the ledger
compares it with the journal.

The venue is chosen by name (``QT_EXCHANGE``, resolved by :mod:`quantum.exchange.venues`)
and asked, never type-checked, for what differs: the paper exchange settles in event time
inside the handlers; Binance futures only records intents in the handlers (committed
before anything is sent) and talks to the exchange from the idle hook
(:mod:`quantum.exchange.venues.binance.execution`).

**The last gate before the exchange.** An entry order (not reduce-only) that is not a
duplicate is refused, and reported as a reject on ``execution.result`` with the refusal in
``reason`` (``code`` None), when: the book is not rebuilt yet after state loss
(``book_not_rebuilt``); its plan is malformed (``malformed_plan``: no exit plan, sides
that disagree, a stop or take-profit on the wrong side of the price); its approval is older
than ``approval_max_age_seconds`` (``stale_approval``; the event clock in a replay, the
wall clock live, as the apply-layer measures it); or the emergency stop blocks new risk
(``ess_tripped``, ``trading_paused``, or ``state_unknown`` when its key cannot be read).
The ESS costs one ``GET`` per entry order. Exits (reduce-only harvests) are never gated.
A maker entry (a post-only limit order) that passed the gate rests on the book until a bar
trades through it or it expires; while one rests, the ESS is read on every tick, and once
it blocks new risk every resting entry is cancelled (``cancel``, reason the block's).

**Failover.** The commit that records a live venue's intent asks the runner to confirm it on
a replica (:meth:`~quantum.bus.runner.Outbox.require_replica`) before the idle hook may send
it; unconfirmed, the runner holds the service and the intent is restored as uncertain (it is
queried, never sent blind).

**State loss.** When the state key is missing at start, the book is rebuilt before any
order is accepted, and a ``book`` report says where it came from: the live venue from
Binance (``rebuilt_from_venue``); the paper venue from its durable local record
(``rebuilt_from_local_record``, :mod:`quantum.exchange.venues.paper.record`), written
after each commit
that changed the book; ``fresh`` on a first start (no record and no trace of an earlier
run in Redis) and in replays; ``state_lost`` when there is a trace of an earlier run but no
record: the book starts fresh and the ESS is tripped with reason ``state_lost``, so no
entry passes until an operator has looked.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Gauge

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import (
    BookSummary,
    EndOfData,
    ExecutionReport,
    ExitLevels,
    HarvestIntent,
    OrderRequest,
    ReconcileEvent,
    Tick,
    TradeClosed,
)
from quantum.contracts.streams import EXECUTION_RESULT, PORTFOLIO_STATE, TRADE_CLOSED
from quantum.exchange.base import Venue
from quantum.exchange.venues import venue_for
from quantum.registry.fleet import ESS_KEY, EXECUTION_INCOME_KEY, EXECUTION_KEY, PORTFOLIO_KEY
from quantum.risk import ess
from services.execution.config import Settings

NAME = "execution"

REPORTS = Counter("quantum_execution_reports_total", "Execution reports", ["kind"])
TRADES = Counter("quantum_execution_trades_closed_total", "Trades closed", ["reason"])
EQUITY = Gauge("quantum_portfolio_equity", "Equity in USDT")
BALANCE = Gauge("quantum_portfolio_balance", "Wallet balance in USDT")
OPEN_POSITIONS = Gauge("quantum_portfolio_open_positions", "Open positions")
REFUSED = Counter("quantum_execution_entries_refused_total",
                  "Entry orders refused by execution's last gate", ["reason"])
BOOKS = Counter("quantum_execution_books_total", "Books started without a state key",
                ["source"])
log = structlog.get_logger(service=NAME)
# Client order ids are kept at least this long, and at least twice the freshness bound: a
# copy of an order arriving later than that is refused as stale before the book sees it.
MIN_ORDER_RETENTION_MS = 3_600_000
# Income records kept in the paper venue's trail (newest first): months of a busy book.
INCOME_KEEP = 100_000


def plan_problem(order: OrderRequest) -> str | None:
    """What makes an entry order's plan unusable, or None."""
    expected = "LONG" if order.side == "BUY" else "SHORT"
    if order.position_side != expected:
        return f"a {order.side} entry cannot open a {order.position_side} position"
    plan = order.exit_plan
    if plan is None:
        return "an entry without an exit plan (no stop loss)"
    sign = 1.0 if order.position_side == "LONG" else -1.0
    if sign * (order.reference_price - plan.stop_loss) <= 0:
        return (f"stop loss {plan.stop_loss:g} is on the wrong side of the price "
                f"{order.reference_price:g} for a {order.position_side}")
    for level in plan.take_profits:
        if sign * (level.price - order.reference_price) <= 0:
            return (f"take-profit {level.price:g} is on the wrong side of the price "
                    f"{order.reference_price:g} for a {order.position_side}")
    if sum(level.fraction for level in plan.take_profits) > 1.0 + 1e-9:
        return "take-profit fractions add up to more than the position"
    if order.limit_price is not None and sign * (order.limit_price - plan.stop_loss) <= 0:
        return (f"limit price {order.limit_price:g} is beyond the stop loss "
                f"{plan.stop_loss:g} for a {order.position_side}")
    return None


class Execution(ServiceBase):
    name = NAME

    def __init__(self, settings: Settings, ports: Ports) -> None:
        self.settings = settings
        self.state = ports.state
        self.clock = ports.clock
        self.history = ports.history
        self.alarm = ports.alarm
        self.standing = ports.standing  # the live venue asks it before each request it signs
        self.max_age_ms = settings.approval_max_age_seconds * 1000
        self.retention_ms = max(2 * self.max_age_ms, MIN_ORDER_RETENTION_MS)
        self.event_clock = ports.clock.event
        self.factory = venue_for(settings.exchange)
        self.venue: Venue = self._fresh()
        # The book's durable local record (paper only: Binance rebuilds from the exchange);
        # none on the event clock, where replays start from a fresh book.
        self.record = None if self.event_clock else self.factory.local_record(settings)
        self._state_dirty = True
        self._sequence = 0
        self._book_changed = False  # the paper book changed since the last record
        self._record_due: dict[str, Any] | None = None  # put in the outbox, not yet on disk
        self._book_report: BookSummary | None = None  # to announce on execution.result

    def _fresh(self) -> Venue:
        """The named venue with an empty book."""
        return self.factory.create(self.settings, order_retention_ms=self.retention_ms)

    # --- state ----------------------------------------------------------------------------

    def restore(self) -> None:
        raw = self.state.get(EXECUTION_KEY)
        self._book_changed, self._record_due = False, None
        self._state_dirty = raw is None  # publish the initial portfolio on a fresh start
        if raw is not None:
            # Live: the adapter, its clock offset and user stream are kept; paper: a new book.
            snapshot = orjson.loads(raw) if raw else None
            self.venue = self.venue.restored(snapshot)
            if self.record is not None:
                self._record_due = snapshot  # committed by definition: refresh the record
            return
        if self.venue.rebuild_from_exchange():  # in the idle hook, before anything is sent
            log.warning("no execution state: the book is rebuilt from the exchange")
            return
        self.venue, summary = self._book_without_state()
        self._book_report = summary
        self._book_changed = True  # a first record, so a later loss is not a first start
        BOOKS.labels(summary.source).inc()

    def _book_without_state(self) -> tuple[Venue, BookSummary]:
        """The book when Redis has none and the venue cannot rebuild it from the exchange
        (paper): the local record, else fresh or lost."""
        loaded = self.record.load() if self.record is not None else None
        if loaded is not None and loaded.book is not None:
            venue = self.venue.restored(loaded.book)
            log.warning("no execution state: book rebuilt from the local record",
                        record=str(self.record.path if self.record else ""))
            return venue, venue.book_summary("rebuilt_from_local_record",
                                             f"record saved at {loaded.saved_at}")
        venue = self._fresh()
        trace = None if self.event_clock else self._earlier_run(loaded)
        if trace is None:
            return venue, venue.book_summary("fresh", "first start")
        log.error("execution state lost and no local record: emergency stop tripped",
                  trace=trace)
        self.alarm(NAME, f"execution's book is gone: {trace}")
        return venue, venue.book_summary("state_lost", trace)

    def _earlier_run(self, loaded: Any) -> str | None:
        """Why this is not a first start, or None when nothing says so."""
        if loaded is not None and loaded.existed:
            return loaded.problem or "the local record is empty"
        if self.state.exists(PORTFOLIO_KEY):
            return "the portfolio key exists without the execution state"
        for stream in (EXECUTION_RESULT, TRADE_CLOSED):
            if self.history.length(stream):
                return f"{stream.name} holds events of an earlier run"
        return None

    def after_commit(self) -> None:
        """After each successful commit: the paper book's record, if that commit changed it."""
        due, self._record_due = self._record_due, None
        if due is None or self.record is None:
            return
        try:
            self.record.save(due)
        except OSError as e:  # the next change writes it again; Redis still has the book
            log.error("cannot write the paper book record", path=str(self.record.path),
                      error=str(e))
            self._book_changed = True

    def close(self) -> None:
        self.venue.close()

    # --- publishing -----------------------------------------------------------------------

    def _publish(self, out: Outbox, cause: Envelope[Any] | None, reports: list[ExecutionReport],
                 trades: list[TradeClosed], changed: bool) -> None:
        for i, report in enumerate(reports):
            key: object = i if cause is not None else (
                f"{report.client_order_id}:{report.kind}:{report.ts}:{self._next()}")
            out.emit(EXECUTION_RESULT, new_envelope(report, ts=report.ts, source=NAME, cause=cause,
                                                    key=key))
            REPORTS.labels(report.kind).inc()
        for trade in trades:
            out.emit(TRADE_CLOSED, new_envelope(trade, ts=trade.exit_ts, source=NAME, cause=cause,
                                                key=trade.trade_id))
            TRADES.labels(trade.exit_reason).inc()
        if changed or reports or trades:
            # One snapshot per change, never per batch: how events happen to be batched must
            # not change what is published (replays at any speed publish the same events).
            portfolio = self.venue.portfolio()
            key = "portfolio" if cause is not None else f"portfolio:{self._next()}"
            out.emit(PORTFOLIO_STATE, new_envelope(portfolio, ts=portfolio.ts, source=NAME,
                                                   cause=cause, key=key))
            self._state_dirty = True
            self._book_changed = True

    def _announce_book(self, out: Outbox, cause: Envelope[Any] | None, ts: int) -> None:
        """The ``book`` report of a book started without its state key (once)."""
        summary = self.venue.take_rebuilt()  # a rebuild from the exchange (live)
        if summary is None:
            summary, self._book_report = self._book_report, None
        if summary is None:
            return
        report = ExecutionReport.book_report(summary, ts)
        key = "book" if cause is not None else f"book:{self._next()}"
        out.emit(EXECUTION_RESULT, new_envelope(report, ts=ts, source=NAME, cause=cause, key=key))
        REPORTS.labels("book").inc()
        self._state_dirty = True

    def _next(self) -> str:
        """A unique key for events with no cause (idle-hook reports of a live venue)."""
        self._sequence += 1
        return f"{time.time_ns()}:{self._sequence}"

    # --- the last gate --------------------------------------------------------------------

    def refusal(self, order: OrderRequest) -> tuple[str, str] | None:
        """Why an entry order must not reach the exchange, as (reason, detail), or None."""
        if self.venue.rebuild_pending:
            return "book_not_rebuilt", "the book is not yet rebuilt from the exchange"
        problem = plan_problem(order)
        if problem is not None:
            return "malformed_plan", problem
        age_ms = self.clock.now_ms() - order.bar_time
        if age_ms > self.max_age_ms:
            return "stale_approval", (f"approval {age_ms / 1000:.0f} s old (bound "
                                      f"{self.max_age_ms // 1000} s)")
        try:
            state = ess.parse(self.state.get(ESS_KEY))
        except ValueError as e:  # an unreadable ESS key is no permission to trade
            return "state_unknown", f"emergency stop state unreadable: {e}"[:300]
        if state.blocks_new_risk:
            reason = state.block_reason or "ess_tripped"
            return reason, f"emergency stop: {state.reason or state.paused_by or reason}"
        return None

    def _cancelled_if_blocked(self, ts: int) -> list[ExecutionReport]:
        """A maker entry resting on the book is new risk still to come: once the emergency
        stop blocks new risk (or its state cannot be read), it is cancelled before the next
        price can fill it."""
        try:
            reason = ess.parse(self.state.get(ESS_KEY)).block_reason
        except ValueError:
            reason = "state_unknown"
        if reason is None:
            return []
        reports = self.venue.cancel_resting(ts, reason)
        if reports:
            log.warning("resting entries cancelled", reason=reason, orders=len(reports))
        return reports

    def _on_order(self, order: OrderRequest, event: Envelope[Any], out: Outbox) -> None:
        if self.venue.knows(order.client_order_id):
            return  # a copy of an order the book has (or refused): nothing to do
        refused = None if order.reduce_only else self.refusal(order)
        if refused is not None:
            reason, detail = refused
            REFUSED.labels(reason).inc()
            log.warning("entry order refused", client_order_id=order.client_order_id,
                        plan_id=order.plan_id, reason=reason, detail=detail)
            self._publish(out, event, [self.venue.refuse(order, event.ts, reason, detail)], [],
                          False)
            return
        self._publish(out, event, self.venue.submit(order, event.ts), [], False)
        self._state_dirty = True  # the intent is committed before it is sent
        self._book_changed = True
        self._intent_recorded(out)

    def _intent_recorded(self, out: Outbox) -> None:
        """An intent a live venue sends from the idle hook: its commit must be on a replica
        first (the runner's ``WAIT``), so a failover never forgets an order the exchange
        has. The paper venue fills inside the commit itself: nothing leaves the bus."""
        if not self.venue.settles_in_handlers:
            out.require_replica()

    # --- runner hooks ---------------------------------------------------------------------

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        if self._book_report is not None:
            self._announce_book(out, event, event.ts)
        payload = event.payload
        if isinstance(payload, Tick):
            cancelled = (self._cancelled_if_blocked(payload.ts) if self.venue.resting_entries
                         else [])
            reports, trades, changed = self.venue.on_tick(payload)
            self._publish(out, event, cancelled + reports, trades, changed or bool(cancelled))
            if payload.symbol in self.venue.positions:
                self._state_dirty = True  # marked to market
        elif isinstance(payload, OrderRequest):
            self._on_order(payload, event, out)
        elif isinstance(payload, HarvestIntent):
            reports, trades = self.venue.harvest(payload)
            self._publish(out, event, reports, trades, self.venue.settles_in_handlers)
            self._state_dirty = True
            self._intent_recorded(out)
        elif isinstance(payload, ExitLevels):
            self.venue.set_levels(payload)
            self._state_dirty = self.venue.levels_in_state or self._state_dirty
        elif isinstance(payload, ReconcileEvent):
            reports, trades = self.venue.on_reconcile(payload)
            self._publish(out, event, reports, trades, bool(reports or trades))
            self._state_dirty = True
        elif isinstance(payload, EndOfData):
            self._publish(out, event, self.venue.cancel_all(payload.last_ts), [], True)

    def on_batch_end(self, out: Outbox) -> None:
        for record in self.venue.take_income():  # paper: the income trail the ledger reads
            out.append(EXECUTION_INCOME_KEY, record, INCOME_KEEP)
        if not self._state_dirty:
            return
        self._state_dirty = False
        portfolio = self.venue.portfolio()
        snapshot = self.venue.snapshot()
        out.put_state(EXECUTION_KEY, snapshot)
        out.put_state(PORTFOLIO_KEY, portfolio.model_dump(mode="json"))
        if self._book_changed and self.record is not None:
            self._book_changed = False
            self._record_due = snapshot  # written once the transaction holding it commits
        EQUITY.set(portfolio.equity)
        BALANCE.set(portfolio.balance)
        OPEN_POSITIONS.set(len(portfolio.positions))

    def on_idle(self, out: Outbox, now: float) -> None:
        # Whatever on_batch_end put in an outbox before this turn has been committed (a
        # failed commit raises out of the runner's loop, a failed batch restores): the
        # record can be written now even where the runner has no after-commit hook.
        self.after_commit()
        reports, trades, changed = self.venue.poll(int(now * 1000), self.standing)
        if reports or trades or changed:
            self._publish(out, None, reports, trades, changed)
            self._state_dirty = True
        if not self.event_clock and (self._book_report is not None
                                     or self.venue.rebuilt is not None):
            self._announce_book(out, None, int(now * 1000))
        if self._state_dirty:
            self.on_batch_end(out)


def build(settings: Settings, ports: Ports) -> Execution:
    return Execution(settings, ports)
