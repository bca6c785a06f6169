"""The operator's books over the journal: closed trades, open positions, profit grouped by
symbol, exit reason, day or week, and the latest balance.

Plain reads, portable across SQLite and PostgreSQL: filters go to indexed columns
(``exit_ts``, ``symbol``+``exit_ts``), grouping by calendar day or ISO week is done here in
UTC so both backends agree to the cent. ``quantumctl trades|profit|balance`` and the daily
summary message read through these functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, select

from quantum.journal.models import PortfolioSnapshotRow, PositionSnapshotRow, TradeRow

GroupBy = Literal["symbol", "exit_reason", "day", "week"]
GROUPINGS: tuple[str, ...] = ("symbol", "exit_reason", "day", "week")
TRADE_FIELDS = ("trade_id", "symbol", "side", "quantity", "entry_price", "exit_price",
                "entry_ts", "exit_ts", "gross_pnl", "fees", "funding", "net_pnl",
                "r_multiple", "exit_reason", "holding_seconds", "leverage")
POSITION_FIELDS = ("position_id", "symbol", "side", "quantity", "entry_price", "mark_price",
                   "leverage", "margin", "liquidation_price", "unrealised_pnl", "opened_ts")
BALANCE_FIELDS = ("ts", "balance", "equity", "unrealised_pnl", "realised_pnl", "fees_paid",
                  "funding_paid", "gross_exposure", "net_exposure", "open_positions",
                  "pending_orders", "peak_equity", "drawdown")


def closed_trades(engine: Engine, *, symbol: str | None = None, since_ms: int | None = None,
                  until_ms: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Closed trades, newest exit first, bounded by exit time."""
    statement = select(*(getattr(TradeRow, name) for name in TRADE_FIELDS))
    if symbol:
        statement = statement.where(TradeRow.symbol == symbol)
    if since_ms is not None:
        statement = statement.where(TradeRow.exit_ts >= since_ms)
    if until_ms is not None:
        statement = statement.where(TradeRow.exit_ts < until_ms)
    statement = statement.order_by(TradeRow.exit_ts.desc(), TradeRow.id.desc())
    if limit is not None:
        statement = statement.limit(limit)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(statement)]


def open_positions(engine: Engine, *, symbol: str | None = None) -> list[dict[str, Any]]:
    """The positions the newest portfolio snapshot held (newest opened first)."""
    with engine.connect() as connection:
        latest = connection.execute(
            select(PortfolioSnapshotRow.event_id)
            .order_by(PortfolioSnapshotRow.ts.desc(), PortfolioSnapshotRow.id.desc())
            .limit(1)).first()
        if latest is None:
            return []
        statement = select(*(getattr(PositionSnapshotRow, name) for name in POSITION_FIELDS))
        statement = statement.where(PositionSnapshotRow.snapshot_event_id == latest[0])
        if symbol:
            statement = statement.where(PositionSnapshotRow.symbol == symbol)
        rows = connection.execute(statement.order_by(PositionSnapshotRow.opened_ts.desc()))
        return [dict(row._mapping) for row in rows]


def balance(engine: Engine) -> dict[str, Any] | None:
    """The newest portfolio snapshot (balance, equity, fees, drawdown …), or None."""
    statement = (select(*(getattr(PortfolioSnapshotRow, name) for name in BALANCE_FIELDS))
                 .order_by(PortfolioSnapshotRow.ts.desc(), PortfolioSnapshotRow.id.desc())
                 .limit(1))
    with engine.connect() as connection:
        row = connection.execute(statement).first()
    return dict(row._mapping) if row is not None else None


def group_key(trade: dict[str, Any], by: str) -> str:
    if by in ("symbol", "exit_reason"):
        return str(trade[by])
    moment = datetime.fromtimestamp(trade["exit_ts"] / 1000, UTC)
    if by == "day":
        return moment.date().isoformat()
    if by == "week":
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"
    raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUPINGS)}")


def summarise(trades: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Count, wins, win rate, net/gross PnL, fees, funding, profit factor of ``trades``."""
    rows = list(trades)
    wins = sum(1 for t in rows if t["net_pnl"] > 0)
    profit = sum(t["net_pnl"] for t in rows if t["net_pnl"] > 0)
    loss = -sum(t["net_pnl"] for t in rows if t["net_pnl"] < 0)
    return {
        "trades": len(rows), "wins": wins, "losses": len(rows) - wins,
        "win_rate": wins / len(rows) if rows else 0.0,
        "net_pnl": sum(t["net_pnl"] for t in rows),
        "gross_pnl": sum(t["gross_pnl"] for t in rows),
        "fees": sum(t["fees"] for t in rows), "funding": sum(t["funding"] for t in rows),
        "profit_factor": profit / loss if loss else None,
    }


def profit(engine: Engine, by: str = "symbol", *, symbol: str | None = None,
           since_ms: int | None = None) -> dict[str, Any]:
    """Profit grouped ``by`` symbol, exit reason, UTC day or ISO week, with the total."""
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUPINGS)}")
    trades = closed_trades(engine, symbol=symbol, since_ms=since_ms)
    groups: dict[str, list[dict[str, Any]]] = {}
    for trade in trades:
        groups.setdefault(group_key(trade, by), []).append(trade)
    rows = [{by: key, **summarise(members)} for key, members in groups.items()]
    if by in ("day", "week"):
        rows.sort(key=lambda row: row[by])
    else:
        rows.sort(key=lambda row: (-row["net_pnl"], row[by]))
    return {"by": by, "groups": rows, "total": summarise(trades)}


def supervision(engine: Engine, *, limit: int = 50,
                since_ms: int | None = None) -> list[dict[str, Any]]:
    """The model supervisor's findings (``ai.supervisor``), newest first."""
    from quantum.journal.models import SupervisionRow

    statement = select(SupervisionRow.ts, SupervisionRow.kind, SupervisionRow.severity,
                       SupervisionRow.detail, SupervisionRow.model_version, SupervisionRow.data)
    if since_ms is not None:
        statement = statement.where(SupervisionRow.ts >= since_ms)
    statement = statement.order_by(SupervisionRow.ts.desc(), SupervisionRow.id.desc())
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(statement.limit(limit))]
