"""The replay report, computed from what the fleet wrote to Redis.

Nothing here re-simulates: trades come from ``trade.closed``, the equity curve from
``portfolio.state``, counts from the streams themselves, latency from stream entry ids.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import redis

from quantum.contracts.streams import (
    APPLY_RESULT,
    CATALOGUE,
    MARKET_KLINES,
    PORTFOLIO_STATE,
    TRADE_CLOSED,
    UNIVERSE_UPDATED,
)

DAY_MS = 86_400_000


def entries(
    client: redis.Redis, key: str, batch: int = 5000
) -> Iterator[tuple[str, dict[bytes, bytes]]]:
    """Every entry of a stream, oldest first, paged."""
    start = "-"
    while True:
        page = client.xrange(key, min=start, max="+", count=batch)
        if not page:
            return
        for entry_id, fields in page:
            yield entry_id.decode(), fields
        last = page[-1][0].decode()
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"
        if len(page) < batch:
            return


def payloads(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    return [orjson.loads(fields[b"payload"]) for _, fields in entries(client, key)]


def stream_counts(client: redis.Redis) -> dict[str, int]:
    """Entries ever added per catalogue stream (``XINFO STREAM`` entries-added, else XLEN)."""
    counts: dict[str, int] = {}
    for name, spec in CATALOGUE.items():
        if not client.exists(spec.key):
            counts[name] = 0
            continue
        info = client.xinfo_stream(spec.key)
        added = info.get("entries-added")
        counts[name] = int(added) if added is not None else int(info["length"])
    return counts


def max_drawdown(equity: list[float]) -> float:
    """Largest peak-to-trough fall as a share of the peak."""
    peak, worst = -math.inf, 0.0
    for value in equity:
        peak = max(peak, value)
        if peak > 0:
            worst = max(worst, (peak - value) / peak)
    return worst


def daily_sharpe(times_ms: list[int], equity: list[float], initial: float) -> float:
    """Annualised Sharpe of daily equity returns (365 days, zero risk-free rate)."""
    if not times_ms:
        return 0.0
    days: dict[int, float] = {}
    for t, e in zip(times_ms, equity, strict=True):
        days[t // DAY_MS] = e
    first, last = min(days), max(days)
    closes, level = [], initial
    for day in range(first, last + 1):
        level = days.get(day, level)
        closes.append(level)
    series = np.asarray([initial, *closes])
    returns = np.diff(series) / series[:-1]
    if returns.size < 2 or float(np.std(returns, ddof=1)) == 0.0:
        return 0.0
    return float(np.mean(returns) / np.std(returns, ddof=1) * math.sqrt(365))


def kline_to_order_latency(client: redis.Redis) -> dict[str, float]:
    """Milliseconds from a kline's publication to the entry order it caused (trace ids)."""
    orders = {
        fields[b"trace_id"]: int(entry_id.split("-")[0])
        for entry_id, fields in entries(client, APPLY_RESULT.key)
    }
    if not orders:
        return {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0}
    samples = []
    for entry_id, fields in entries(client, MARKET_KLINES.key):
        order_ms = orders.get(fields[b"id"])
        if order_ms is not None:
            samples.append(order_ms - int(entry_id.split("-")[0]))
    values = np.asarray(samples, dtype=float)
    return {
        "count": int(values.size),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
    }


def build(
    client: redis.Redis,
    *,
    initial_balance: float,
    klines: int,
    wall_seconds: float,
    replay_state: dict[str, Any],
) -> dict[str, Any]:
    """The report of a fleet replay, from what the fleet wrote to Redis."""
    raw = client.get("quantum:state:portfolio")
    return assemble(
        trades=payloads(client, TRADE_CLOSED.key),
        states=payloads(client, PORTFOLIO_STATE.key),
        final=orjson.loads(raw) if raw else None,
        events=stream_counts(client),
        latency=kline_to_order_latency(client),
        initial_balance=initial_balance,
        klines=klines,
        wall_seconds=wall_seconds,
        run={k: v for k, v in replay_state.items() if k != "status"},
        universe=payloads(client, UNIVERSE_UPDATED.key),
    )


TRADE_FIELDS = (
    "trade_id", "symbol", "side", "quantity", "entry_price", "exit_price", "entry_ts",
    "exit_ts", "gross_pnl", "fees", "funding", "net_pnl", "exit_reason", "holding_seconds",
)


def assemble(
    *,
    trades: list[dict[str, Any]],
    states: list[dict[str, Any]],
    final: dict[str, Any] | None,
    events: dict[str, int],
    latency: dict[str, float] | None,
    initial_balance: float,
    klines: int,
    wall_seconds: float,
    run: dict[str, Any],
    universe: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One report shape for both engines (fleet replay and in-process backtest): closed
    trades as published on ``trade.closed``, the equity curve from ``portfolio.state``,
    the universe's changes from ``universe.updated``."""
    final = final or {"balance": initial_balance, "positions": []}
    net = [t["net_pnl"] for t in trades]
    wins = sum(1 for x in net if x > 0)
    times = [s["ts"] for s in states]
    equity = [s["equity"] for s in states]
    return {
        "initial_balance": initial_balance,
        "final_balance": final["balance"],
        "open_positions_at_end": len(final.get("positions", [])),
        "trades": len(trades),
        "win_rate": wins / len(trades) if trades else 0.0,
        "net_pnl": float(sum(net)),
        "gross_pnl": float(sum(t["gross_pnl"] for t in trades)),
        "fees": float(sum(t["fees"] for t in trades)),
        "funding": float(sum(t["funding"] for t in trades)),
        "max_drawdown": max_drawdown([initial_balance, *equity]),
        "sharpe": daily_sharpe(times, equity, initial_balance),
        "exit_reasons": _count(t["exit_reason"] for t in trades),
        "events": events,
        "klines": klines,
        "wall_seconds": wall_seconds,
        "klines_per_second": klines / wall_seconds if wall_seconds > 0 else 0.0,
        "kline_to_order_latency": latency,
        "replay": run,
        "trade_list": [{k: t[k] for k in TRADE_FIELDS} for t in trades],
        "equity_curve": [[t, e] for t, e in zip(times, equity, strict=True)],
        "universe_changes": universe_changes(universe or []),
    }


def universe_changes(updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What entered and left the universe when (``universe.updated`` payloads, in order),
    with the reasons of each symbol that left."""
    out = []
    for update in updates:
        if not update["entered"] and not update["left"]:
            continue
        why = {m["symbol"]: list(m["reasons"]) for m in update["members"]}
        out.append({"ts": update["ts"], "entered": list(update["entered"]),
                    "left": list(update["left"]), "size": len(update["symbols"]),
                    "policy_version": update["policy_version"],
                    "left_because": {s: why.get(s, []) for s in update["left"]}})
    return out


def _count(values: Iterator[str] | Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return dict(sorted(out.items()))
