"""One block backtested through the engine, its figures, and the model-free baselines.

Every strategy figure comes from :func:`quantum.engine.backtest.run_backtest`: the fleet's
own handlers (features, ai-engine, sizing, risk governor, apply-layer, paper execution with
fees, slippage and funding, exit-brain). A block's backtest starts ``WARMUP_BARS`` before
the block so the features are warm at its first bar; no signal exists before the block
(the feature warm-up emits none), so every trade is inside it.

Baselines without a model are computed from the same bars and funding files:

* **flat**: never trades (net 0, Sharpe 0, drawdown 0);
* **buy_and_hold**: equal weight in every symbol at the block's first close, sold at its
  last, paying the taker fee and slippage both ways and the longs' funding at every
  settlement, at leverage 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from quantum.features import PARAMETERS
from quantum.ml.dataset import BAR_MS
from quantum.replay.data import load_symbol
from quantum.replay.report import DAY_MS, daily_sharpe, max_drawdown
from quantum.research.folds import Block
from quantum.risk.costs import CostModel

WARMUP_BARS = PARAMETERS.warmup_bars + 8
INITIAL = 10_000.0


@dataclass(frozen=True)
class Strategy:
    """What a backtest runs: the model (``run_backtest``'s ``model``), settings, policy."""

    name: str
    model: str
    settings: tuple[tuple[str, str], ...] = ()
    policy: tuple[tuple[str, Any], ...] = ()


@dataclass
class Figures:
    """A block's result, the same fields for every strategy and baseline."""

    net_return: float
    sharpe: float
    max_drawdown: float
    trades: int
    fees: float
    funding: float
    turnover: float
    exposure: float
    long_share: float
    short_share: float
    win_rate: float
    daily_returns: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out.pop("daily_returns")
        return out


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def backtest(strategy: Strategy, data_dir: Path, symbols: tuple[str, ...], block: Block,
             processes: int | None = None) -> tuple[Figures, dict[str, Any]]:
    """``strategy`` over ``block`` through the engine; (figures, the engine's report)."""
    from quantum.engine.backtest import BacktestRequest, run_backtest

    request = BacktestRequest(
        data_dir=data_dir, symbols=symbols, start=_dt(block.start_ms - WARMUP_BARS * BAR_MS),
        end=_dt(block.end_ms), report_path=None, model=strategy.model,
        initial_balance=INITIAL, settings=strategy.settings, policy=strategy.policy)
    report = run_backtest(request, processes=processes)
    return figures(report, block, len(symbols)), report


def figures(report: dict[str, Any], block: Block, symbols: int) -> Figures:
    initial = float(report["initial_balance"])
    curve = report["equity_curve"]
    times = [int(t) for t, _ in curve]
    equity = [float(e) for _, e in curve]
    final = equity[-1] if equity else float(report["final_balance"])
    trades = report["trade_list"]
    notional = sum(t["quantity"] * (t["entry_price"] + t["exit_price"]) for t in trades)
    held = sum(t["holding_seconds"] for t in trades) * 1000
    longs = sum(1 for t in trades if t["side"] == "LONG")
    span = max(1, block.end_ms - block.start_ms) * max(1, symbols)
    return Figures(
        net_return=final / initial - 1, sharpe=daily_sharpe(times, equity, initial),
        max_drawdown=max_drawdown([initial, *equity]), trades=len(trades),
        fees=float(report["fees"]), funding=float(report["funding"]),
        turnover=notional / initial, exposure=min(1.0, held / span),
        long_share=longs / len(trades) if trades else 0.0,
        short_share=(len(trades) - longs) / len(trades) if trades else 0.0,
        win_rate=float(report["win_rate"]), daily_returns=_daily(times, equity, initial))


def _daily(times: list[int], equity: list[float], initial: float) -> list[float]:
    if not times:
        return []
    days: dict[int, float] = {}
    for t, e in zip(times, equity, strict=True):
        days[t // DAY_MS] = e
    level, closes = initial, []
    for day in range(min(days), max(days) + 1):
        level = days.get(day, level)
        closes.append(level)
    series = np.asarray([initial, *closes])
    return (np.diff(series) / series[:-1]).tolist()


def flat(block: Block) -> Figures:
    days = max(1, round(block.days))
    return Figures(0.0, 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, [0.0] * days)


def buy_and_hold(data_dir: Path, symbols: tuple[str, ...], block: Block,
                 costs: CostModel | None = None) -> Figures:
    """Equal weight long at the first close of ``block``, out at its last close."""
    costs = costs or CostModel()
    one_way = costs.taker_fee + costs.slippage_bps / 10_000
    weight = INITIAL / len(symbols)
    curves: list[np.ndarray] = []
    times: np.ndarray | None = None
    fees = funding_paid = 0.0
    for symbol in symbols:
        data = load_symbol(data_dir, symbol, start_ms=block.start_ms, end_ms=block.end_ms)
        close = data.ohlcv[:, 3]
        if close.size < 2:
            raise ValueError(f"{symbol}: no bars in {block.iso()}")
        value = weight * (1 - one_way) * close / close[0]
        paid = np.zeros(close.size)
        close_time = data.open_time + BAR_MS
        for when, rate in data.funding.items():
            at = int(np.searchsorted(close_time, when))
            if at < close.size and close_time[at] == when:
                paid[at:] += rate * value[at]
        fees += weight * one_way + value[-1] * one_way
        funding_paid += float(paid[-1])
        curves.append(value - paid)
        times = close_time if times is None or close_time.size < times.size else times
    assert times is not None
    length = min(c.size for c in curves)
    equity = np.sum([c[:length] for c in curves], axis=0)
    equity[-1] -= sum(c[length - 1] for c in curves) * one_way
    stamps = times[:length].tolist()
    values = equity.tolist()
    return Figures(
        net_return=values[-1] / INITIAL - 1, sharpe=daily_sharpe(stamps, values, INITIAL),
        max_drawdown=max_drawdown([INITIAL, *values]), trades=len(symbols), fees=fees,
        funding=-funding_paid, turnover=2.0, exposure=1.0, long_share=1.0, short_share=0.0,
        win_rate=float(np.mean([c[length - 1] * (1 - one_way) > weight for c in curves])),
        daily_returns=_daily(stamps, values, INITIAL))


def total(parts: list[Figures]) -> Figures:
    """Folds chained: returns compound, drawdown is the worst of the chained curve."""
    daily = [r for p in parts for r in p.daily_returns]
    level, peak, worst = 1.0, 1.0, 0.0
    for r in daily:
        level *= 1 + r
        peak = max(peak, level)
        worst = max(worst, 1 - level / peak)
    compound = float(np.prod([1 + p.net_return for p in parts]) - 1)
    array = np.asarray(daily)
    sharpe = (float(array.mean() / array.std(ddof=1) * np.sqrt(365))
              if array.size > 1 and array.std(ddof=1) > 0 else 0.0)
    trades = sum(p.trades for p in parts)
    return Figures(
        net_return=compound, sharpe=sharpe, max_drawdown=worst, trades=trades,
        fees=sum(p.fees for p in parts), funding=sum(p.funding for p in parts),
        turnover=sum(p.turnover for p in parts),
        exposure=float(np.mean([p.exposure for p in parts])) if parts else 0.0,
        long_share=(sum(p.long_share * p.trades for p in parts) / trades) if trades else 0.0,
        short_share=(sum(p.short_share * p.trades for p in parts) / trades) if trades else 0.0,
        win_rate=(sum(p.win_rate * p.trades for p in parts) / trades) if trades else 0.0,
        daily_returns=daily)
