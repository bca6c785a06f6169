"""Maker entries and the risk layers, on a real Redis with the real governor and apply-layer.

A resting maker entry is exposure the portfolio does not show as a position: the governor
keeps it reserved (one position per symbol, slots, exposure) for as long as execution's
portfolio lists it as pending, and releases it once it expires unfilled. A post-only
refusal (-5022) is the maker rule working, not an exchange error: it never trips the ESS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from quantum.bus.envelope import Envelope, derive_id, new_envelope
from quantum.contracts.events import (
    POST_ONLY_REJECTED,
    ExecutionReport,
    OrderRequest,
    Plan,
    RiskDecision,
    Tick,
)
from quantum.contracts.streams import APPLY_RESULT
from quantum.exchange.venues.paper.config import PaperConfig
from quantum.exchange.venues.paper.execution import PaperExchange
from quantum.exits.profiles import exit_plan
from quantum.observability.heartbeat import heartbeat_key
from quantum.registry.fleet import PORTFOLIO_KEY
from quantum.risk import ess, policy

BAR_MS = 300_000
PRICE = 60_000.0
START = 1_756_684_799_999  # the close of a real bar: 2025-08-31 23:59:59.999


def plan_at(bar_time: int) -> Plan:
    atr = PRICE * 0.005
    plan_id = derive_id("test", "BTCUSDT", bar_time)
    return Plan(plan_id=plan_id, intent_id=plan_id, symbol="BTCUSDT", side="LONG",
                quantity=1_000.0 / PRICE, reference_price=PRICE, notional=1_000.0, leverage=5,
                confidence=0.8, size_multiplier=1.0, bar_time=bar_time,
                exit_plan=exit_plan("DEFAULT", "LONG", PRICE, 1.5 * atr, atr))


def envelope(payload: Any, ts: int) -> Envelope[Any]:
    return new_envelope(payload, ts=ts, source="test", key=ts)


def bar(book: PaperExchange, r: redis.Redis, ts: int, low: float = PRICE * 0.9995) -> None:
    """A bar that does not trade through a limit 5 bps under the price."""
    book.on_tick(Tick(symbol="BTCUSDT", ts=ts, open=PRICE, high=PRICE * 1.001, low=low,
                      close=PRICE, source="replay"))
    r.set(PORTFOLIO_KEY, book.portfolio().model_dump_json())


@pytest.fixture
def maker_policy(r: redis.Redis) -> None:
    policy.write(r, {"sizing.entry_order": "maker", "sizing.maker_offset_bps": 5.0,
                     "sizing.maker_ttl_bars": 3, "risk.cooldown_seconds": 0},
                 by="test", reason="maker entries")


def test_a_resting_entry_stays_reserved_until_it_expires(
        r: redis.Redis, on_bus: Callable[..., Any], maker_policy: None) -> None:
    book = PaperExchange.fresh(PaperConfig())
    bar(book, r, START)
    governor = on_bus("risk-governor", clock="event")
    layer = on_bus("apply-layer", clock="event")
    r.set(heartbeat_key("risk-governor"), b"{}", ex=60)

    first = governor.deliver(envelope(plan_at(START), START))
    decision: RiskDecision = first.events[-1][1].payload
    assert decision.approved
    governor.commit(first)
    released = layer.deliver(envelope(decision, START))
    (order,) = [e.payload for s, e in released.events if s == APPLY_RESULT]
    assert isinstance(order, OrderRequest)
    assert (order.order_type, order.time_in_force) == ("LIMIT", "GTX")
    assert order.limit_price == pytest.approx(PRICE * (1 - 5 / 10_000))
    assert order.expires_at == START + 3 * BAR_MS
    assert [x.kind for x in book.submit(order, START)] == ["ack"]

    # The next bars do not trade through: the entry rests, and its symbol stays taken.
    for k in (1, 2):
        bar(book, r, START + k * BAR_MS)
        out = governor.deliver(envelope(plan_at(START + k * BAR_MS), START + k * BAR_MS))
        later: RiskDecision = out.events[-1][1].payload
        assert not later.approved and "position_open" in later.reasons
        governor.commit(out)

    # Unfilled at its expiry it is cancelled, and the reservation is released with it.
    bar(book, r, START + 3 * BAR_MS)
    assert book.portfolio().pending_plans == ()
    out = governor.deliver(envelope(plan_at(START + 4 * BAR_MS), START + 4 * BAR_MS))
    assert out.events[-1][1].payload.approved


def test_post_only_refusals_are_not_execution_errors(
        r: redis.Redis, on_bus: Callable[..., Any]) -> None:
    governor = on_bus("risk-governor", clock="event")
    r.set(PORTFOLIO_KEY, PaperExchange.fresh(PaperConfig()).portfolio().model_dump_json())
    refusals = [envelope(ExecutionReport(
        kind="reject", client_order_id=f"c{i}", plan_id=f"p{i}", symbol="BTCUSDT", side="BUY",
        position_side="LONG", position_id=None, quantity=0, price=0, fee=0,
        reduce_only=False, reason="entry", code=POST_ONLY_REJECTED,
        message="Post Only order will be rejected.", ts=START + i), START + i)
        for i in range(10)]
    governor.commit(governor.deliver(*refusals))
    assert not ess.status(r).tripped
