"""The journal's first schema: events ledger, signals and votes, decisions, risk, orders,
fills, trades, portfolio and position snapshots, retraining jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

EVENT_ID = 36


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True)


def _event_id() -> sa.Column:
    return sa.Column("event_id", sa.String(EVENT_ID), nullable=False, unique=True)


def _float(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Float(), nullable=nullable)


def _str(name: str, length: int, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _big(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "journal_events",
        sa.Column("event_id", sa.String(EVENT_ID), primary_key=True),
        _str("event_type", 40), _big("ts"), _str("trace_id", EVENT_ID),
    )
    op.create_table(
        "signals",
        _id(), _event_id(), _big("ts"), _str("symbol", 20), _big("bar_time"),
        _str("model", 64), _str("model_version", 64), _str("direction", 5),
        _float("confidence"), _float("prob_long"), _float("prob_short"), _float("price"),
        _float("atr"), _str("blocked_reason", 200, nullable=True),
    )
    op.create_index("ix_signals_ts", "signals", ["ts"])
    op.create_index("ix_signals_symbol_ts", "signals", ["symbol", "ts"])
    op.create_table(
        "signal_votes",
        _id(),
        sa.Column("signal_event_id", sa.String(EVENT_ID),
                  sa.ForeignKey("signals.event_id", ondelete="CASCADE"), nullable=False),
        _str("member", 64), _str("direction", 5), _float("confidence"),
    )
    op.create_index("ix_signal_votes_signal_event_id", "signal_votes", ["signal_event_id"])
    op.create_table(
        "decisions",
        _id(), _event_id(), _big("ts"), _str("symbol", 20), _big("bar_time"),
        _str("direction", 5), _float("confidence"), _str("intent_id", 64),
        _str("model_version", 64),
    )
    op.create_index("ix_decisions_ts", "decisions", ["ts"])
    op.create_index("ix_decisions_intent_id", "decisions", ["intent_id"])
    op.create_table(
        "risk_decisions",
        _id(), _event_id(), _big("ts"), _str("plan_id", 64), _str("intent_id", 64),
        _str("symbol", 20), _str("side", 5), sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False), _float("quantity"), _float("notional"),
        sa.Column("leverage", sa.Integer(), nullable=False), _float("confidence"),
        _str("exit_profile", 40), _float("stop_loss"),
        sa.Column("take_profits", sa.JSON(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_risk_decisions_ts", "risk_decisions", ["ts"])
    op.create_index("ix_risk_decisions_plan_id", "risk_decisions", ["plan_id"])
    op.create_table(
        "risk_events",
        _id(), _event_id(), _big("ts"), _str("kind", 64), _str("severity", 10),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("ix_risk_events_ts", "risk_events", ["ts"])
    op.create_table(
        "risk_states",
        _id(), _event_id(), _big("ts"),
        sa.Column("ess_tripped", sa.Boolean(), nullable=False),
        sa.Column("trading_paused", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
    )
    op.create_index("ix_risk_states_ts", "risk_states", ["ts"])
    op.create_table(
        "orders",
        _id(), sa.Column("client_order_id", sa.String(64), nullable=False, unique=True),
        _event_id(), _str("plan_id", 64), _big("created_ts"), _big("updated_ts"),
        _str("symbol", 20), _str("side", 4), _str("position_side", 5), _float("quantity"),
        _float("reference_price"), sa.Column("leverage", sa.Integer(), nullable=False),
        sa.Column("reduce_only", sa.Boolean(), nullable=False), _str("reason", 64),
        _str("status", 16), _float("filled_quantity"), _float("average_price"), _float("fees"),
        sa.Column("reject_code", sa.Integer(), nullable=True),
        sa.Column("reject_message", sa.Text(), nullable=True),
        _str("exit_profile", 40, nullable=True), _float("stop_loss", nullable=True),
        sa.Column("take_profits", sa.JSON(), nullable=True),
    )
    op.create_index("ix_orders_plan_id", "orders", ["plan_id"])
    op.create_index("ix_orders_created_ts", "orders", ["created_ts"])
    op.create_table(
        "fills",
        _id(), _event_id(), _big("ts"), _str("client_order_id", 64), _str("plan_id", 64),
        _str("position_id", 64, nullable=True), _str("symbol", 20), _str("side", 4),
        _str("position_side", 5), _float("quantity"), _float("price"), _float("fee"),
        sa.Column("reduce_only", sa.Boolean(), nullable=False), _str("reason", 64),
        _float("position_quantity"), _float("liquidation_price"),
        _float("stop_loss", nullable=True), sa.Column("take_profits", sa.JSON(), nullable=True),
    )
    op.create_index("ix_fills_ts", "fills", ["ts"])
    op.create_index("ix_fills_client_order_id", "fills", ["client_order_id"])
    op.create_index("ix_fills_position_id", "fills", ["position_id"])
    op.create_table(
        "trades",
        _id(), _event_id(), sa.Column("trade_id", sa.String(64), nullable=False, unique=True),
        _str("symbol", 20), _str("side", 5), _float("quantity"), _float("entry_price"),
        _float("exit_price"), _big("entry_ts"), _big("exit_ts"), _float("gross_pnl"),
        _float("fees"), _float("funding"), _float("net_pnl"), _float("r_multiple", nullable=True),
        _str("exit_reason", 64), _float("holding_seconds"),
        sa.Column("leverage", sa.Integer(), nullable=False),
    )
    op.create_index("ix_trades_exit_ts", "trades", ["exit_ts"])
    op.create_index("ix_trades_symbol_exit_ts", "trades", ["symbol", "exit_ts"])
    op.create_table(
        "portfolio_snapshots",
        _id(), _event_id(), _big("ts"), _float("balance"), _float("equity"),
        _float("unrealised_pnl"), _float("realised_pnl"), _float("fees_paid"),
        _float("funding_paid"), _float("gross_exposure"), _float("net_exposure"),
        sa.Column("open_positions", sa.Integer(), nullable=False),
        sa.Column("pending_orders", sa.Integer(), nullable=False),
        _float("peak_equity"), _float("drawdown"),
    )
    op.create_index("ix_portfolio_snapshots_ts", "portfolio_snapshots", ["ts"])
    op.create_table(
        "position_snapshots",
        _id(), _str("snapshot_event_id", EVENT_ID), _big("ts"), _str("position_id", 64),
        _str("symbol", 20), _str("side", 5), _float("quantity"), _float("entry_price"),
        _float("mark_price"), sa.Column("leverage", sa.Integer(), nullable=False),
        _float("margin"), _float("liquidation_price"), _float("unrealised_pnl"),
        _big("opened_ts"),
    )
    op.create_index("ix_position_snapshots_snapshot_event_id", "position_snapshots",
                    ["snapshot_event_id"])
    op.create_index("ix_position_snapshots_ts", "position_snapshots", ["ts"])
    op.create_index("ix_position_snapshots_position_id", "position_snapshots", ["position_id"])
    op.create_table(
        "retraining_jobs",
        _id(), sa.Column("job_id", sa.String(64), nullable=False, unique=True),
        _str("model", 64), _str("status", 16), _big("started_ts"),
        _big("finished_ts", nullable=True), sa.Column("detail", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    for table in ("retraining_jobs", "position_snapshots", "portfolio_snapshots", "trades",
                  "fills", "orders", "risk_states", "risk_events", "risk_decisions",
                  "decisions", "signal_votes", "signals", "journal_events"):
        op.drop_table(table)
