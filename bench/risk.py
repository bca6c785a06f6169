"""Risk-governor decisions: decisions/s and the latency of one decision with 20 open positions.

The real :class:`~services.risk_governor.service.RiskGovernor` decides plans against a
portfolio of 20 open positions (in its state key, as execution writes it), 5 symbols of
return history for the correlation check, and a policy that allows 30 positions so every
check runs to the end. Each decision includes what the service does per plan: read the
policy version, the portfolio and the emergency stop from Redis (3 round trips), run every
check, and build the decision event. ``handle_p99_ms`` is one decision measured alone;
``decisions_per_second`` is a tight loop. Target in the issue: p99 < 5 ms.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import redis

from bench._redis import private_redis
from quantum.app import build_service
from quantum.bus.envelope import derive_id, new_envelope
from quantum.bus.runner import Outbox
from quantum.contracts.events import Kline, Plan, PortfolioState, PositionView
from quantum.exits.profiles import exit_plan
from quantum.registry.fleet import PORTFOLIO_KEY
from quantum.risk import policy
from services.risk_governor.config import Settings

SYMBOLS = [f"SYM{i:02d}USDT" for i in range(25)]


def portfolio(open_positions: int) -> PortfolioState:
    views = tuple(
        PositionView(position_id=f"p{i}", symbol=SYMBOLS[i], side="LONG" if i % 2 else "SHORT",
                     quantity=1.0, entry_price=100.0, mark_price=101.0, leverage=5, margin=20.0,
                     liquidation_price=80.0, unrealised_pnl=1.0, opened_ts=0)
        for i in range(open_positions)
    )
    return PortfolioState(ts=0, balance=100_000.0, equity=100_020.0, unrealised_pnl=20.0,
                          realised_pnl=0.0, fees_paid=0.0, funding_paid=0.0,
                          gross_exposure=2020.0, net_exposure=0.0, positions=views,
                          pending_orders=0)


def plan(i: int, bar_time: int) -> Plan:
    symbol = SYMBOLS[20 + i % 5]
    plan_id = derive_id("bench", i)
    return Plan(plan_id=plan_id, intent_id=plan_id, symbol=symbol, side="LONG", quantity=1.0,
                reference_price=100.0, notional=100.0, leverage=5, confidence=0.8,
                size_multiplier=1.0, bar_time=bar_time,
                exit_plan=exit_plan("DEFAULT", "LONG", 100.0, 1.0, 0.7))


def run(quick: bool) -> dict[str, Any]:
    decisions = 500 if quick else 3000
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        policy.write(client, {"risk.max_concurrent_positions": 30, "risk.cooldown_seconds": 0,
                              "risk.max_correlation": 1.0}, by="bench", reason="bench")
        client.set(PORTFOLIO_KEY, portfolio(20).model_dump_json())
        governor: Any = build_service("risk-governor", Settings(clock="event"), client)
        governor.restore()
        rng = random.Random(7)
        price = dict.fromkeys(SYMBOLS, 100.0)
        for t in range(300):  # return history for the correlation check
            for symbol in SYMBOLS:
                price[symbol] *= math.exp(rng.gauss(0, 0.002))
                kline = Kline(symbol=symbol, interval="5m", open_time=t * 300_000,
                              close_time=t * 300_000 + 299_999, open=price[symbol],
                              high=price[symbol], low=price[symbol], close=price[symbol],
                              volume=1.0, source="replay")
                governor._observe_bar(kline)
        produces = frozenset({"risk.decision", "risk.events"})
        samples: list[float] = []
        approved = 0
        started = time.perf_counter()
        for i in range(decisions):
            bar_time = 300 * 300_000 + i
            event = new_envelope(plan(i, bar_time), ts=bar_time, source="bench", key=i)
            out = Outbox(produces)
            t0 = time.perf_counter()
            governor.clock.observe(event.ts)  # as the runner does before each event
            governor.handle(event, out)
            samples.append(time.perf_counter() - t0)
            approved += out.events[-1][1].payload.approved
            governor.pending.clear()  # each plan judged against the same 20 positions
        elapsed = time.perf_counter() - started
        samples.sort()
        client.close()
    return {
        "open_positions": 20,
        "decisions": decisions,
        "approved": approved,
        "decisions_per_second": decisions / elapsed,
        "handle_p50_ms": samples[len(samples) // 2] * 1000,
        "handle_p99_ms": samples[int(len(samples) * 0.99)] * 1000,
        "target_p99_ms": 5.0,
        "meets_target": samples[int(len(samples) * 0.99)] * 1000 < 5.0,
    }
