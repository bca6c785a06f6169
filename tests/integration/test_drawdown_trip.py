"""A drawdown trip replayed on real data: it trips at the right bar and the actions follow."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis

from quantum.contracts.events import PortfolioState
from quantum.replay.orchestrator import ReplayRequest, run_replay
from quantum.replay.report import entries
from quantum.risk import ess
from quantum.risk.evaluators import DrawdownEvaluator
from quantum.risk.policy import RiskPolicy

AGGRESSIVE = (
    ("sizing.risk_per_trade", 0.05),
    ("sizing.max_notional_usd", 60_000.0),
    ("sizing.leverage", 10),
    ("risk.max_position_margin_usd", 10_000.0),
    ("risk.max_gross_exposure", 10.0),
    ("risk.max_net_exposure", 10.0),
    ("risk.max_correlation", 1.0),
    ("risk.daily_drawdown_limit", 0.03),
    ("risk.ess_daily_drawdown", 0.03),
)


def observations(client: redis.Redis) -> list[tuple[str, int, float]]:
    """What the governor judged, in the order it judged it: every portfolio snapshot, and at
    each bar with open positions the equity marked to that bar's mark prices, as execution
    marks them (entry-id order is the order the replay made them in)."""
    snapshots = [
        (eid, PortfolioState.model_validate_json(f[b"payload"]))
        for eid, f in entries(client, "quantum:stream:portfolio.state")
    ]
    marks = {}
    for _, f in entries(client, "quantum:stream:market.tick"):
        t = orjson.loads(f[b"payload"])
        if "symbol" in t:
            marks[(t["symbol"], t["ts"])] = t["mark_price"] or t["close"]
    bars: dict[int, dict[str, tuple[str, float]]] = {}
    for eid, f in entries(client, "quantum:stream:market.klines"):
        k = orjson.loads(f[b"payload"])
        bars.setdefault(k["close_time"], {})[k["symbol"]] = (
            eid,
            marks[(k["symbol"], k["close_time"])],
        )
    merged: list[tuple[tuple[int, int], str, int, float]] = []
    for eid, snap in snapshots:
        merged.append((_key(eid), eid, snap.ts, snap.equity))
    for close_time, by_symbol in bars.items():
        first_id = min(eid for eid, _ in by_symbol.values())
        last = None
        for eid, snap in snapshots:
            if _key(eid) < _key(first_id):
                last = snap
        if last is None or not last.positions:
            continue
        marked = {s: mark for s, (_, mark) in by_symbol.items()}
        equity = last.balance + sum(
            (1 if p.side == "LONG" else -1)
            * p.quantity
            * (marked.get(p.symbol, p.mark_price) - p.entry_price)
            for p in last.positions
        )
        merged.append((_key(first_id), first_id, close_time, equity))
    merged.sort()
    return [(eid, ts, equity) for _, eid, ts, equity in merged]


def _key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def test_drawdown_trips_at_the_right_bar_and_entries_stop(
    redis_url: str,
    sample_dir: Path,
    tmp_path: Path,
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    request = ReplayRequest(
        data_dir=sample_dir,
        symbols=("BTCUSDT", "ETHUSDT"),
        start=datetime(2025, 9, 1, tzinfo=UTC),
        end=datetime(2025, 9, 8, tzinfo=UTC),
        speed=None,
        report_path=tmp_path / "report.json",
        redis_url=redis_url,
        log_dir=tmp_path / "logs",
        policy=AGGRESSIVE,
    )
    run_replay(request)
    state = ess.status(client)
    assert state.tripped and state.evaluator == "drawdown", "the slice must trip the drawdown ESS"

    limits = RiskPolicy(daily_drawdown_limit=0.03, ess_daily_drawdown=0.03)
    evaluator = DrawdownEvaluator()
    expected: tuple[int, str] | None = None
    for _, ts, equity in observations(client):
        snap: Any = PortfolioState(
            ts=ts,
            balance=equity,
            equity=equity,
            unrealised_pnl=0,
            realised_pnl=0,
            fees_paid=0,
            funding_paid=0,
            gross_exposure=0,
            net_exposure=0,
            positions=(),
            pending_orders=0,
        )
        reason = evaluator.observe(snap, limits)
        if reason is not None:
            expected = (ts, reason)
            break
    assert expected is not None
    assert state.tripped_at == expected[0]
    assert state.reason == expected[1]

    events = [orjson.loads(f[b"payload"]) for _, f in entries(client, "quantum:stream:risk.events")]
    assert [e["kind"] for e in events] == ["ess_tripped"]
    orders = [
        orjson.loads(f[b"payload"]) for _, f in entries(client, "quantum:stream:apply.result")
    ]
    assert orders and all(o["bar_time"] < state.tripped_at for o in orders)
    decisions = [
        orjson.loads(f[b"payload"]) for _, f in entries(client, "quantum:stream:risk.decision")
    ]
    after = [d for d in decisions if d["plan"]["bar_time"] > state.tripped_at]
    assert after and all("ess_tripped" in d["reasons"] and not d["approved"] for d in after)
