"""execution on Binance futures, against the local venue stand-in and a real Redis.

The real python-binance client talks to :class:`FuturesVenue` over loopback; the service
runs under the real runner (in-process, or as its own process for the kill test).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from quantum.app import build_runner, build_service
from quantum.bus.envelope import new_envelope
from quantum.bus.runner import Outbox, Runner, publish
from quantum.config import ConfigError, load
from quantum.contracts.events import ExitPlan, HarvestIntent, OrderRequest, TakeProfit
from quantum.contracts.streams import APPLY_RESULT, HARVEST_INTENT
from quantum.exchange.venues.binance.config import LiveConfig
from quantum.exchange.venues.binance.execution import LiveExchange
from quantum.exchange.venues.binance.http import BinanceFutures
from quantum.registry.fleet import EXECUTION_KEY
from quantum.replay.report import payloads
from quantum.standin.binance_rest import FuturesVenue
from services.execution.config import Settings

pytestmark = pytest.mark.usefixtures("only_this_services_keys")


ROOT = Path(__file__).resolve().parents[3]
PLAN = ExitPlan(profile="DEFAULT", stop_loss=58_000.0,
                take_profits=(TakeProfit(price=61_000.0, fraction=0.4),
                              TakeProfit(price=62_000.0, fraction=0.4)), atr=300.0)


@pytest.fixture
def venue() -> Iterator[FuturesVenue]:
    with FuturesVenue(prices={"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}) as running:
        yield running


def settings_env(venue: FuturesVenue, redis_url: str) -> dict[str, str]:
    return {
        "QT_REDIS_URL": redis_url, "QT_EXCHANGE": "binance",
        "QT_BINANCE_API_KEY": venue.account.api_key,
        "QT_BINANCE_API_SECRET": venue.account.api_secret,
        "QT_BINANCE_REST_URL": venue.rest_url, "QT_BINANCE_WS_URL": venue.ws_url,
        "QT_BINANCE_POLL_INTERVAL_S": "0.2", "QT_BLOCK_MS": "50", "QT_METRICS_PORT": "0",
        "QT_BINANCE_TIMEOUT_S": "2",
    }


def make_runner(venue: FuturesVenue, r: redis.Redis, redis_url: str, **extra: Any) -> Runner:
    env = settings_env(venue, redis_url)
    values = {k.removeprefix("QT_").lower(): v for k, v in env.items()}
    values.update(extra)
    settings = Settings(**values)
    return build_runner("execution", settings, r, build_service("execution", settings, r))


def order(plan_id: str = "plan-0001", symbol: str = "BTCUSDT", quantity: float = 0.0123456,
          price: float = 60_000.0, plan: ExitPlan = PLAN) -> OrderRequest:
    """A freshly approved entry (its bar is now: execution refuses stale approvals)."""
    return OrderRequest(client_order_id="qt-" + plan_id.replace("-", ""), plan_id=plan_id,
                        symbol=symbol, side="BUY", position_side="LONG", quantity=quantity,
                        reference_price=price, leverage=5, reduce_only=False, reason="entry",
                        bar_time=int(time.time() * 1000), exit_plan=plan)


def send(r: redis.Redis, payload: Any, stream: Any = APPLY_RESULT, key: str = "k") -> None:
    publish(r, [(stream, new_envelope(payload, ts=int(time.time() * 1000), source="test",
                                      key=key))])


def turn_until(runner: Runner, done: Callable[[], bool], turns: int = 200) -> None:
    for _ in range(turns):
        runner.turn()
        if done():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def reports(r: redis.Redis) -> list[dict[str, Any]]:
    """The order reports on ``execution.result`` (without ``book`` reports)."""
    return [x for x in payloads(r, "quantum:stream:execution.result") if x["kind"] != "book"]


def book_reports(r: redis.Redis) -> list[dict[str, Any]]:
    return [x for x in payloads(r, "quantum:stream:execution.result") if x["kind"] == "book"]


def test_an_instance_whose_lease_lapsed_mid_turn_sends_nothing(
        venue: FuturesVenue, r: redis.Redis, redis_url: str) -> None:
    """The venue asks the service's standing (its lease) before each request it signs: an
    idle hook that outlived the lease sends nothing more; the intent waits as new."""
    runner = make_runner(venue, r, redis_url, protective_orders=False)
    runner.start()
    assert runner.active and runner.service.standing()
    send(r, order())
    turn_until(runner, lambda: bool(runner.service.venue.intents))  # recorded, not sent yet
    assert runner.lease is not None
    runner.lease._valid_until = 0.0  # as after a stall longer than the lease's TTL
    assert not runner.service.standing()
    runner.service.on_idle(Outbox(runner.sub.produces), time.time())
    assert venue.snapshot()["order_log"] == []
    assert [i.status for i in runner.service.venue.intents.values()] == ["new"]
    turn_until(runner, lambda: any(x["kind"] == "fill" for x in reports(r)))  # renewed
    assert [o["clientOrderId"] for o in venue.snapshot()["order_log"]] == ["qt-plan0001"]


def test_an_entry_is_recorded_sent_once_filled_and_protected(
        venue: FuturesVenue, r: redis.Redis, redis_url: str) -> None:
    runner = make_runner(venue, r, redis_url)
    runner.start()
    send(r, order())
    turn_until(runner, lambda: any(x["kind"] == "fill" for x in reports(r)))
    turn_until(runner, lambda: len(venue.snapshot()["algo"]) == 2)
    kinds = [x["kind"] for x in reports(r)]
    assert kinds == ["ack", "fill"]
    # No state key at start: the (empty) book was rebuilt from the exchange and said so.
    assert [x["reason"] for x in book_reports(r)] == ["rebuilt_from_venue"]
    fill = reports(r)[1]
    assert fill["quantity"] == pytest.approx(0.012)  # rounded down to the 0.001 step
    snapshot = venue.snapshot()
    assert snapshot["positions"] == {"BTCUSDT": pytest.approx(0.012)}
    assert [o["clientOrderId"] for o in snapshot["order_log"]] == ["qt-plan0001"]
    triggers = sorted(float(o["triggerPrice"]) for o in snapshot["algo"])
    assert triggers == [58_000.0, 62_000.0]
    state = orjson.loads(r.get(EXECUTION_KEY))
    assert state["intents"]["qt-plan0001"]["status"] == "done"
    runner.service.close()  # type: ignore[attr-defined]


def test_partial_fills_add_up_and_the_exit_closes_the_trade(
        venue: FuturesVenue, r: redis.Redis, redis_url: str) -> None:
    venue.partial_fills(0.5)
    runner = make_runner(venue, r, redis_url)
    runner.start()
    send(r, order(quantity=0.02))
    turn_until(runner, lambda: sum(x["kind"] == "fill" for x in reports(r)) == 1)
    venue.partial_fills(None)
    assert venue.complete_partial_fills() == 1
    turn_until(runner, lambda: sum(x["kind"] == "fill" for x in reports(r)) == 2)
    fills = [x for x in reports(r) if x["kind"] == "fill"]
    assert [f["quantity"] for f in fills] == pytest.approx([0.01, 0.01])
    assert fills[-1]["position_quantity"] == pytest.approx(0.02)
    venue.set_price("BTCUSDT", 61_000.0)
    send(r, HarvestIntent(harvest_id="h-1", position_id="plan-0001", symbol="BTCUSDT",
                          side="LONG", fraction=1.0, price=61_000.0, reason="take_profit_1",
                          ts=2), HARVEST_INTENT, key="h")
    turn_until(runner, lambda: bool(payloads(r, "quantum:stream:trade.closed")))
    trade = payloads(r, "quantum:stream:trade.closed")[0]
    assert trade["quantity"] == pytest.approx(0.02)
    assert trade["gross_pnl"] == pytest.approx(0.02 * 1000.0)
    assert trade["net_pnl"] < trade["gross_pnl"]  # fees counted
    assert venue.snapshot()["positions"] == {}
    runner.service.close()  # type: ignore[attr-defined]


def test_a_margin_reject_carries_the_exchange_code(
        venue: FuturesVenue, r: redis.Redis, redis_url: str) -> None:
    runner = make_runner(venue, r, redis_url)
    runner.start()
    send(r, order(quantity=50.0))  # 3 M notional at 5x: far beyond 10 k of margin
    turn_until(runner, lambda: any(x["kind"] == "reject" for x in reports(r)))
    reject = reports(r)[-1]
    assert reject["code"] == -2019 and reject["message"] == "Margin is insufficient."
    runner.service.close()  # type: ignore[attr-defined]


def test_a_symbol_the_exchange_does_not_list_is_rejected_by_name(
        venue: FuturesVenue, r: redis.Redis, redis_url: str) -> None:
    runner = make_runner(venue, r, redis_url)
    runner.start()
    doge = ExitPlan(profile="DEFAULT", stop_loss=0.19, take_profits=(), atr=0.001)
    send(r, order(symbol="DOGEUSDT", quantity=100.0, price=0.2, plan=doge))
    turn_until(runner, lambda: any(x["kind"] == "reject" for x in reports(r)))
    reject = reports(r)[-1]
    assert reject["code"] == -1121 and "DOGEUSDT" in reject["message"]
    assert venue.snapshot()["order_log"] == []
    runner.service.close()  # type: ignore[attr-defined]


def test_a_429_storm_backs_off_then_places_exactly_one_order(
        venue: FuturesVenue, r: redis.Redis, redis_url: str) -> None:
    runner = make_runner(venue, r, redis_url)
    runner.start()
    turn_until(runner, lambda: runner.service.venue._ready)  # type: ignore[attr-defined]
    venue.rate_limit(3, retry_after_s=1)
    send(r, order())
    turn_until(runner, lambda: any(x["kind"] == "fill" for x in reports(r)), turns=400)
    requests = venue.snapshot()["requests"]
    assert venue.snapshot()["order_log"][0]["clientOrderId"] == "qt-plan0001"
    assert len(venue.snapshot()["order_log"]) == 1
    adapter = runner.service.venue.adapter  # type: ignore[attr-defined]
    assert adapter.budget.bans >= 1
    assert len(requests) < 60, "the adapter must wait out Retry-After, not hammer the venue"
    runner.service.close()  # type: ignore[attr-defined]


def test_a_timestamp_error_resyncs_the_clock_and_succeeds(
        venue: FuturesVenue, r: redis.Redis, redis_url: str) -> None:
    runner = make_runner(venue, r, redis_url)
    runner.start()
    turn_until(runner, lambda: runner.service.venue._ready)  # type: ignore[attr-defined]
    venue.skew_clock(-20_000)  # the server clock jumps 20 s back: -1021 until resynced
    send(r, order())
    turn_until(runner, lambda: any(x["kind"] == "fill" for x in reports(r)))
    adapter = runner.service.venue.adapter  # type: ignore[attr-defined]
    assert adapter.clock_offset_ms < -15_000
    assert len(venue.snapshot()["order_log"]) == 1
    runner.service.close()  # type: ignore[attr-defined]


def test_user_stream_drop_and_reconnect_loses_no_fill(
        venue: FuturesVenue, r: redis.Redis, redis_url: str) -> None:
    runner = make_runner(venue, r, redis_url, binance_poll_interval_s=3600.0)
    runner.start()
    turn_until(runner, lambda: venue.stream_connections_accepted >= 1)
    stream = runner.service.venue._stream  # type: ignore[attr-defined]
    turn_until(runner, lambda: not stream.gap)
    venue.partial_fills(0.5)
    send(r, order(quantity=0.02))
    turn_until(runner, lambda: sum(x["kind"] == "fill" for x in reports(r)) == 1)
    assert venue.drop_user_streams() == 1
    venue.partial_fills(None)
    venue.complete_partial_fills()  # filled while the stream is down: pushed to nobody
    turn_until(runner, lambda: venue.stream_connections_accepted >= 2)
    turn_until(runner, lambda: sum(x["kind"] == "fill" for x in reports(r)) == 2)
    assert reports(r)[-1]["position_quantity"] == pytest.approx(0.02)
    runner.service.close()  # type: ignore[attr-defined]


def test_missing_keys_in_binance_mode_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QT_EXCHANGE", "binance")
    monkeypatch.setenv("QT_BINANCE_API_KEY", "k")
    with pytest.raises(ConfigError, match="QT_BINANCE_API_SECRET"):
        load(Settings)
    monkeypatch.setenv("QT_BINANCE_API_SECRET", "s")
    monkeypatch.setenv("QT_BINANCE_TESTNET", "false")
    with pytest.raises(ConfigError, match="QT_BINANCE_MAINNET_OPT_IN"):
        load(Settings)
    monkeypatch.setenv("QT_BINANCE_MAINNET_OPT_IN", "true")
    settings = load(Settings)
    assert "s" not in repr(settings.binance_api_secret)


def test_killed_after_sending_before_recording_places_exactly_one_order(
        venue: FuturesVenue, r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    """SIGKILL while the venue holds the answer to an accepted order; the restart queries
    the client order id, finds the order, and does not send a second one."""
    env = {**os.environ, **settings_env(venue, redis_url), "QT_BINANCE_TIMEOUT_S": "30"}
    env.pop("QT_TEST_REDIS_URL", None)
    log = (tmp_path / "execution.log").open("wb")
    venue.stall_orders(30.0)
    process = subprocess.Popen([sys.executable, "-m", "services.execution"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        send(r, order())
        deadline = time.monotonic() + 30
        while not venue.snapshot()["order_log"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert venue.snapshot()["order_log"], "the order never reached the venue"
        state = orjson.loads(r.get(EXECUTION_KEY))
        assert state["intents"]["qt-plan0001"]["status"] == "new"  # sent, not yet recorded
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    venue.stall_orders(0.0)
    runner = make_runner(venue, r, redis_url)
    runner.start()
    turn_until(runner, lambda: any(x["kind"] == "fill" for x in reports(r)))
    assert len(venue.snapshot()["order_log"]) == 1
    state = orjson.loads(r.get(EXECUTION_KEY))
    assert state["intents"]["qt-plan0001"]["status"] == "done"
    assert state["positions"]["BTCUSDT"]["quantity"] == pytest.approx(0.012)
    runner.service.close()  # type: ignore[attr-defined]


# --- ambiguous answers: a timeout, "unknown order" --------------------------------------------


def live_book(venue: FuturesVenue, **config: Any) -> LiveExchange:
    """The live venue alone, without a user stream: only queries can resolve an order."""
    adapter = BinanceFutures(api_key=venue.account.api_key, api_secret=venue.account.api_secret,
                             rest_url=venue.rest_url, timeout_s=1.0)
    return LiveExchange(adapter, LiveConfig(ws_url="", protective_orders=False,
                                            poll_interval_s=0.05, **config))


def poll_until(book: LiveExchange, done: Callable[[], bool],
               seconds: float = 20.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reports, _, _ = book.poll(int(time.time() * 1000))
        got.extend(reports)
        if done():
            return got
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def order_requests(venue: FuturesVenue, method: str) -> int:
    return sum(1 for m, path in venue.snapshot()["requests"]
               if m == method and path == "/fapi/v1/order")


def test_a_timed_out_order_queried_as_unknown_for_a_while_exists_once(
        venue: FuturesVenue) -> None:
    """The new order hangs past the client's timeout (yet is placed and filled); the first
    queries answer "unknown order". The order is never sent again, and is booked once."""
    book = live_book(venue)
    book.submit(order(), int(time.time() * 1000))
    venue.stall_orders(3.0)
    venue.hide_orders(3)
    got = poll_until(book, lambda: book.intents["qt-plan0001"].status == "done")
    venue.stall_orders(0.0)
    snapshot = venue.snapshot()
    assert len(snapshot["order_log"]) == 1 and len(snapshot["orders"]) == 1
    assert order_requests(venue, "POST") == 1
    assert order_requests(venue, "GET") >= 4  # three "unknown order", then found
    assert [x.kind for x in got] == ["ack", "fill"]  # never a reject
    assert book.positions["BTCUSDT"].quantity == pytest.approx(0.012)
    assert snapshot["positions"] == {"BTCUSDT": pytest.approx(0.012)}


def test_an_acknowledged_order_queried_as_unknown_is_not_booked_as_a_reject(
        venue: FuturesVenue) -> None:
    venue.partial_fills(0.5)
    book = live_book(venue)
    book.submit(order(quantity=0.02), int(time.time() * 1000))
    got = poll_until(book, lambda: book.intents["qt-plan0001"].status == "open")
    venue.hide_orders(3)
    venue.partial_fills(None)
    venue.complete_partial_fills()
    got += poll_until(book, lambda: book.intents["qt-plan0001"].status == "done")
    assert [x.kind for x in got] == ["ack", "fill", "fill"]
    assert book.positions["BTCUSDT"].quantity == pytest.approx(0.02)


def test_an_order_unknown_past_recv_window_is_declared_not_placed_and_never_resent(
        venue: FuturesVenue) -> None:
    """"-1007 execution status unknown" and the order never reached the book: after
    recvWindow plus the margin of unknown answers the entry is reported not placed."""
    book = live_book(venue, recv_window_ms=300, unknown_order_margin_s=0.5)
    poll_until(book, lambda: book._ready)
    book.adapter.configure("BTCUSDT", 5, "ISOLATED")  # so the next request is the order
    book.submit(order(), int(time.time() * 1000))
    venue.fail_next(503, -1007, "Timeout waiting for response from backend server. Send "
                    "status unknown; execution status unknown.")
    got = poll_until(book, lambda: book.intents["qt-plan0001"].status == "done")
    assert [(x.kind, x.code) for x in got] == [("reject", -2013)]
    assert got[0].message.startswith("not placed")
    assert venue.snapshot()["order_log"] == []
    assert order_requests(venue, "POST") == 1
    assert order_requests(venue, "GET") >= 3


def test_a_reduce_only_exit_declared_not_placed_is_sent_again_under_its_id(
        venue: FuturesVenue) -> None:
    book = live_book(venue, recv_window_ms=300, unknown_order_margin_s=0.5)
    book.submit(order(), int(time.time() * 1000))
    poll_until(book, lambda: "BTCUSDT" in book.positions)
    book.harvest(HarvestIntent(harvest_id="h-1", position_id="plan-0001", symbol="BTCUSDT",
                               side="LONG", fraction=1.0, price=60_000.0, reason="stop_loss",
                               ts=int(time.time() * 1000)))
    venue.fail_next(503, -1007, "Timeout waiting for response from backend server.")
    poll_until(book, lambda: "BTCUSDT" not in book.positions)
    exits = [o for o in venue.snapshot()["order_log"] if o["reduceOnly"]]
    assert [o["clientOrderId"] for o in exits] == ["qx-h1"]  # once, under its own id
    assert order_requests(venue, "POST") == 3  # the entry, the exit refused, the exit again
    assert book.intents["qx-h1"].resends == 1
    assert venue.snapshot()["positions"] == {}


def test_done_intents_are_kept_for_a_time_window_not_a_count() -> None:
    book = LiveExchange(None, LiveConfig(intent_retention_ms=60_000))  # type: ignore[arg-type]
    for i in range(3000):  # a burst: more than any count bound would have kept
        book.submit(order(plan_id=f"plan-{i:04d}"), 1_000_000 + i)
        book.intents[f"qt-plan{i:04d}"].status = "done"
    book._prune()
    assert len(book.intents) == 3000 and book.knows("qt-plan0000")
    book.clock_ms = 1_000_000 + 61_000
    book._prune()
    assert not book.knows("qt-plan0000") and book.knows("qt-plan2999")


# --- state loss: the book rebuilt from the exchange -------------------------------------------


def test_lost_state_is_rebuilt_from_the_exchange_before_any_order(
        venue: FuturesVenue, r: redis.Redis, redis_url: str) -> None:
    adapter = BinanceFutures(api_key=venue.account.api_key, api_secret=venue.account.api_secret,
                             rest_url=venue.rest_url)
    adapter.configure("BTCUSDT", 4, "ISOLATED")
    venue.open_position_behind("BTCUSDT", 0.01, 59_000.0)
    adapter.place_protective(symbol="BTCUSDT", side="SELL", order_type="STOP_MARKET",
                             trigger=57_000.0, client_algo_id="qps-lost-1")
    venue.partial_fills(0.5)  # an entry still working on the exchange
    adapter.place_market(symbol="ETHUSDT", side="BUY", quantity=Decimal("0.2"),
                         client_order_id="qt-ethworking", reduce_only=False)
    balance = venue.snapshot()["balance"]
    # Redis came back empty: no execution state. An order read before the rebuild is refused.
    early: Any = build_service("execution", Settings(**{
        k.removeprefix("QT_").lower(): v for k, v in settings_env(venue, redis_url).items()}), r)
    early.restore()
    out = Outbox(frozenset({"execution.result", "trade.closed", "portfolio.state"}))
    early.handle(new_envelope(order("plan-early"), ts=int(time.time() * 1000), source="test",
                              key="e"), out)
    assert [(e.payload.kind, e.payload.reason) for _, e in out.events
            if e.payload.event_type == "execution.report"] == [("reject", "book_not_rebuilt")]
    runner = make_runner(venue, r, redis_url)
    runner.start()
    turn_until(runner, lambda: bool(book_reports(r)))
    (report,) = book_reports(r)
    assert report["reason"] == "rebuilt_from_venue"
    assert report["book"]["positions"] == ["BTCUSDT", "ETHUSDT"]
    assert report["book"]["open_orders"] == 1
    rebuilt = runner.service.venue  # type: ignore[attr-defined]
    assert rebuilt.balance == pytest.approx(balance)
    btc = rebuilt.positions["BTCUSDT"]
    assert (btc.side, btc.quantity, btc.entry_price, btc.leverage) == ("LONG", 0.01, 59_000.0, 4)
    assert rebuilt.protections["BTCUSDT"].placed_stop_id == "qps-lost-1"
    assert rebuilt.positions["ETHUSDT"].quantity == pytest.approx(0.1)
    # The working order's rest is booked when it fills, once.
    venue.partial_fills(None)
    venue.complete_partial_fills()
    turn_until(runner, lambda: any(x["kind"] == "fill" for x in reports(r)))
    turn_until(runner, lambda: rebuilt.intents["qt-ethworking"].status == "done")
    assert rebuilt.positions["ETHUSDT"].quantity == pytest.approx(0.2)
    stored = orjson.loads(r.get(EXECUTION_KEY))
    assert set(stored["positions"]) == {"BTCUSDT", "ETHUSDT"}
    assert stored["rebuild_pending"] is False
    assert len(venue.snapshot()["algo"]) == 1, "the resting stop was adopted, not doubled"
    runner.service.close()  # type: ignore[attr-defined]
