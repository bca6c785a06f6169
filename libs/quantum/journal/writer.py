"""Turn events into journal rows and write a batch of them in one transaction.

The journal service calls :meth:`Journal.add` for each event of a runner batch and
:meth:`Journal.flush` at the batch end, before the runner commits the batch's acks: the rows
are durable before the entries are acked, so a crash in between replays the batch and the
idempotency check (the ``journal_events`` ledger, keyed by event id) drops what was already
written. Append-only tables are written with one multi-row ``INSERT`` each; orders, whose
status changes with every execution report, are loaded and updated as ORM objects.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from quantum.bus.envelope import Envelope
from quantum.contracts.events import (
    Decision,
    ExecutionReport,
    ExitPlan,
    OrderRequest,
    PortfolioState,
    RetrainingCompleted,
    RetrainingStarted,
    RiskDecision,
    RiskEvent,
    Signal,
    SupervisorEvent,
    TradeClosed,
)
from quantum.journal.models import (
    Base,
    DecisionRow,
    FillRow,
    JournalEvent,
    OrderRow,
    PortfolioSnapshotRow,
    PositionSnapshotRow,
    RetrainingJobRow,
    RiskDecisionRow,
    RiskEventRow,
    RiskStateRow,
    SignalRow,
    SignalVoteRow,
    SupervisionRow,
    TradeRow,
)

_ID_CHUNK = 500  # ids per ``IN (…)`` list: far below every backend's bound-parameter limit


def _exit_levels(plan: ExitPlan | None) -> dict[str, Any]:
    if plan is None:
        return {"exit_profile": None, "stop_loss": None, "take_profits": None}
    return {
        "exit_profile": plan.profile,
        "stop_loss": plan.stop_loss,
        "take_profits": [tp.model_dump() for tp in plan.take_profits],
    }


def risk_state_change(event: RiskEvent) -> tuple[bool | None, bool | None]:
    """(ESS tripped, trading paused) as a risk event sets them; ``None`` = unchanged.

    Kinds follow the emergency stop system: ``ess_trip*`` / ``ess_reset*``, ``trading_paused``
    / ``trading_resumed`` (matched on words, so ``ess_tripped`` and ``ess.trip`` both count).
    """
    words = event.kind.lower().replace(".", "_").replace("-", "_")
    tripped: bool | None = None
    paused: bool | None = None
    if "ess" in words.split("_") or words.startswith("emergency"):
        if "reset" in words:
            tripped = False
        elif "trip" in words or words.startswith("emergency"):
            tripped = True
    if "pause" in words:
        paused = True
    elif "resume" in words:
        paused = False
    return tripped, paused


@dataclass
class _Batch:
    """Rows gathered from one runner batch, by model, in event order."""

    ledger: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[type[Base], list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    orders: list[Envelope[Any]] = field(default_factory=list)  # requests and reports, in order
    snapshots: list[Envelope[PortfolioState]] = field(default_factory=list)
    risk_events: list[Envelope[RiskEvent]] = field(default_factory=list)
    retraining: list[Envelope[Any]] = field(default_factory=list)  # CLM's learning.events


@dataclass
class FlushResult:
    """What one flush wrote: events new to the journal, and duplicates dropped."""

    written: int
    duplicates: int
    seconds: float


class Journal:
    """Buffers the events of a batch and writes them, idempotently, in one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: list[Envelope[Any]] = []
        self._peak_equity: float | None = None
        self._ess_tripped = False
        self._trading_paused = False
        self._risk_loaded = False

    # --- buffering --------------------------------------------------------------------------

    def add(self, event: Envelope[Any]) -> None:
        self._pending.append(event)

    def discard(self) -> None:
        """Forget the buffered events (the runner retries them after a failed batch)."""
        self._pending.clear()

    @property
    def buffered(self) -> int:
        return len(self._pending)

    @property
    def pending(self) -> tuple[Envelope[Any], ...]:
        """The buffered events, oldest first."""
        return tuple(self._pending)

    def write(self, events: Iterable[Envelope[Any]]) -> FlushResult:
        """Add ``events`` and flush them: the one-call form for tools and benchmarks."""
        for event in events:
            self.add(event)
        return self.flush()

    # --- flushing ---------------------------------------------------------------------------

    def flush(self) -> FlushResult:
        """Write the buffered events in one transaction; raises when the database fails (the
        buffer is kept, so the caller decides between retrying and discarding)."""
        started = time.perf_counter()
        events = self._pending
        if not events:
            return FlushResult(0, 0, 0.0)
        with Session(self.engine) as session, session.begin():
            self._load_risk_memory(session)
            seen = self._already_written(session, [e.id for e in events])
            batch = _Batch()
            duplicates = 0
            for event in events:
                if event.id in seen:
                    duplicates += 1
                    continue
                seen.add(event.id)
                self._collect(event, batch)
            peak, tripped, paused = self._peak_equity, self._ess_tripped, self._trading_paused
            try:
                self._write_batch(session, batch)
            except BaseException:
                self._peak_equity, self._ess_tripped, self._trading_paused = peak, tripped, paused
                raise
        self._pending = []
        return FlushResult(len(batch.ledger), duplicates, time.perf_counter() - started)

    def _already_written(self, session: Session, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _ID_CHUNK):
            chunk = unique[start:start + _ID_CHUNK]
            found.update(session.scalars(
                select(JournalEvent.event_id).where(JournalEvent.event_id.in_(chunk))))
        return found

    def _load_risk_memory(self, session: Session) -> None:
        """Peak equity and the last risk state, from the database once per process, so a
        restarted journal continues the drawdown and ESS columns where they were."""
        if self._risk_loaded:
            return
        self._peak_equity = session.scalar(select(func.max(PortfolioSnapshotRow.peak_equity)))
        last = session.scalars(
            select(RiskStateRow).order_by(RiskStateRow.id.desc()).limit(1)).first()
        if last is not None:
            self._ess_tripped, self._trading_paused = last.ess_tripped, last.trading_paused
        self._risk_loaded = True

    def _collect(self, event: Envelope[Any], batch: _Batch) -> None:
        batch.ledger.append({"event_id": event.id, "event_type": event.type, "ts": event.ts,
                             "trace_id": event.trace_id})
        payload = event.payload
        if isinstance(payload, Signal):
            batch.rows[SignalRow].append({
                "event_id": event.id, "ts": event.ts, "symbol": payload.symbol,
                "bar_time": payload.bar_time, "model": payload.model,
                "model_version": payload.model_version, "direction": payload.direction,
                "confidence": payload.confidence, "prob_long": payload.prob_long,
                "prob_short": payload.prob_short, "price": payload.price, "atr": payload.atr,
                "blocked_reason": payload.blocked_reason,
            })
            batch.rows[SignalVoteRow].extend(
                {"signal_event_id": event.id, "member": vote.member, "direction": vote.direction,
                 "confidence": vote.confidence} for vote in payload.votes)
        elif isinstance(payload, Decision):
            batch.rows[DecisionRow].append({
                "event_id": event.id, "ts": event.ts, "symbol": payload.symbol,
                "bar_time": payload.bar_time, "direction": payload.direction,
                "confidence": payload.confidence, "intent_id": payload.intent_id,
                "model_version": payload.model_version,
            })
        elif isinstance(payload, RiskDecision):
            plan = payload.plan
            levels = _exit_levels(plan.exit_plan)
            batch.rows[RiskDecisionRow].append({
                "event_id": event.id, "ts": event.ts, "plan_id": payload.plan_id,
                "intent_id": plan.intent_id, "symbol": plan.symbol, "side": plan.side,
                "approved": payload.approved, "reasons": ",".join(payload.reasons),
                "quantity": plan.quantity, "notional": plan.notional, "leverage": plan.leverage,
                "confidence": plan.confidence, "policy_version": payload.policy_version, **levels,
            })
        elif isinstance(payload, RiskEvent):
            batch.rows[RiskEventRow].append({
                "event_id": event.id, "ts": event.ts, "kind": payload.kind,
                "severity": payload.severity, "detail": payload.detail, "data": payload.data,
            })
            batch.risk_events.append(event)
        elif isinstance(payload, OrderRequest | ExecutionReport):
            batch.orders.append(event)
            if isinstance(payload, ExecutionReport) and payload.kind == "fill":
                batch.rows[FillRow].append(_fill_row(event))
        elif isinstance(payload, TradeClosed):
            batch.rows[TradeRow].append({"event_id": event.id, **payload.model_dump()})
        elif isinstance(payload, PortfolioState):
            batch.snapshots.append(event)
        elif isinstance(payload, RetrainingStarted | RetrainingCompleted):
            batch.retraining.append(event)
        elif isinstance(payload, SupervisorEvent):
            batch.rows[SupervisionRow].append({
                "event_id": event.id, "ts": event.ts, "kind": payload.kind,
                "severity": payload.severity, "detail": payload.detail,
                "model_version": payload.model_version, "data": payload.data,
            })

    def _write_batch(self, session: Session, batch: _Batch) -> None:
        if not batch.ledger:
            return
        session.execute(insert(JournalEvent), batch.ledger)
        self._collect_snapshots(batch)
        self._collect_risk_states(batch)
        for model in (SignalRow, SignalVoteRow, DecisionRow, RiskDecisionRow, RiskEventRow,
                      RiskStateRow, FillRow, TradeRow, PortfolioSnapshotRow,
                      PositionSnapshotRow, SupervisionRow):
            rows = batch.rows.get(model)
            if rows:
                session.execute(insert(model), rows)
        if batch.orders:
            self._apply_orders(session, batch.orders)
        for event in batch.retraining:
            self._apply_retraining(session, event.payload)

    def _apply_retraining(self, session: Session, job: Any) -> None:
        """One row per CLM run: inserted when it starts, completed when it ends."""
        row = session.scalars(select(RetrainingJobRow).where(
            RetrainingJobRow.job_id == job.run_id)).first()
        if isinstance(job, RetrainingStarted):
            if row is None:
                session.add(RetrainingJobRow(
                    job_id=job.run_id, model="ensemble", status="running", started_ts=job.ts,
                    finished_ts=None, detail={"trigger": job.trigger, "data_dir": job.data_dir,
                                              "symbols": list(job.symbols)}))
            return
        status = "succeeded" if job.succeeded else "failed"
        detail = {"candidate": job.candidate, "detail": job.detail, "seconds": job.seconds}
        if row is None:
            session.add(RetrainingJobRow(job_id=job.run_id, model="ensemble", status=status,
                                         started_ts=job.ts, finished_ts=job.ts, detail=detail))
        else:
            row.status, row.finished_ts = status, job.ts
            row.detail = {**(row.detail or {}), **detail}

    def _collect_snapshots(self, batch: _Batch) -> None:
        for event in batch.snapshots:
            state = event.payload
            peak = max(self._peak_equity or state.equity, state.equity)
            self._peak_equity = peak
            drawdown = 1.0 - state.equity / peak if peak > 0 else 0.0
            batch.rows[PortfolioSnapshotRow].append({
                "event_id": event.id, "ts": state.ts, "balance": state.balance,
                "equity": state.equity, "unrealised_pnl": state.unrealised_pnl,
                "realised_pnl": state.realised_pnl, "fees_paid": state.fees_paid,
                "funding_paid": state.funding_paid, "gross_exposure": state.gross_exposure,
                "net_exposure": state.net_exposure, "open_positions": len(state.positions),
                "pending_orders": state.pending_orders, "peak_equity": peak,
                "drawdown": max(drawdown, 0.0),
            })
            batch.rows[PositionSnapshotRow].extend(
                {"snapshot_event_id": event.id, "ts": state.ts, **position.model_dump()}
                for position in state.positions)

    def _collect_risk_states(self, batch: _Batch) -> None:
        for event in batch.risk_events:
            tripped, paused = risk_state_change(event.payload)
            if tripped is None and paused is None:
                continue
            if tripped is not None:
                self._ess_tripped = tripped
            if paused is not None:
                self._trading_paused = paused
            batch.rows[RiskStateRow].append({
                "event_id": event.id, "ts": event.ts, "ess_tripped": self._ess_tripped,
                "trading_paused": self._trading_paused,
                "reason": f"{event.payload.kind}: {event.payload.detail}",
            })

    def _apply_orders(self, session: Session, events: list[Envelope[Any]]) -> None:
        ids = list(dict.fromkeys(e.payload.client_order_id for e in events))
        known: dict[str, OrderRow] = {}
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start:start + _ID_CHUNK]
            for row in session.scalars(select(OrderRow).where(OrderRow.client_order_id.in_(chunk))):
                known[row.client_order_id] = row
        for event in events:
            payload = event.payload
            order = known.get(payload.client_order_id)
            if order is None:
                order = _new_order(event)
                session.add(order)
                known[payload.client_order_id] = order
            if isinstance(payload, ExecutionReport):
                _apply_report(order, payload, event.ts)

    # --- retraining jobs --------------------------------------------------------------------

    def record_retraining_job(self, job_id: str, model: str, status: str, started_ts: int,
                              finished_ts: int | None, detail: dict[str, Any]) -> None:
        """Insert or update a retraining job (the continuous-learning manager's record)."""
        with Session(self.engine) as session, session.begin():
            row = session.scalars(select(RetrainingJobRow).where(
                RetrainingJobRow.job_id == job_id)).first()
            if row is None:
                session.add(RetrainingJobRow(job_id=job_id, model=model, status=status,
                                             started_ts=started_ts, finished_ts=finished_ts,
                                             detail=detail))
                return
            row.status, row.finished_ts, row.detail = status, finished_ts, detail


def _fill_row(event: Envelope[ExecutionReport]) -> dict[str, Any]:
    report = event.payload
    levels = _exit_levels(report.exit_plan)
    return {
        "event_id": event.id, "ts": report.ts, "client_order_id": report.client_order_id,
        "plan_id": report.plan_id, "position_id": report.position_id, "symbol": report.symbol,
        "side": report.side, "position_side": report.position_side,
        "quantity": report.quantity, "price": report.price, "fee": report.fee,
        "reduce_only": report.reduce_only, "reason": report.reason,
        "position_quantity": report.position_quantity,
        "liquidation_price": report.liquidation_price,
        "stop_loss": levels["stop_loss"], "take_profits": levels["take_profits"],
    }


def _new_order(event: Envelope[Any]) -> OrderRow:
    payload = event.payload
    is_request = isinstance(payload, OrderRequest)
    levels = _exit_levels(payload.exit_plan)
    return OrderRow(
        client_order_id=payload.client_order_id, event_id=event.id, plan_id=payload.plan_id,
        created_ts=event.ts, updated_ts=event.ts, symbol=payload.symbol, side=payload.side,
        position_side=payload.position_side, quantity=payload.quantity,
        reference_price=payload.reference_price if is_request else payload.price,
        leverage=payload.leverage if is_request else 1, reduce_only=payload.reduce_only,
        reason=payload.reason, status="new", filled_quantity=0.0, average_price=0.0, fees=0.0,
        **levels,
    )


def _apply_report(order: OrderRow, report: ExecutionReport, ts: int) -> None:
    order.updated_ts = max(order.updated_ts, ts)
    if report.kind == "fill":
        filled = order.filled_quantity + report.quantity
        if filled > 0:
            order.average_price = (order.average_price * order.filled_quantity
                                   + report.price * report.quantity) / filled
        order.filled_quantity = filled
        order.fees += report.fee
        if not order.quantity or filled >= order.quantity * (1 - 1e-9):
            order.status = "filled"
        else:
            order.status = "partially_filled"
        if order.quantity == 0:
            order.quantity = report.quantity
        return
    if report.kind == "ack":
        order.status = "acknowledged" if order.status == "new" else order.status
    elif report.kind == "reject":
        order.status = "rejected"
        order.reject_code, order.reject_message = report.code, report.message or report.reason
    elif report.kind == "cancel":
        order.status = "cancelled"
