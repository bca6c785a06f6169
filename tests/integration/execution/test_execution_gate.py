"""execution's last gate before the exchange, and its paper book surviving state loss.

Real Redis, the real runner, the paper venue; the ESS is the real one in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from quantum.app import build_runner, build_service
from quantum.bus.envelope import new_envelope
from quantum.bus.runner import Outbox, Runner, publish
from quantum.contracts.events import (
    ExitPlan,
    HarvestIntent,
    OrderRequest,
    TakeProfit,
    Tick,
)
from quantum.contracts.streams import APPLY_RESULT, DLQ, HARVEST_INTENT, MARKET_TICK
from quantum.registry.fleet import ESS_KEY, EXECUTION_KEY, PORTFOLIO_KEY, service
from quantum.replay.report import payloads
from quantum.risk import ess, fleetstate
from services.execution.config import Settings

PRICES = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}


def now_ms() -> int:
    return int(time.time() * 1000)


def exit_plan(symbol: str, side: str = "LONG") -> ExitPlan:
    price, sign = PRICES[symbol], 1.0 if side == "LONG" else -1.0
    return ExitPlan(profile="DEFAULT", stop_loss=price * (1 - sign * 0.02),
                    take_profits=(TakeProfit(price=price * (1 + sign * 0.02), fraction=0.5),),
                    atr=price * 0.005)


def entry(plan_id: str, symbol: str = "BTCUSDT", *, bar_time: int | None = None,
          plan: ExitPlan | None = None, side: str = "BUY") -> OrderRequest:
    position_side = "LONG" if side == "BUY" else "SHORT"
    return OrderRequest(
        client_order_id="qt-" + plan_id.replace("-", ""), plan_id=plan_id, symbol=symbol,
        side=side, position_side=position_side, quantity=1_000.0 / PRICES[symbol],  # type: ignore[arg-type]
        reference_price=PRICES[symbol], leverage=5, reduce_only=False, reason="entry",
        bar_time=now_ms() - 60_000 if bar_time is None else bar_time,
        exit_plan=plan or exit_plan(symbol, position_side))


def tick(symbol: str, ts: int | None = None) -> Tick:
    price = PRICES[symbol]
    return Tick(symbol=symbol, ts=ts or now_ms(), open=price, high=price * 1.001,
                low=price * 0.999, close=price, source="binance")


def settings(redis_url: str, record_dir: Path, **extra: Any) -> Settings:
    return Settings(redis_url=redis_url, book_record_dir=str(record_dir), block_ms=20,
                    metrics_port=0, **extra)


def make_runner(r: redis.Redis, redis_url: str, record_dir: Path) -> Runner:
    return build_runner("execution", settings(redis_url, record_dir), r,
                        build_service("execution", settings(redis_url, record_dir), r))


def send(r: redis.Redis, payload: Any, stream: Any, key: object) -> None:
    publish(r, [(stream, new_envelope(payload, ts=now_ms(), source="test", key=key))])


def handle(service_obj: Any, event: Any, out: Outbox) -> None:
    """As the runner hands an event over: the service's clock sees its time first."""
    service_obj.clock.observe(event.ts)
    service_obj.handle(event, out)


def results(r: redis.Redis) -> list[dict[str, Any]]:
    return payloads(r, "quantum:stream:execution.result")


def turn_until(runner: Runner, done: Callable[[], bool], turns: int = 200) -> None:
    for _ in range(turns):
        runner.turn()
        if done():
            return
    raise AssertionError("condition not reached")


def outbox() -> Outbox:
    return Outbox(frozenset(s.name for s in service("execution").produces))


def test_an_entry_waiting_when_the_ess_trips_is_refused_while_an_exit_still_fills(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    runner = make_runner(r, redis_url, tmp_path)
    runner.start()
    send(r, entry("plan-btc"), APPLY_RESULT, "btc")
    send(r, tick("BTCUSDT"), MARKET_TICK, "t1")
    turn_until(runner, lambda: any(x["kind"] == "fill" for x in results(r)))
    # An approved entry is queued for execution; the ESS trips before execution reads it.
    send(r, entry("plan-eth", "ETHUSDT"), APPLY_RESULT, "eth")
    ess.trip(r, "drill: drawdown", by="test")
    send(r, HarvestIntent(harvest_id="h-btc-1", position_id="plan-btc", symbol="BTCUSDT",
                          side="LONG", fraction=1.0, price=PRICES["BTCUSDT"], reason="stop_loss",
                          ts=now_ms()), HARVEST_INTENT, "h")
    send(r, tick("ETHUSDT"), MARKET_TICK, "t2")
    turn_until(runner, lambda: bool(payloads(r, "quantum:stream:trade.closed")))
    turn_until(runner, lambda: any(x["symbol"] == "ETHUSDT" for x in results(r)))
    eth = [x for x in results(r) if x["symbol"] == "ETHUSDT"]
    assert [(x["kind"], x["reason"], x["code"]) for x in eth] == [("reject", "ess_tripped", None)]
    assert "drill: drawdown" in eth[0]["message"]
    exit_fill = [x for x in results(r) if x["kind"] == "fill" and x["reduce_only"]]
    assert len(exit_fill) == 1 and exit_fill[0]["reason"] == "stop_loss"
    book = orjson.loads(r.get(EXECUTION_KEY))
    assert book["positions"] == {} and book["pending"] == {}  # nothing left to fill later
    # A copy of the refused order after the reset is a duplicate, not a new order.
    ess.reset(r, "drill over", by="test")
    send(r, entry("plan-eth", "ETHUSDT"), APPLY_RESULT, "eth-again")
    send(r, tick("ETHUSDT", now_ms() + 1), MARKET_TICK, "t3")
    for _ in range(5):
        runner.turn()
    assert len([x for x in results(r) if x["symbol"] == "ETHUSDT"]) == 1
    assert orjson.loads(r.get(EXECUTION_KEY))["positions"] == {}


@pytest.mark.parametrize(("case", "reason"), [
    ("paused", "trading_paused"),
    ("ess_key_missing", None),  # the ESS module decides what a missing key reads as
    ("ess_key_unreadable", None),
    ("stale", "stale_approval"),
    ("stop_on_the_wrong_side", "malformed_plan"),
    ("take_profit_on_the_wrong_side", "malformed_plan"),
    ("sides_disagree", "malformed_plan"),
    ("no_exit_plan", "malformed_plan"),
])
def test_entries_are_refused_with_a_reason(r: redis.Redis, redis_url: str, tmp_path: Path,
                                           case: str, reason: str | None) -> None:
    service_obj = build_service("execution", settings(redis_url, tmp_path), r)
    service_obj.restore()
    order = entry("plan-x")
    if case == "paused":
        ess.pause(r, by="op")
    elif case == "ess_key_missing":
        r.delete(ESS_KEY)
    elif case == "ess_key_unreadable":
        r.set(ESS_KEY, b"\xff not json")
    elif case == "stale":
        order = entry("plan-x", bar_time=now_ms() - 601_000)
    elif case == "stop_on_the_wrong_side":
        order = entry("plan-x", plan=ExitPlan(profile="DEFAULT", stop_loss=61_000.0,
                                              take_profits=()))
    elif case == "take_profit_on_the_wrong_side":
        order = entry("plan-x", plan=ExitPlan(profile="DEFAULT", stop_loss=59_000.0,
                                              take_profits=(TakeProfit(price=59_500.0,
                                                                       fraction=1.0),)))
    elif case == "sides_disagree":
        order = entry("plan-x").model_copy(update={"position_side": "SHORT"})
    elif case == "no_exit_plan":
        order = entry("plan-x").model_copy(update={"exit_plan": None})
    out = outbox()
    service_obj.handle(new_envelope(order, ts=now_ms(), source="test", key="o"), out)
    reports = [e.payload for s, e in out.events if s.name == "execution.result"
               and e.payload.kind != "book"]
    assert [x.kind for x in reports] == ["reject"]
    if reason is not None:
        assert reports[0].reason == reason
    else:  # missing or unreadable: tripped (unknown), never clear
        assert reports[0].reason in ("ess_tripped", "state_unknown")
    assert reports[0].message
    assert service_obj.venue.portfolio().pending_orders == 0


def test_the_freshness_bound_follows_the_event_clock_in_a_replay(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    service_obj = build_service("execution", settings(redis_url, tmp_path, clock="event"), r)
    service_obj.restore()
    bar = 1_756_684_800_000  # 2025-09-01: historical, as every replay is
    out = outbox()
    handle(service_obj, new_envelope(tick("BTCUSDT", bar + 300_000), ts=bar + 300_000,
                                    source="test", key="t"), out)
    handle(service_obj, new_envelope(entry("plan-a", bar_time=bar), ts=bar + 300_000,
                                    source="test", key="a"), out)
    handle(service_obj, new_envelope(tick("ETHUSDT", bar + 1_200_000), ts=bar + 1_200_000,
                                    source="test", key="t2"), out)
    handle(service_obj, new_envelope(entry("plan-b", "ETHUSDT", bar_time=bar),
                                    ts=bar + 1_200_000, source="test", key="b"), out)
    reports = [(e.payload.plan_id, e.payload.kind, e.payload.reason) for s, e in out.events
               if s.name == "execution.result" and e.payload.kind != "book"]
    assert reports == [("plan-a", "ack", "entry"), ("plan-b", "reject", "stale_approval")]


def test_a_plan_dated_in_the_future_is_dead_lettered_with_the_reason(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    good = entry("plan-ok")
    payload = orjson.loads(good.model_dump_json())
    payload["bar_time"] = 4_102_444_800_000  # 2100-01-01
    envelope = new_envelope(good, ts=now_ms(), source="test", key="f")
    from quantum.bus.envelope import encode
    fields = encode(envelope)
    fields["payload"] = orjson.dumps(payload)
    r.xadd(APPLY_RESULT.key, fields)
    runner = make_runner(r, redis_url, tmp_path)
    runner.run(max_idle_turns=3)
    ((_, dead),) = r.xrange(DLQ.key)
    assert b"bar_time" in dead[b"reason"] and b"future" in dead[b"reason"]
    assert [x["kind"] for x in results(r)] == ["book"]  # nothing about the order itself


# --- the paper book's durable record ----------------------------------------------------------


def open_a_position(r: redis.Redis, runner: Runner) -> None:
    runner.start()
    send(r, entry("plan-btc"), APPLY_RESULT, "btc")
    send(r, tick("BTCUSDT"), MARKET_TICK, "t1")
    turn_until(runner, lambda: any(x["kind"] == "fill" for x in results(r)))
    for _ in range(3):
        runner.turn()  # the record follows the commit


def book_report(r: redis.Redis) -> dict[str, Any]:
    (report,) = [x for x in results(r) if x["kind"] == "book"]
    return report


def test_the_paper_book_survives_the_loss_of_its_redis_key(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    first = make_runner(r, redis_url, tmp_path)
    open_a_position(r, first)
    assert book_report(r)["reason"] == "fresh"
    before = orjson.loads(r.get(EXECUTION_KEY))
    assert before["positions"]["BTCUSDT"]["quantity"] > 0
    r.flushdb()  # Redis restarted without persistence
    fleetstate.initialise(r, "pytest")
    second = make_runner(r, redis_url, tmp_path)  # a new process, same record directory
    second.start()
    for _ in range(3):
        second.turn()
    report = book_report(r)
    assert report["reason"] == "rebuilt_from_local_record"
    assert report["book"]["positions"] == ["BTCUSDT"]
    assert second.service.venue.snapshot() == before  # type: ignore[attr-defined]
    assert orjson.loads(r.get(EXECUTION_KEY)) == before
    # The duplicate guard came back too: a copy of the entry is not a second order.
    send(r, entry("plan-btc"), APPLY_RESULT, "copy")
    for _ in range(3):
        second.turn()
    assert [x["kind"] for x in results(r)] == ["book"]


def test_without_state_or_record_a_first_start_is_fresh_and_a_later_one_trips_the_ess(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    first = make_runner(r, redis_url, tmp_path / "host-a")
    open_a_position(r, first)
    assert book_report(r)["reason"] == "fresh" and not ess.status(r).tripped
    # The execution key is lost, and the record with it (another host, a wiped disk), but
    # the streams say the fleet ran before: not a first start.
    r.delete(EXECUTION_KEY)
    lost = build_service("execution", settings(redis_url, tmp_path / "host-b"), r)
    lost.restore()
    state = ess.status(r)
    assert state.tripped and state.reason.startswith("state_lost")
    out = outbox()
    lost.on_idle(out, time.time())
    books = [e.payload for s, e in out.events if s.name == "execution.result"]
    assert [(b.kind, b.reason) for b in books] == [("book", "state_lost")]
    assert r.exists(PORTFOLIO_KEY)


def test_the_record_is_written_only_when_the_book_changes(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    runner = make_runner(r, redis_url, tmp_path)
    open_a_position(r, runner)
    (record,) = tmp_path.glob("execution-paper-*.json")
    written = record.stat().st_mtime_ns
    for i in range(5):  # mark to market only
        send(r, tick("BTCUSDT", now_ms() + 10 + i), MARKET_TICK, f"m{i}")
    for _ in range(8):
        runner.turn()
    assert record.stat().st_mtime_ns == written
    assert list(tmp_path.glob(".*.tmp")) == []
