"""Maker entries through execution on the real runner and a real Redis.

A resting post-only entry is part of the book: it survives execution being restarted (a
new process restoring its state key), fills at its limit with the maker fee once a tick
trades through it, and is cancelled when the emergency stop blocks new risk. The Binance
venue refuses maker entries, loudly and fail-closed, against the local Binance stand-in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from quantum.app import build_runner, build_service
from quantum.bus.envelope import new_envelope
from quantum.bus.runner import Runner, publish
from quantum.contracts.events import (
    ExecutionReport,
    ExitPlan,
    OrderRequest,
    PortfolioState,
    TakeProfit,
    Tick,
)
from quantum.contracts.streams import APPLY_RESULT, MARKET_TICK
from quantum.registry.fleet import EXECUTION_KEY, PORTFOLIO_KEY
from quantum.replay.report import payloads
from quantum.risk import ess
from quantum.standin.binance_rest import FuturesVenue
from services.execution.config import Settings

PRICE = 60_000.0
LIMIT = 59_880.0  # 20 bps under the signal price


def now_ms() -> int:
    return int(time.time() * 1000)


def maker_entry(plan_id: str, *, limit: float = LIMIT, bar_time: int | None = None,
                ttl_ms: int = 900_000) -> OrderRequest:
    bar = now_ms() - 1_000 if bar_time is None else bar_time
    return OrderRequest(
        client_order_id="qt-" + plan_id.replace("-", ""), plan_id=plan_id, symbol="BTCUSDT",
        side="BUY", position_side="LONG", quantity=0.02, reference_price=PRICE, leverage=5,
        reduce_only=False, reason="entry", bar_time=bar,
        exit_plan=ExitPlan(profile="DEFAULT", stop_loss=58_800.0,
                           take_profits=(TakeProfit(price=61_200.0, fraction=1.0),)),
        order_type="LIMIT", limit_price=limit, time_in_force="GTX", expires_at=bar + ttl_ms)


def tick(ts: int, low: float, close: float = PRICE) -> Tick:
    return Tick(symbol="BTCUSDT", ts=ts, open=close, high=close * 1.001, low=low, close=close,
                source="binance")


def send(r: redis.Redis, payload: Any, stream: Any, key: str) -> None:
    publish(r, [(stream, new_envelope(payload, ts=now_ms(), source="test", key=key))])


def make_runner(r: redis.Redis, redis_url: str, record_dir: Path, **extra: Any) -> Runner:
    settings = Settings(redis_url=redis_url, book_record_dir=str(record_dir), block_ms=20,
                        metrics_port=0, **extra)
    return build_runner("execution", settings, r, build_service("execution", settings, r))


def results(r: redis.Redis) -> list[dict[str, Any]]:
    return [x for x in payloads(r, "quantum:stream:execution.result") if x["kind"] != "book"]


def turn_until(runner: Runner, done: Callable[[], bool], turns: int = 200) -> None:
    for _ in range(turns):
        runner.turn()
        if done():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def portfolio(r: redis.Redis) -> PortfolioState:
    return PortfolioState.model_validate_json(r.get(PORTFOLIO_KEY))


def test_a_resting_entry_survives_a_restart_and_fills_at_its_limit_with_the_maker_fee(
        r: redis.Redis, redis_url: str, tmp_path: Path, on_bus: Callable[..., Any]) -> None:
    first = make_runner(r, redis_url, tmp_path)
    first.start()
    start = now_ms()
    send(r, tick(start - 500, low=PRICE * 0.999), MARKET_TICK, "t0")
    send(r, maker_entry("plan-maker"), APPLY_RESULT, "o")
    turn_until(first, lambda: [x["kind"] for x in results(r)] == ["ack"])
    send(r, tick(start + 1, low=LIMIT), MARKET_TICK, "t1")  # a touch of the limit: no fill
    venue: Any = first.service.venue  # type: ignore[attr-defined]
    turn_until(first, lambda: venue.last_tick_ts.get("BTCUSDT") == start + 1)
    assert [x["kind"] for x in results(r)] == ["ack"]
    assert portfolio(r).pending_plans == ("plan-maker",) and portfolio(r).pending_orders == 1
    resting = orjson.loads(r.get(EXECUTION_KEY))["pending"]["BTCUSDT"]
    assert resting[0]["order"]["order_type"] == "LIMIT"
    first.service.close()  # type: ignore[attr-defined]

    second = make_runner(r, redis_url, tmp_path)  # a new process: the book from Redis
    second.start()
    assert second.service.venue.resting_entries  # type: ignore[attr-defined]
    send(r, tick(start + 2, low=LIMIT - 10.0), MARKET_TICK, "t2")  # traded through
    turn_until(second, lambda: any(x["kind"] == "fill" for x in results(r)))
    (fill,) = [x for x in results(r) if x["kind"] == "fill"]
    assert fill["price"] == LIMIT and fill["fee"] == pytest.approx(0.02 * LIMIT * 0.0002)
    assert fill["exit_plan"] is not None  # what the exit-brain starts following
    assert portfolio(r).pending_plans == () and len(portfolio(r).positions) == 1
    assert portfolio(r).fees_paid == pytest.approx(fill["fee"])
    # The exit-brain follows the position from its fill, not from the ack of the order.
    brain = on_bus("exit-brain")
    ack, _ = [ExecutionReport.model_validate(x) for x in results(r)]
    brain.deliver(new_envelope(ack, ts=ack.ts, source="execution", key="ack"))
    assert brain.service.positions == {}
    brain.deliver(new_envelope(ExecutionReport.model_validate(fill), ts=fill["ts"],
                               source="execution", key="fill"))
    assert brain.service.positions["BTCUSDT"].entry_price == LIMIT


def test_a_resting_entry_is_cancelled_once_the_emergency_stop_trips(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    runner = make_runner(r, redis_url, tmp_path)
    runner.start()
    start = now_ms()
    send(r, tick(start - 500, low=PRICE * 0.999), MARKET_TICK, "t0")
    send(r, maker_entry("plan-maker"), APPLY_RESULT, "o")
    turn_until(runner, lambda: [x["kind"] for x in results(r)] == ["ack"])
    ess.trip(r, "drill: drawdown", by="test")
    send(r, tick(start + 1, low=LIMIT - 50.0), MARKET_TICK, "t1")  # would have filled
    turn_until(runner, lambda: len(results(r)) == 2)
    assert [(x["kind"], x["reason"]) for x in results(r)] == [("ack", "entry"),
                                                               ("cancel", "ess_tripped")]
    assert portfolio(r).positions == () and portfolio(r).pending_plans == ()


def test_an_unfilled_entry_expires_and_releases_the_book(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    runner = make_runner(r, redis_url, tmp_path)
    runner.start()
    start = now_ms()
    send(r, tick(start - 500, low=PRICE * 0.999), MARKET_TICK, "t0")
    send(r, maker_entry("plan-maker", ttl_ms=2_000, bar_time=start - 1_000), APPLY_RESULT, "o")
    turn_until(runner, lambda: [x["kind"] for x in results(r)] == ["ack"])
    send(r, tick(start + 1_000, low=LIMIT + 1.0), MARKET_TICK, "t1")  # the expiry tick
    turn_until(runner, lambda: len(results(r)) == 2)
    assert [(x["kind"], x["reason"]) for x in results(r)] == [("ack", "entry"),
                                                               ("cancel", "expired")]
    assert portfolio(r).pending_orders == 0 and portfolio(r).fees_paid == 0.0


@pytest.fixture
def binance() -> Iterator[FuturesVenue]:
    with FuturesVenue(prices={"BTCUSDT": PRICE}) as running:
        yield running


def test_the_binance_venue_refuses_a_maker_entry_without_sending_it(
        binance: FuturesVenue, r: redis.Redis, redis_url: str) -> None:
    settings = Settings(
        redis_url=redis_url, exchange="binance", binance_api_key=binance.account.api_key,
        binance_api_secret=binance.account.api_secret, binance_rest_url=binance.rest_url,
        binance_ws_url=binance.ws_url, binance_poll_interval_s=0.2, block_ms=50,
        metrics_port=0, binance_timeout_s=2)
    runner = build_runner("execution", settings, r, build_service("execution", settings, r))
    runner.start()
    live: Any = runner.service.venue  # type: ignore[attr-defined]
    turn_until(runner, lambda: not live.rebuild_pending)
    send(r, maker_entry("plan-maker"), APPLY_RESULT, "o")
    turn_until(runner, lambda: bool(results(r)))
    for _ in range(5):
        runner.turn()
    (refused,) = results(r)
    assert (refused["kind"], refused["reason"], refused["code"]) == (
        "reject", "order_type_unsupported", None)
    assert "sizing.entry_order=taker" in refused["message"]
    assert not [m for m, path in binance.snapshot()["requests"]
                if m == "POST" and path == "/fapi/v1/order"]
    runner.service.close()  # type: ignore[attr-defined]
