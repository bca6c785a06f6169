"""The trade journal's tables (SQLAlchemy 2 declarative models).

Every row written from a stream carries the ``event_id`` of the envelope it came from,
unique, so a redelivered event (at-least-once delivery) can never add a second row; the
``journal_events`` ledger records each event handled, which is what the writer checks
first. Times are milliseconds since the Unix epoch (UTC), as in the event contracts, kept
as ``BigInteger`` so SQLite and PostgreSQL order and filter them the same way.

The migration in ``migrations/versions`` creates exactly these tables; a test compares the
migrated schema with this metadata so the two cannot drift.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

EVENT_ID = 36  # a UUID-shaped event id


class Base(DeclarativeBase):
    """Declarative base of the journal; its metadata is the schema migrations must match."""


class JournalEvent(Base):
    """The ledger of events the journal has written: the idempotency check."""

    __tablename__ = "journal_events"

    event_id: Mapped[str] = mapped_column(String(EVENT_ID), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(40))
    ts: Mapped[int] = mapped_column(BigInteger)
    trace_id: Mapped[str] = mapped_column(String(EVENT_ID))


class SignalRow(Base):
    """Every prediction of the ai-engine (``ai.signal``), acted on or not."""

    __tablename__ = "signals"
    __table_args__ = (Index("ix_signals_symbol_ts", "symbol", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID), unique=True)
    ts: Mapped[int] = mapped_column(BigInteger, index=True)
    symbol: Mapped[str] = mapped_column(String(20))
    bar_time: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(5))
    confidence: Mapped[float] = mapped_column(Float)
    prob_long: Mapped[float] = mapped_column(Float)
    prob_short: Mapped[float] = mapped_column(Float)
    price: Mapped[float] = mapped_column(Float)
    atr: Mapped[float] = mapped_column(Float)
    blocked_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)


class SignalVoteRow(Base):
    """One ensemble member's vote on a signal."""

    __tablename__ = "signal_votes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    signal_event_id: Mapped[str] = mapped_column(
        String(EVENT_ID), ForeignKey("signals.event_id", ondelete="CASCADE"), index=True
    )
    member: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(5))
    confidence: Mapped[float] = mapped_column(Float)


class DecisionRow(Base):
    """A signal the ai-engine acted on (``ai.decision``)."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID), unique=True)
    ts: Mapped[int] = mapped_column(BigInteger, index=True)
    symbol: Mapped[str] = mapped_column(String(20))
    bar_time: Mapped[int] = mapped_column(BigInteger)
    direction: Mapped[str] = mapped_column(String(5))
    confidence: Mapped[float] = mapped_column(Float)
    intent_id: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str] = mapped_column(String(64))


class RiskDecisionRow(Base):
    """The governor's answer to a plan, with the plan's size and exit levels."""

    __tablename__ = "risk_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID), unique=True)
    ts: Mapped[int] = mapped_column(BigInteger, index=True)
    plan_id: Mapped[str] = mapped_column(String(64), index=True)
    intent_id: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(20))
    side: Mapped[str] = mapped_column(String(5))
    approved: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[str] = mapped_column(Text)  # comma-separated reason codes
    quantity: Mapped[float] = mapped_column(Float)
    notional: Mapped[float] = mapped_column(Float)
    leverage: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[float] = mapped_column(Float)
    exit_profile: Mapped[str] = mapped_column(String(40))
    stop_loss: Mapped[float] = mapped_column(Float)
    take_profits: Mapped[list[Any]] = mapped_column(JSON)
    policy_version: Mapped[int] = mapped_column(Integer)


class RiskEventRow(Base):
    """Emergency-stop trips and resets, pauses, limit alerts (``risk.event``)."""

    __tablename__ = "risk_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID), unique=True)
    ts: Mapped[int] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(10))
    detail: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class SupervisionRow(Base):
    """A finding of the ai-engine's model supervisor (``ai.supervisor``)."""

    __tablename__ = "model_supervision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID), unique=True)
    ts: Mapped[int] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(10))
    detail: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class RiskStateRow(Base):
    """The risk state after a risk event that changes it: ESS tripped, trading paused."""

    __tablename__ = "risk_states"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID), unique=True)
    ts: Mapped[int] = mapped_column(BigInteger, index=True)
    ess_tripped: Mapped[bool] = mapped_column(Boolean)
    trading_paused: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)


class OrderRow(Base):
    """An order by client order id: created by apply.result (entries) or the first
    execution report (reduce-only exits), its status kept current by the reports."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID), unique=True)
    plan_id: Mapped[str] = mapped_column(String(64), index=True)
    created_ts: Mapped[int] = mapped_column(BigInteger, index=True)
    updated_ts: Mapped[int] = mapped_column(BigInteger)
    symbol: Mapped[str] = mapped_column(String(20))
    side: Mapped[str] = mapped_column(String(4))
    position_side: Mapped[str] = mapped_column(String(5))
    quantity: Mapped[float] = mapped_column(Float)
    reference_price: Mapped[float] = mapped_column(Float)
    leverage: Mapped[int] = mapped_column(Integer)
    reduce_only: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    filled_quantity: Mapped[float] = mapped_column(Float, default=0.0)
    average_price: Mapped[float] = mapped_column(Float, default=0.0)
    fees: Mapped[float] = mapped_column(Float, default=0.0)
    reject_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reject_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    exit_profile: Mapped[str | None] = mapped_column(String(40), nullable=True)
    stop_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    take_profits: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)


class FillRow(Base):
    """One fill (possibly partial) of an order."""

    __tablename__ = "fills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID), unique=True)
    ts: Mapped[int] = mapped_column(BigInteger, index=True)
    client_order_id: Mapped[str] = mapped_column(String(64), index=True)
    plan_id: Mapped[str] = mapped_column(String(64))
    position_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    symbol: Mapped[str] = mapped_column(String(20))
    side: Mapped[str] = mapped_column(String(4))
    position_side: Mapped[str] = mapped_column(String(5))
    quantity: Mapped[float] = mapped_column(Float)
    price: Mapped[float] = mapped_column(Float)
    fee: Mapped[float] = mapped_column(Float)
    reduce_only: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(64))
    position_quantity: Mapped[float] = mapped_column(Float)
    liquidation_price: Mapped[float] = mapped_column(Float)
    stop_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    take_profits: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)


class TradeRow(Base):
    """A closed trade with its PnL net of fees and funding."""

    __tablename__ = "trades"
    __table_args__ = (Index("ix_trades_symbol_exit_ts", "symbol", "exit_ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID), unique=True)
    trade_id: Mapped[str] = mapped_column(String(64), unique=True)
    symbol: Mapped[str] = mapped_column(String(20))
    side: Mapped[str] = mapped_column(String(5))
    quantity: Mapped[float] = mapped_column(Float)
    entry_price: Mapped[float] = mapped_column(Float)
    exit_price: Mapped[float] = mapped_column(Float)
    entry_ts: Mapped[int] = mapped_column(BigInteger)
    exit_ts: Mapped[int] = mapped_column(BigInteger, index=True)
    gross_pnl: Mapped[float] = mapped_column(Float)
    fees: Mapped[float] = mapped_column(Float)
    funding: Mapped[float] = mapped_column(Float)
    net_pnl: Mapped[float] = mapped_column(Float)
    r_multiple: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_reason: Mapped[str] = mapped_column(String(64))
    holding_seconds: Mapped[float] = mapped_column(Float)
    leverage: Mapped[int] = mapped_column(Integer)


class PortfolioSnapshotRow(Base):
    """Balance, equity and exposure after a change, with the drawdown from the peak."""

    __tablename__ = "portfolio_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID), unique=True)
    ts: Mapped[int] = mapped_column(BigInteger, index=True)
    balance: Mapped[float] = mapped_column(Float)
    equity: Mapped[float] = mapped_column(Float)
    unrealised_pnl: Mapped[float] = mapped_column(Float)
    realised_pnl: Mapped[float] = mapped_column(Float)
    fees_paid: Mapped[float] = mapped_column(Float)
    funding_paid: Mapped[float] = mapped_column(Float)
    gross_exposure: Mapped[float] = mapped_column(Float)
    net_exposure: Mapped[float] = mapped_column(Float)
    open_positions: Mapped[int] = mapped_column(Integer)
    pending_orders: Mapped[int] = mapped_column(Integer)
    peak_equity: Mapped[float] = mapped_column(Float)
    drawdown: Mapped[float] = mapped_column(Float)  # 1 - equity / peak_equity


class PositionSnapshotRow(Base):
    """An open position as one portfolio snapshot showed it."""

    __tablename__ = "position_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    snapshot_event_id: Mapped[str] = mapped_column(String(EVENT_ID), index=True)
    ts: Mapped[int] = mapped_column(BigInteger, index=True)
    position_id: Mapped[str] = mapped_column(String(64), index=True)
    symbol: Mapped[str] = mapped_column(String(20))
    side: Mapped[str] = mapped_column(String(5))
    quantity: Mapped[float] = mapped_column(Float)
    entry_price: Mapped[float] = mapped_column(Float)
    mark_price: Mapped[float] = mapped_column(Float)
    leverage: Mapped[int] = mapped_column(Integer)
    margin: Mapped[float] = mapped_column(Float)
    liquidation_price: Mapped[float] = mapped_column(Float)
    unrealised_pnl: Mapped[float] = mapped_column(Float)
    opened_ts: Mapped[int] = mapped_column(BigInteger)


class RetrainingJobRow(Base):
    """A model retraining job: what was trained, when, how it ended, its metrics."""

    __tablename__ = "retraining_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    started_ts: Mapped[int] = mapped_column(BigInteger)
    finished_ts: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
