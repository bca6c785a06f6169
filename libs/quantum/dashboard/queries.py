"""Read queries over the journal for the dashboard API.

Lists are paginated with ``limit``/``offset`` and newest first; every filter maps to an
indexed column (``symbol``+``ts``, ``ts``, ``position_id``), so a page stays cheap at
hundreds of thousands of rows. Totals are ``COUNT(*)`` under the same filters so a client can
page without guessing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, case, func, select
from sqlalchemy.orm import InstrumentedAttribute

from quantum.journal.models import (
    FillRow,
    OrderRow,
    PortfolioSnapshotRow,
    PositionSnapshotRow,
    RiskEventRow,
    SignalRow,
    SignalVoteRow,
    TradeRow,
)

TRADE_COLUMNS = ("trade_id", "symbol", "side", "quantity", "entry_price", "exit_price",
                 "entry_ts", "exit_ts", "gross_pnl", "fees", "funding", "net_pnl", "r_multiple",
                 "exit_reason", "holding_seconds", "leverage")
SIGNAL_COLUMNS = ("event_id", "ts", "symbol", "bar_time", "model", "model_version", "direction",
                  "confidence", "prob_long", "prob_short", "price", "atr", "blocked_reason")


@dataclass(frozen=True)
class Page:
    """One page of a list and the number of rows under its filters."""

    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


def _between(statement: Any, column: InstrumentedAttribute[int], since: int | None,
             until: int | None) -> Any:
    if since is not None:
        statement = statement.where(column >= since)
    if until is not None:
        statement = statement.where(column <= until)
    return statement


def _page(engine: Engine, statement: Any, order: Any, columns: tuple[str, ...],
          limit: int, offset: int) -> Page:
    with engine.connect() as connection:
        total = connection.scalar(select(func.count()).select_from(statement.subquery())) or 0
        rows = connection.execute(statement.order_by(*order).limit(limit).offset(offset))
        items = [{name: getattr(row, name) for name in columns} for row in rows]
    return Page(items, int(total), limit, offset)


def trades(engine: Engine, *, symbol: str | None = None, side: str | None = None,
           exit_reason: str | None = None, since: int | None = None, until: int | None = None,
           limit: int = 100, offset: int = 0) -> Page:
    """Closed trades, newest exit first; ``since``/``until`` bound the exit time."""
    statement = select(*(getattr(TradeRow, c) for c in TRADE_COLUMNS), TradeRow.id)
    if symbol:
        statement = statement.where(TradeRow.symbol == symbol)
    if side:
        statement = statement.where(TradeRow.side == side)
    if exit_reason:
        statement = statement.where(TradeRow.exit_reason == exit_reason)
    statement = _between(statement, TradeRow.exit_ts, since, until)
    return _page(engine, statement, (TradeRow.exit_ts.desc(), TradeRow.id.desc()), TRADE_COLUMNS,
                 limit, offset)


def signals(engine: Engine, *, symbol: str | None = None, direction: str | None = None,
            since: int | None = None, until: int | None = None, limit: int = 100,
            offset: int = 0) -> Page:
    """Signals with each member's vote, newest first."""
    statement = select(*(getattr(SignalRow, c) for c in SIGNAL_COLUMNS), SignalRow.id)
    if symbol:
        statement = statement.where(SignalRow.symbol == symbol)
    if direction:
        statement = statement.where(SignalRow.direction == direction)
    statement = _between(statement, SignalRow.ts, since, until)
    page = _page(engine, statement, (SignalRow.ts.desc(), SignalRow.id.desc()), SIGNAL_COLUMNS,
                 limit, offset)
    ids = [item["event_id"] for item in page.items]
    votes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if ids:
        with engine.connect() as connection:
            rows = connection.execute(
                select(SignalVoteRow.signal_event_id, SignalVoteRow.member,
                       SignalVoteRow.direction, SignalVoteRow.confidence)
                .where(SignalVoteRow.signal_event_id.in_(ids)).order_by(SignalVoteRow.id))
            for row in rows:
                votes[row.signal_event_id].append(
                    {"member": row.member, "direction": row.direction,
                     "confidence": row.confidence})
    for item in page.items:
        item["votes"] = votes.get(item["event_id"], [])
    return page


def exit_levels(engine: Engine, position_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Position id → the stop loss and take profits of the fill that opened it."""
    if not position_ids:
        return {}
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as connection:
        rows = connection.execute(
            select(FillRow.position_id, FillRow.stop_loss, FillRow.take_profits,
                   FillRow.client_order_id)
            .where(FillRow.position_id.in_(position_ids), FillRow.stop_loss.is_not(None))
            .order_by(FillRow.id))
        for row in rows:
            out.setdefault(row.position_id, {"stop_loss": row.stop_loss,
                                             "take_profits": row.take_profits or [],
                                             "client_order_id": row.client_order_id})
        missing = [p for p in position_ids if p not in out]
        if missing:  # the plan's levels, through the order that opened the position
            rows = connection.execute(
                select(FillRow.position_id, OrderRow.stop_loss, OrderRow.take_profits,
                       OrderRow.client_order_id)
                .join(OrderRow, OrderRow.client_order_id == FillRow.client_order_id)
                .where(FillRow.position_id.in_(missing), OrderRow.stop_loss.is_not(None)))
            for row in rows:
                out.setdefault(row.position_id, {"stop_loss": row.stop_loss,
                                                 "take_profits": row.take_profits or [],
                                                 "client_order_id": row.client_order_id})
    return out


def latest_positions(engine: Engine) -> tuple[int | None, list[dict[str, Any]]]:
    """The positions of the newest portfolio snapshot in the journal (Redis unavailable)."""
    with engine.connect() as connection:
        last = connection.execute(
            select(PortfolioSnapshotRow.event_id, PortfolioSnapshotRow.ts)
            .order_by(PortfolioSnapshotRow.id.desc()).limit(1)).first()
        if last is None:
            return None, []
        rows = connection.execute(
            select(PositionSnapshotRow)
            .where(PositionSnapshotRow.snapshot_event_id == last.event_id))
        columns = ("position_id", "symbol", "side", "quantity", "entry_price", "mark_price",
                   "leverage", "margin", "liquidation_price", "unrealised_pnl", "opened_ts")
        return last.ts, [{c: getattr(row, c) for c in columns} for row in rows]


def equity_curve(engine: Engine, *, since: int | None = None, until: int | None = None,
                 points: int = 500) -> list[dict[str, Any]]:
    """Equity over time, at most ``points`` points: each the last equity of a time bucket,
    with the bucket's low (so a dip is not averaged away)."""
    with engine.connect() as connection:
        bounds = _between(select(func.min(PortfolioSnapshotRow.ts),
                                 func.max(PortfolioSnapshotRow.ts), func.count()),
                          PortfolioSnapshotRow.ts, since, until)
        first, last, count = connection.execute(bounds).one()
        if not count:
            return []
        bucket = max(1, -(-(int(last) - int(first) + 1) // points))
        # integer division on both backends (BIGINT / INTEGER): the bucket number
        key = (PortfolioSnapshotRow.ts - int(first)).self_group().op("/")(bucket)
        inner = _between(select(func.max(PortfolioSnapshotRow.id).label("id"),
                                func.min(PortfolioSnapshotRow.equity).label("low")),
                         PortfolioSnapshotRow.ts, since, until).group_by(key).subquery()
        rows = connection.execute(
            select(PortfolioSnapshotRow.ts, PortfolioSnapshotRow.equity,
                   PortfolioSnapshotRow.balance, PortfolioSnapshotRow.drawdown, inner.c.low)
            .join(inner, inner.c.id == PortfolioSnapshotRow.id).order_by(PortfolioSnapshotRow.ts))
        return [{"ts": r.ts, "equity": r.equity, "balance": r.balance, "drawdown": r.drawdown,
                 "low": r.low} for r in rows]


def latest_snapshot(engine: Engine) -> dict[str, Any] | None:
    with engine.connect() as connection:
        row = connection.execute(select(PortfolioSnapshotRow)
                                 .order_by(PortfolioSnapshotRow.id.desc()).limit(1)).first()
        if row is None:
            return None
        max_drawdown = connection.scalar(select(func.max(PortfolioSnapshotRow.drawdown))) or 0.0
    snapshot = row
    return {"ts": snapshot.ts, "equity": snapshot.equity, "balance": snapshot.balance,
            "peak_equity": snapshot.peak_equity, "drawdown": snapshot.drawdown,
            "max_drawdown": float(max_drawdown), "gross_exposure": snapshot.gross_exposure,
            "net_exposure": snapshot.net_exposure, "open_positions": snapshot.open_positions}


def counts(engine: Engine) -> dict[str, int]:
    """How many trades and portfolio snapshots the journal holds: the highest row id, one
    index lookup each (the journal only appends), since the page asks every second."""
    with engine.connect() as connection:
        trades_count = connection.scalar(select(func.max(TradeRow.id))) or 0
        snapshots = connection.scalar(select(func.max(PortfolioSnapshotRow.id))) or 0
    return {"trades": int(trades_count), "snapshots": int(snapshots)}


def recent_risk_events(engine: Engine, limit: int = 10) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(RiskEventRow).order_by(RiskEventRow.id.desc()).limit(limit))
        return [{"ts": r.ts, "kind": r.kind, "severity": r.severity, "detail": r.detail}
                for r in rows]


def stats(engine: Engine, *, symbol: str | None = None, since: int | None = None,
          until: int | None = None) -> dict[str, Any]:
    """Trade statistics (overall and by symbol) and the journal's maximum drawdown."""
    win = case((TradeRow.net_pnl > 0, 1), else_=0)
    profit = case((TradeRow.net_pnl > 0, TradeRow.net_pnl), else_=0.0)
    loss = case((TradeRow.net_pnl < 0, -TradeRow.net_pnl), else_=0.0)
    statement = select(
        TradeRow.symbol, func.count().label("trades"), func.sum(win).label("wins"),
        func.sum(TradeRow.net_pnl).label("net_pnl"), func.sum(TradeRow.fees).label("fees"),
        func.sum(TradeRow.funding).label("funding"), func.sum(profit).label("profit"),
        func.sum(loss).label("loss"), func.avg(TradeRow.r_multiple).label("average_r"),
        func.max(TradeRow.net_pnl).label("best"), func.min(TradeRow.net_pnl).label("worst"),
    ).group_by(TradeRow.symbol).order_by(TradeRow.symbol)
    if symbol:
        statement = statement.where(TradeRow.symbol == symbol)
    statement = _between(statement, TradeRow.exit_ts, since, until)
    with engine.connect() as connection:
        rows = list(connection.execute(statement))
        max_drawdown = connection.scalar(select(func.max(PortfolioSnapshotRow.drawdown)))
    by_symbol = [_summary(r.trades, r.wins, r.net_pnl, r.fees, r.funding, r.profit, r.loss,
                          r.average_r, r.best, r.worst) | {"symbol": r.symbol} for r in rows]
    total = _summary(
        sum(r.trades for r in rows), sum(r.wins or 0 for r in rows),
        sum(r.net_pnl or 0 for r in rows), sum(r.fees or 0 for r in rows),
        sum(r.funding or 0 for r in rows), sum(r.profit or 0 for r in rows),
        sum(r.loss or 0 for r in rows), _weighted_r(rows),
        max((r.best for r in rows), default=None), min((r.worst for r in rows), default=None))
    return {**total, "max_drawdown": float(max_drawdown or 0.0), "by_symbol": by_symbol}


def summary_of(trades: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of :func:`stats` for trades already in memory (a finished report)."""
    net = [float(t["net_pnl"]) for t in trades]
    known_r = [float(t["r_multiple"]) for t in trades if t.get("r_multiple") is not None]
    return _summary(
        len(trades), sum(1 for x in net if x > 0), sum(net),
        sum(float(t["fees"]) for t in trades), sum(float(t["funding"]) for t in trades),
        sum(x for x in net if x > 0), sum(-x for x in net if x < 0),
        sum(known_r) / len(known_r) if known_r else None,
        max(net, default=None), min(net, default=None))


def _weighted_r(rows: list[Any]) -> float | None:
    known = [(r.average_r, r.trades) for r in rows if r.average_r is not None]
    weight = sum(n for _, n in known)
    return sum(v * n for v, n in known) / weight if weight else None


def _summary(trades_count: int, wins: int | None, net_pnl: float | None, fees: float | None,
             funding: float | None, profit: float | None, loss: float | None,
             average_r: float | None, best: float | None, worst: float | None) -> dict[str, Any]:
    wins = int(wins or 0)
    loss = float(loss or 0.0)
    return {
        "trades": int(trades_count), "wins": wins, "losses": int(trades_count) - wins,
        "win_rate": wins / trades_count if trades_count else 0.0,
        "net_pnl": float(net_pnl or 0.0), "fees": float(fees or 0.0),
        "funding": float(funding or 0.0),
        "profit_factor": float(profit or 0.0) / loss if loss > 0 else None,
        "average_r": float(average_r) if average_r is not None else None,
        "best": float(best) if best is not None else None,
        "worst": float(worst) if worst is not None else None,
    }
