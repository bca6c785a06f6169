"""Risk against a real Redis: policy store, governor limits, emergency stop, fail-closed."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from quantum.bus.envelope import Envelope, derive_id, new_envelope
from quantum.bus.runner import Outbox, publish
from quantum.contracts.events import (
    Plan,
    RiskDecision,
    Tick,
)
from quantum.contracts.streams import APPLY_RESULT, RISK_DECISION, RISK_EVENTS
from quantum.ctl.main import app
from quantum.exchange.venues.paper.execution import PaperExchange
from quantum.exits.profiles import exit_plan
from quantum.observability.heartbeat import heartbeat_key
from quantum.registry.fleet import APPLY_REFUSAL_KEY, PORTFOLIO_KEY
from quantum.risk import ess, fleetstate, policy
from services.apply_layer.service import entry_order

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
PRICES = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0, "SOLUSDT": 150.0, "XRPUSDT": 0.6}
BAR_MS = 300_000


def make_plan(
    symbol: str,
    side: str,
    notional: float,
    leverage: int,
    confidence: float,
    bar_time: int,
    price: float,
) -> Plan:
    atr = price * 0.005
    plan_id = derive_id("test", symbol, bar_time, side, notional)
    return Plan(
        plan_id=plan_id,
        intent_id=plan_id,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=notional / price,
        reference_price=price,
        notional=notional,
        leverage=leverage,
        confidence=confidence,
        size_multiplier=1.0,
        bar_time=bar_time,
        exit_plan=exit_plan("DEFAULT", side, price, 1.5 * atr, atr),
    )  # type: ignore[arg-type]


def envelope(payload: Any, ts: int) -> Envelope[Any]:
    return new_envelope(payload, ts=ts, source="test", key=ts)


def write_portfolio(client: redis.Redis, exchange: PaperExchange) -> None:
    client.set(PORTFOLIO_KEY, exchange.portfolio().model_dump_json())


@pytest.fixture
def governor(on_bus: Callable[..., Any]) -> Callable[[], Any]:
    """A new risk-governor on the test Redis (a "restart" each call), on the event clock."""
    return lambda: on_bus("risk-governor", clock="event")


@pytest.fixture
def apply_layer(on_bus: Callable[..., Any]) -> Callable[[], Any]:
    return lambda: on_bus("apply-layer", clock="event")


# --- policy store -------------------------------------------------------------------------


def test_policy_write_is_validated_whole_and_audited(r: redis.Redis) -> None:
    assert policy.load(r).version == 0
    v1 = policy.write(r, {"risk.max_leverage": 8, "sizing.leverage": 4}, by="op", reason="tighten")
    assert v1.version == 1 and v1.risk.max_leverage == 8
    for bad in (
        {"risk.max_leverage": "x"},
        {"risk.max_leverage": 500},
        {"risk.bogus": 1},
        {"sizing.leverage": 9},
        {"risk.max_leverage": 3, "sizing.min_notional_usd": -1},
    ):
        with pytest.raises(policy.PolicyError):
            policy.write(r, bad, by="op", reason="bad")
    assert policy.load(r) == v1  # nothing half-applied
    policy.write(r, {"risk.max_leverage": 12}, by="op", reason="loosen")
    back = policy.rollback(r, 1, by="op", reason="undo")
    assert back.version == 3 and back.risk.max_leverage == 8
    assert [e["version"] for e in policy.history(r)] == [3, 2, 1]
    with pytest.raises(policy.PolicyError, match="a reason is required"):
        policy.write(r, {}, by="op", reason=" ")


def test_services_pick_up_a_new_policy_without_restart(r: redis.Redis, governor: Any) -> None:
    exchange = PaperExchange(10_000.0, 0.0004, 2.0, 0.004)
    write_portfolio(r, exchange)
    service = governor()
    plan = make_plan("BTCUSDT", "LONG", 1_000.0, 5, 0.8, BAR_MS, PRICES["BTCUSDT"])
    policy.write(r, {"risk.min_confidence": 0.9}, by="op", reason="stricter")
    out = service.deliver(envelope(plan, BAR_MS))
    decision = out.events[-1][1].payload
    assert decision.reasons == ("min_confidence",) and decision.policy_version == 1


# --- the property: nothing gets past the limits -------------------------------------------

action = st.one_of(
    st.tuples(
        st.just("plan"),
        st.sampled_from(SYMBOLS),
        st.sampled_from(["LONG", "SHORT"]),
        st.floats(50, 20_000),
        st.integers(1, 30),
        st.floats(0.5, 1.0),
    ),
    st.tuples(st.just("move"), st.sampled_from(SYMBOLS), st.floats(-0.08, 0.08)),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(actions=st.lists(action, min_size=1, max_size=40))
def test_no_sequence_exceeds_the_policy(
    r: redis.Redis, governor: Any, actions: list[tuple[Any, ...]]
) -> None:
    r.flushdb()
    fleetstate.initialise(r, "pytest")  # a clear ESS: the limits, not the stop, must hold
    limits = policy.write(
        r,
        {
            "risk.max_concurrent_positions": 3,
            "risk.max_leverage": 10,
            "risk.max_position_margin_usd": 800.0,
            "risk.max_gross_exposure": 1.5,
            "risk.max_net_exposure": 1.0,
            "risk.cooldown_seconds": 0,
            "sizing.leverage": 5,
        },
        by="test",
        reason="property",
    ).risk
    exchange = PaperExchange(10_000.0, 0.0004, 2.0, 0.004)
    prices = dict(PRICES)
    service = governor()
    now = 0
    for item in actions:
        now += BAR_MS
        if item[0] == "move":
            _, symbol, change = item
            prices[symbol] *= 1 + change
        else:
            _, symbol, side, notional, leverage, confidence = item
            write_portfolio(r, exchange)
            before = exchange.portfolio()
            out = service.deliver(
                envelope(
                    make_plan(symbol, side, notional, leverage, confidence, now, prices[symbol]),
                    now,
                )
            )
            decision: RiskDecision = out.events[-1][1].payload
            if decision.approved:
                plan = decision.plan
                assert plan.leverage <= limits.max_leverage
                assert plan.notional / plan.leverage <= limits.max_position_margin_usd
                assert plan.confidence >= limits.min_confidence
                assert (
                    before.gross_exposure + plan.notional
                ) / before.equity <= limits.max_gross_exposure + 1e-9
                order = entry_order(plan)
                exchange.submit(order, now)
        for symbol in SYMBOLS:  # every symbol trades a bar: fills and marks
            price = prices[symbol]
            exchange.on_tick(
                Tick(
                    symbol=symbol,
                    ts=now + 1,
                    open=price,
                    high=price,
                    low=price,
                    close=price,
                    source="replay",
                )
            )
        state = exchange.portfolio()
        assert len(state.positions) <= limits.max_concurrent_positions
        assert len({p.symbol for p in state.positions}) == len(state.positions)
        assert all(p.leverage <= limits.max_leverage for p in state.positions)
        assert all(p.margin <= limits.max_position_margin_usd * 1.001 for p in state.positions)


# --- fail closed --------------------------------------------------------------------------


def approved_decision(bar_time: int) -> RiskDecision:
    plan = make_plan("ETHUSDT", "LONG", 500.0, 5, 0.8, bar_time, PRICES["ETHUSDT"])
    return RiskDecision(
        plan_id=plan.plan_id, approved=True, reasons=(), plan=plan, policy_version=0
    )


def test_governor_down_means_no_orders_and_status_says_why(
    r: redis.Redis, redis_url: str, apply_layer: Any
) -> None:
    layer = apply_layer()
    out = layer.deliver(envelope(approved_decision(BAR_MS), BAR_MS))
    assert [e for s, e in out.events if s == APPLY_RESULT] == []
    assert orjson.loads(out.state[APPLY_REFUSAL_KEY])["reason"] == "governor_down"
    r.set(APPLY_REFUSAL_KEY, out.state[APPLY_REFUSAL_KEY])
    result = CliRunner().invoke(app, ["status", "--json", "--redis-url", redis_url])
    trading = orjson.loads(result.stdout)["trading"]
    assert trading["entries_allowed"] is False
    assert any("risk-governor has no heartbeat" in reason for reason in trading["blocked_by"])
    assert trading["last_refusal"]["reason"] == "governor_down"
    r.set(heartbeat_key("risk-governor"), b"{}", ex=10)  # the governor is back: orders flow
    out = layer.deliver(envelope(approved_decision(2 * BAR_MS), 2 * BAR_MS))
    assert len([e for s, e in out.events if s == APPLY_RESULT]) == 1


def test_tripped_ess_survives_restarts_and_only_the_operator_resets_it(
    r: redis.Redis, redis_url: str, governor: Any, apply_layer: Any
) -> None:
    exchange = PaperExchange(10_000.0, 0.0004, 2.0, 0.004)
    write_portfolio(r, exchange)
    r.set(heartbeat_key("risk-governor"), b"{}", ex=60)
    first = governor()
    out = Outbox(first.runner.sub.produces)
    ess.trip(r, "drill", by="test")
    first.service.on_idle(out, now=1e9)
    first.service.on_batch_end(out)
    first.commit(out)
    announced = [e.payload for s, e in out.events if s == RISK_EVENTS]
    assert announced and announced[0].kind == "ess_tripped"
    # Every service "restarts": new objects restored from Redis.
    second, layer = governor(), apply_layer()
    plan = make_plan("BTCUSDT", "LONG", 1_000.0, 5, 0.8, BAR_MS, PRICES["BTCUSDT"])
    out = second.deliver(envelope(plan, BAR_MS))
    assert out.events[-1][1].payload.reasons == ("ess_tripped",)
    second.service.on_idle(out, now=2e9)
    assert len([e for s, e in out.events if s == RISK_EVENTS]) == 0  # announced once only
    out = layer.deliver(envelope(approved_decision(BAR_MS), BAR_MS))
    assert [e for s, e in out.events if s == APPLY_RESULT] == []
    assert ess.status(r).tripped
    result = CliRunner().invoke(app, ["ess", "reset", "--reason", "", "--redis-url", redis_url])
    assert result.exit_code == 2 and ess.status(r).tripped
    result = CliRunner().invoke(
        app, ["ess", "reset", "--reason", "drill over", "--redis-url", redis_url]
    )
    assert result.exit_code == 0 and not ess.status(r).tripped
    assert [a["action"] for a in ess.audit(r)] == ["reset", "trip"]


def test_consecutive_execution_errors_trip_the_ess(r: redis.Redis, governor: Any) -> None:
    from quantum.contracts.events import ExecutionReport

    exchange = PaperExchange(10_000.0, 0.0004, 2.0, 0.004)
    write_portfolio(r, exchange)
    service = governor()
    reports = []
    for i in range(7):
        report = ExecutionReport(
            kind="reject",
            client_order_id=f"c{i}",
            plan_id=f"p{i}",
            symbol="BTCUSDT",
            side="BUY",
            position_side="LONG",
            position_id=None,
            quantity=0,
            price=0,
            fee=0,
            reduce_only=False,
            reason="entry",
            code=-2019,
            message="Margin is insufficient.",
            ts=i,
        )
        reports.append(envelope(report, i))
    out = service.deliver(*reports)  # one batch
    assert not ess.status(r).tripped  # a trip is committed with the batch that caused it
    service.commit(out)
    state = ess.status(r)
    assert state.tripped and state.evaluator == "execution_errors"
    assert "6 consecutive execution errors" in state.reason


def test_non_finite_intent_is_dead_lettered_with_its_reason(r: redis.Redis) -> None:
    from quantum.app import ports_for
    from quantum.bus.runner import Runner, RunnerConfig, Subscription
    from quantum.contracts.events import EVENT_TYPES
    from quantum.contracts.streams import APPLY_PLAN, DLQ, TRADE_INTENT
    from services.intent_bridge.config import Settings as IntentSettings
    from services.intent_bridge.service import IntentBridge

    r.xadd(
        TRADE_INTENT.key,
        {
            "type": "trade.intent",
            "version": "1",
            "id": "x",
            "ts": "1",
            "source": "test",
            "trace_id": "x",
            "causation_id": "",
            "payload": b'{"intent_id":"x","symbol":"BTCUSDT","side":"LONG","confidence":0.8,'
            b'"price":NaN,"atr":1.0,"bar_time":1,"model_version":"t"}',
        },
    )
    runner = Runner(
        r,
        IntentBridge(ports_for(IntentSettings(), r)),
        Subscription(
            "intent-bridge", "intent-bridge", (TRADE_INTENT,), frozenset({APPLY_PLAN.name})
        ),
        EVENT_TYPES,
        RunnerConfig(block_ms=20),
    )
    runner.run(max_idle_turns=2)
    ((_, fields),) = r.xrange(DLQ.key)
    assert b"price" in fields[b"reason"]
    assert not r.exists(APPLY_PLAN.key) or r.xlen(APPLY_PLAN.key) == 0


def test_unknown_symbol_is_rejected_by_the_universe(r: redis.Redis, governor: Any) -> None:
    exchange = PaperExchange(10_000.0, 0.0004, 2.0, 0.004)
    write_portfolio(r, exchange)
    policy.write(r, {"universe.symbols": ["BTCUSDT"]}, by="op", reason="universe")
    out = governor().deliver(
        envelope(make_plan("DOGEUSDT", "LONG", 500.0, 5, 0.8, BAR_MS, 0.2), BAR_MS))
    assert out.events[-1][1].payload.reasons == ("symbol_not_in_universe",)
    assert math.isfinite(out.events[-1][1].payload.plan.notional)
    publish(r, [(RISK_DECISION, out.events[-1][1])])


def test_the_universe_services_selection_is_the_universe(r: redis.Redis, governor: Any) -> None:
    """Once the universe service has published, a symbol outside its selection is rejected,
    inside the policy's list too; an empty selection trades nothing."""
    from quantum.registry.fleet import UNIVERSE_KEY

    exchange = PaperExchange(10_000.0, 0.0004, 2.0, 0.004)
    write_portfolio(r, exchange)
    policy.write(r, {"universe.symbols": ["BTCUSDT", "ETHUSDT"]}, by="op", reason="universe")
    r.set(UNIVERSE_KEY, orjson.dumps({"ts": 1, "symbols": ["ETHUSDT", "SOLUSDT"],
                                      "policy_version": 1, "source": "bars"}))
    g = governor()
    btc = g.deliver(envelope(make_plan("BTCUSDT", "LONG", 500.0, 5, 0.8, BAR_MS, 60_000.0),
                             BAR_MS))
    assert btc.events[-1][1].payload.reasons == ("symbol_not_in_universe",)
    eth = g.deliver(envelope(make_plan("ETHUSDT", "LONG", 500.0, 5, 0.8, BAR_MS, 3_000.0),
                             BAR_MS))
    assert "symbol_not_in_universe" not in eth.events[-1][1].payload.reasons
    r.set(UNIVERSE_KEY, orjson.dumps({"ts": 2, "symbols": [], "policy_version": 1,
                                      "source": "bars"}))
    none = g.deliver(envelope(make_plan("ETHUSDT", "SHORT", 500.0, 5, 0.8, 2 * BAR_MS,
                                        3_000.0), 2 * BAR_MS))
    assert "symbol_not_in_universe" in none.events[-1][1].payload.reasons
