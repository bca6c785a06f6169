"""Figures derived from a replay report: breakdowns, period returns, drawdown, benchmarks.

Everything here is a pure function of the report (and, for the benchmarks, of the same bars
the replay read), so the printed tables, the PNG and the HTML page all show one set of
numbers. The drawdown and Sharpe definitions are the replay's own
(:func:`quantum.replay.report.max_drawdown`, :func:`quantum.replay.report.daily_sharpe`):
a benchmark measured another way would not be a comparison.

A trade's figures are read with defaults (``fees``, ``funding``, ``gross_pnl`` as 0,
the holding time from the timestamps) because older reports carry fewer keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np

from quantum.replay.data import INTERVAL_MS, SymbolData, load_symbol
from quantum.replay.report import daily_sharpe, max_drawdown

Trade = Mapping[str, Any]
Period = Literal["month", "week"]

TOTAL = "TOTAL"
DAY_MS = 86_400_000
WEEKLY_BELOW_DAYS = 60  # shorter ranges are shown by week: a month or two is too coarse
# The paper exchange's defaults (services/execution/config.py), so the benchmark pays
# what the strategy paid; the library may not import a service to read them.
TAKER_FEE = 0.0004
SLIPPAGE_BPS = 2.0


# --- rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SymbolRow:
    """One symbol's closed trades (or all of them, when ``symbol`` is :data:`TOTAL`)."""

    symbol: str
    trades: int
    win_rate: float
    net_pnl: float
    fees: float
    funding: float
    average_hold_hours: float
    best_trade: float
    worst_trade: float


@dataclass(frozen=True)
class ReasonRow:
    """The trades closed for one exit reason; ``share`` of all trades, 0..1."""

    reason: str
    count: int
    share: float
    net_pnl: float
    win_rate: float


@dataclass(frozen=True)
class PeriodRow:
    """One calendar period (UTC): equity at its start and end, return and inner drawdown.

    ``start_equity`` is the previous period's end (the initial balance for the first), so
    the returns chain: the product of ``1 + return_pct / 100`` is the overall return."""

    label: str
    start_ms: int
    start_equity: float
    end_equity: float
    return_pct: float
    max_drawdown: float


@dataclass(frozen=True)
class BenchmarkRow:
    """What a way of holding the same capital over the same bars ended with."""

    name: str
    final_balance: float
    net_return_pct: float
    max_drawdown: float
    sharpe: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> BenchmarkRow:
        """A row read back from a report's ``benchmarks`` list."""
        return cls(
            name=str(row["name"]),
            final_balance=float(row["final_balance"]),
            net_return_pct=float(row["net_return_pct"]),
            max_drawdown=float(row["max_drawdown"]),
            sharpe=float(row["sharpe"]),
        )


# --- trades -------------------------------------------------------------------------------


def holding_hours(trade: Trade) -> float:
    """Hours the trade was open: ``holding_seconds`` when present, else the timestamps."""
    seconds = trade.get("holding_seconds")
    if seconds is None:
        seconds = (int(trade["exit_ts"]) - int(trade["entry_ts"])) / 1000
    return float(seconds) / 3600


def _win_rate(net: Sequence[float]) -> float:
    # A win is a positive net PnL, as the replay report counts it.
    return sum(1 for x in net if x > 0) / len(net) if net else 0.0


def _summarise(symbol: str, trades: Sequence[Trade]) -> SymbolRow:
    net = [float(t["net_pnl"]) for t in trades]
    holds = [holding_hours(t) for t in trades]
    return SymbolRow(
        symbol=symbol,
        trades=len(trades),
        win_rate=_win_rate(net),
        net_pnl=float(sum(net)),
        fees=float(sum(float(t.get("fees", 0.0)) for t in trades)),
        funding=float(sum(float(t.get("funding", 0.0)) for t in trades)),
        average_hold_hours=float(np.mean(holds)) if holds else 0.0,
        best_trade=max(net, default=0.0),
        worst_trade=min(net, default=0.0),
    )


def _group(trades: Iterable[Trade], key: str) -> dict[str, list[Trade]]:
    groups: dict[str, list[Trade]] = {}
    for trade in trades:
        groups.setdefault(str(trade[key]), []).append(trade)
    return groups


def per_symbol(trades: Sequence[Trade]) -> list[SymbolRow]:
    """A row per symbol (by name), then the :data:`TOTAL` row over every trade."""
    groups = _group(trades, "symbol")
    rows = [_summarise(symbol, groups[symbol]) for symbol in sorted(groups)]
    return [*rows, _summarise(TOTAL, trades)]


def exit_reasons(trades: Sequence[Trade]) -> list[ReasonRow]:
    """A row per exit reason, the most frequent first: which exits make or lose money."""
    groups = _group(trades, "exit_reason")
    rows = []
    for reason, group in groups.items():
        net = [float(t["net_pnl"]) for t in group]
        rows.append(
            ReasonRow(
                reason=reason,
                count=len(group),
                share=len(group) / len(trades),
                net_pnl=float(sum(net)),
                win_rate=_win_rate(net),
            )
        )
    return sorted(rows, key=lambda row: (-row.count, row.reason))


# --- equity -------------------------------------------------------------------------------


def report_range(report: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(start_ms, end_ms)`` of the replay; older reports lack them, so they are taken
    from the first and last timestamps of the trades and the equity curve instead."""
    start, end = report.get("start_ms"), report.get("end_ms")
    if start is not None and end is not None:
        return int(start), int(end)
    stamps = [int(ts) for ts, _ in report.get("equity_curve", [])]
    for trade in report.get("trade_list", []):
        stamps.extend((int(trade["entry_ts"]), int(trade["exit_ts"])))
    if not stamps:
        return None
    return int(start) if start is not None else min(stamps), (
        int(end) if end is not None else max(stamps)
    )


def equity_points(report: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The equity curve as arrays, opened at the range start with the initial balance and
    held to the range end, so a chart spans the whole replay and not only its trades."""
    initial = float(report["initial_balance"])
    curve = report.get("equity_curve", [])
    times = [int(ts) for ts, _ in curve]
    values = [float(e) for _, e in curve]
    span = report_range(report)
    if span is not None:
        start, end = span
        if not times or times[0] > start:
            times, values = [start, *times], [initial, *values]
        if times[-1] < end:
            times, values = [*times, end], [*values, values[-1]]
    return np.asarray(times, dtype=np.int64), np.asarray(values, dtype=np.float64)


def drawdown_series(
    equity_curve: Sequence[Sequence[float]], initial_balance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Times (ms) and the fall from the running peak as a share of it, 0..1, at each point.

    The initial balance counts as the first peak, as in the replay's ``max_drawdown``."""
    times = np.asarray([int(ts) for ts, _ in equity_curve], dtype=np.int64)
    equity = np.asarray([float(e) for _, e in equity_curve], dtype=np.float64)
    if equity.size == 0:
        return times, equity
    peak = np.maximum.accumulate(np.maximum(equity, initial_balance))
    drawdown = np.where(peak > 0, (peak - equity) / np.where(peak > 0, peak, 1.0), 0.0)
    return times, drawdown


def period_for(span_ms: int) -> Period:
    """Weeks for a range under :data:`WEEKLY_BELOW_DAYS` days, else months."""
    return "week" if span_ms < WEEKLY_BELOW_DAYS * DAY_MS else "month"


def _period_start(moment: datetime, period: Period) -> datetime:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return day.replace(day=1)
    return day - timedelta(days=day.weekday())  # ISO weeks start on Monday


def _next_period(start: datetime, period: Period) -> datetime:
    if period == "week":
        return start + timedelta(days=7)
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def _period_label(start: datetime, period: Period) -> str:
    if period == "month":
        return start.strftime("%Y-%m")
    year, week, _ = start.isocalendar()
    return f"{year}-W{week:02d}"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _period_row(label: str, start: datetime, opening: float, inner: np.ndarray) -> PeriodRow:
    closing = float(inner[-1]) if inner.size else opening
    worst = max_drawdown([opening, *inner.tolist()])
    change = (closing / opening - 1) * 100 if opening else 0.0
    return PeriodRow(label, _ms(start), opening, closing, change, worst)


def period_returns(
    equity_curve: Sequence[Sequence[float]],
    initial_balance: float,
    period: Period = "month",
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[PeriodRow]:
    """A row per UTC calendar month (``2025-09``) or ISO week (``2025-W36``).

    Every period from the one holding ``start_ms`` (else the first point) to the one
    holding ``end_ms`` (else the last point) is listed, a quiet one with a 0 % return, so
    the rows chain from the initial balance to the last equity."""
    times = np.asarray([int(ts) for ts, _ in equity_curve], dtype=np.int64)
    equity = np.asarray([float(e) for _, e in equity_curve], dtype=np.float64)
    first = start_ms if start_ms is not None else (int(times[0]) if times.size else None)
    last = end_ms if end_ms is not None else (int(times[-1]) if times.size else None)
    if first is None or last is None:
        return []
    rows: list[PeriodRow] = []
    opening = initial_balance
    begin = _period_start(_utc(min(first, last)), period)
    while _ms(begin) <= max(first, last):
        after = _next_period(begin, period)
        lo, hi = np.searchsorted(times, [_ms(begin), _ms(after)], side="left")
        row = _period_row(_period_label(begin, period), begin, opening, equity[lo:hi])
        rows.append(row)
        opening, begin = row.end_equity, after
    return rows


# --- benchmarks ---------------------------------------------------------------------------


def strategy_row(report: Mapping[str, Any]) -> BenchmarkRow:
    """The strategy's own figures from the report, for the comparison table."""
    initial = float(report["initial_balance"])
    final = float(report["final_balance"])
    return BenchmarkRow(
        name="strategy",
        final_balance=final,
        net_return_pct=(final / initial - 1) * 100 if initial else 0.0,
        max_drawdown=float(report.get("max_drawdown", 0.0)),
        sharpe=float(report.get("sharpe", 0.0)),
    )


def always_flat(initial_balance: float) -> BenchmarkRow:
    """Never trading: the floor any strategy must clear after its costs."""
    return BenchmarkRow("always flat", initial_balance, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class _Holding:
    """One symbol's buy-and-hold leg: its value at each bar close and after the sale."""

    close_times: np.ndarray  # ms, the bar close (open + interval - 1), as replay ticks
    values: np.ndarray
    final: float


def _hold_symbol(
    data: SymbolData, allocation: float, interval_ms: int, taker_fee: float, slip: float
) -> _Holding:
    close_times = data.open_time + interval_ms - 1
    if data.open_time.size == 0:  # nothing to buy: the allocation stays cash
        return _Holding(close_times, np.empty(0), allocation)
    opens, closes = data.ohlcv[:, 0], data.ohlcv[:, 3]
    entry_price = float(opens[0]) * (1 + slip)
    quantity = allocation / (entry_price * (1 + taker_fee))  # the fee comes out of it
    # Funding at time T settles on the bar closing at T, as the replay publishes it.
    rates = np.asarray(
        [data.funding.get(int(t) + interval_ms, 0.0) for t in data.open_time], dtype=np.float64
    )
    paid = np.cumsum(quantity * closes * rates)
    values = quantity * closes - paid
    proceeds = quantity * float(closes[-1]) * (1 - slip) * (1 - taker_fee)
    return _Holding(close_times, values, proceeds - float(paid[-1]))


def _portfolio_marks(holdings: Sequence[_Holding], allocation: float) -> tuple[np.ndarray, ...]:
    """Sum of the legs at every bar close of any of them; a leg holds its last value
    between its bars, and its allocation in cash before its first."""
    times = np.unique(np.concatenate([h.close_times for h in holdings]))
    total = np.zeros(times.size)
    for holding in holdings:
        if holding.values.size == 0:
            total += allocation
            continue
        index = np.searchsorted(holding.close_times, times, side="right") - 1
        total += np.where(index >= 0, holding.values[np.maximum(index, 0)], allocation)
    return times, total


def buy_and_hold(
    data: Sequence[SymbolData],
    initial_balance: float,
    *,
    taker_fee: float = TAKER_FEE,
    slippage_bps: float = SLIPPAGE_BPS,
    interval: str = "5m",
) -> BenchmarkRow:
    """Equal weight, bought at each symbol's first open and sold at its last close.

    Each leg gets ``initial_balance / len(data)``, pays slippage and the taker fee on entry
    (the fee out of the allocation, so nothing is borrowed) and on exit, pays a long's
    funding (rate × quantity × that bar's close) and is marked at every bar close."""
    if not data:
        return BenchmarkRow("buy & hold", initial_balance, 0.0, 0.0, 0.0)
    interval_ms = INTERVAL_MS[interval]
    allocation = initial_balance / len(data)
    legs = [
        _hold_symbol(d, allocation, interval_ms, taker_fee, slippage_bps / 10_000) for d in data
    ]
    final = float(sum(leg.final for leg in legs))
    times, marks = _portfolio_marks(legs, allocation)
    if times.size == 0:
        return BenchmarkRow("buy & hold", initial_balance, 0.0, 0.0, 0.0)
    equity = [*marks.tolist(), final]
    stamps = [*times.tolist(), int(times[-1])]  # the sale, at the last close
    return BenchmarkRow(
        name="buy & hold",
        final_balance=final,
        net_return_pct=(final / initial_balance - 1) * 100 if initial_balance else 0.0,
        max_drawdown=max_drawdown([initial_balance, *equity]),
        sharpe=daily_sharpe(stamps, equity, initial_balance),
    )


def load_range(
    data_dir: Path, symbols: Sequence[str], start_ms: int, end_ms: int, interval: str = "5m"
) -> list[SymbolData]:
    """The bars of ``[start_ms, end_ms]`` per symbol: ``end_ms`` is the last bar's close
    time, so the bar closing there is kept."""
    return [
        load_symbol(data_dir, s, start_ms=start_ms, end_ms=end_ms + 1, interval=interval)
        for s in symbols
    ]


def benchmarks(
    data_dir: Path,
    symbols: Sequence[str],
    start_ms: int,
    end_ms: int,
    initial_balance: float,
    taker_fee: float = TAKER_FEE,
    slippage_bps: float = SLIPPAGE_BPS,
) -> list[BenchmarkRow]:
    """Buy-and-hold and always-flat on the bars the replay read, with the replay's costs.

    Put :func:`strategy_row` beside them to compare; it is left out so a report does not
    store its own figures twice."""
    data = load_range(data_dir, symbols, start_ms, end_ms)
    held = buy_and_hold(data, initial_balance, taker_fee=taker_fee, slippage_bps=slippage_bps)
    return [held, always_flat(initial_balance)]
