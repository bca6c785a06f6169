"""The live Binance source against the local stand-in, publishing to a real Redis.

python-binance's own socket and REST code talks to :class:`BinanceStandIn` on loopback;
the source publishes through ``quantum.bus.runner.publish``. Candles close only when a test
calls ``advance``, so what is on the streams is known exactly. Every wait is bounded.
"""

from __future__ import annotations

import csv
import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from binance import Client
from binance.exceptions import BinanceAPIException
from prometheus_client import REGISTRY

from quantum.bus.envelope import Envelope, decode, new_envelope
from quantum.bus.runner import publish
from quantum.contracts.events import EVENT_TYPES, Kline, Tick
from quantum.contracts.streams import MARKET_KLINES, MARKET_TICK
from quantum.exchange.venues.binance import market as live
from quantum.exchange.venues.binance.market import InvalidSymbol, LiveSource
from quantum.standin.binance_ws import BinanceStandIn

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
INTERVAL = "5m"
STEP = 300_000
HOUR = 3_600_000
DAY_START = 1_756_684_800_000  # 2025-09-01 00:00 UTC, the first bar of the sample
TWO_AM = DAY_START + 2 * HOUR  # mark prices exist from 01:00 on (the first 1 h mark closes)
SETTLEMENT = DAY_START + 8 * HOUR  # a funding settlement in the sample files
WAIT_SECONDS = 30.0


# --- the expected values, read straight from the files ---------------------------------------


def csv_rows(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt", newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[1:]


def bars(symbol: str) -> dict[int, list[float]]:
    """open_time → [open, high, low, close, volume] from ``<SYMBOL>-5m.csv.gz``."""
    return {int(row[0]): [float(x) for x in row[1:6]]
            for row in csv_rows(SAMPLE / f"{symbol}-{INTERVAL}.csv.gz")}


def expected_kline(symbol: str, open_time: int) -> Envelope[Any]:
    """The event replay publishes for this CSV row, with the live source's origin."""
    o, h, low, c, v = bars(symbol)[open_time]
    close_time = open_time + STEP - 1
    payload = Kline(symbol=symbol, interval=INTERVAL, open_time=open_time, close_time=close_time,
                    open=o, high=h, low=low, close=c, volume=v, source="binance")
    return new_envelope(payload, ts=close_time, source="market-publisher",
                        key=f"{symbol}:{INTERVAL}:{open_time}")


def expected_mark(symbol: str, ts: int) -> float:
    """Close of the last 1 h mark kline closed at or before ``ts``."""
    closed = [float(row[4]) for row in csv_rows(SAMPLE / f"{symbol}-mark-1h.csv.gz")
              if int(row[0]) + HOUR - 1 <= ts]
    return closed[-1]


def funding_rates(symbol: str) -> dict[int, float]:
    return {int(row[0]): float(row[1]) for row in csv_rows(SAMPLE / f"{symbol}-funding.csv.gz")}


# --- harness ------------------------------------------------------------------------------------


def events(client: redis.Redis, stream_key: str) -> list[Envelope[Any]]:
    return [decode(fields, EVENT_TYPES) for _, fields in client.xrange(stream_key)]


def klines_by_symbol(client: redis.Redis) -> dict[str, list[Envelope[Any]]]:
    out: dict[str, list[Envelope[Any]]] = {symbol: [] for symbol in SYMBOLS}
    for envelope in events(client, MARKET_KLINES.key):
        out[envelope.payload.symbol].append(envelope)
    return out


def counter(name: str) -> float:
    """A Prometheus counter of the live source, as ``/metrics`` would show it."""
    return REGISTRY.get_sample_value(name) or 0.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Poll ``condition``; fail naming ``what`` if it is still false after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_for_klines(client: redis.Redis, per_symbol: int) -> dict[str, list[Envelope[Any]]]:
    wait_until(lambda: all(len(v) >= per_symbol for v in klines_by_symbol(client).values()),
               f"{per_symbol} klines per symbol")
    return klines_by_symbol(client)


@dataclass
class RunningSource:
    source: LiveSource
    thread: threading.Thread
    stop: threading.Event
    errors: list[BaseException]


@pytest.fixture
def start_source(r: redis.Redis) -> Iterator[Callable[[BinanceStandIn], RunningSource]]:
    """Start a :class:`LiveSource` on a stand-in in a thread; always stopped afterwards."""
    started: list[RunningSource] = []

    def start(standin: BinanceStandIn, **options: Any) -> RunningSource:
        source = LiveSource(SYMBOLS, INTERVAL, ws_url=standin.ws_url, rest_url=standin.rest_url,
                            **options)
        stop = threading.Event()
        errors: list[BaseException] = []

        def body() -> None:
            try:
                source.run(lambda items: publish(r, items), stop)
            except BaseException as e:  # surfaced by the test, not lost in the thread
                errors.append(e)
                raise

        thread = threading.Thread(target=body, name="live-source", daemon=True)
        thread.start()
        running = RunningSource(source, thread, stop, errors)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop.set()
        running.thread.join(WAIT_SECONDS)
        assert not running.thread.is_alive(), "the live source did not stop"
        assert not running.errors, f"the live source raised {running.errors!r}"


@pytest.fixture
def standin() -> Iterator[BinanceStandIn]:
    with BinanceStandIn(SAMPLE, SYMBOLS, INTERVAL, start_ms=TWO_AM) as running:
        yield running


def assert_contiguous_and_unique(klines: list[Envelope[Any]], first_open: int, count: int) -> None:
    open_times = [k.payload.open_time for k in klines]
    assert open_times == [first_open + i * STEP for i in range(count)]
    assert len({k.id for k in klines}) == count


# --- tests --------------------------------------------------------------------------------------


def test_closed_klines_are_published_as_replay_would_publish_the_rows(
    r: redis.Redis, standin: BinanceStandIn, start_source: Callable[..., RunningSource]
) -> None:
    start_source(standin)
    standin.wait_for_connections(1)
    standin.advance(3)
    published = wait_for_klines(r, 3)

    for symbol in SYMBOLS:
        assert_contiguous_and_unique(published[symbol], TWO_AM, 3)
        for envelope in published[symbol]:
            expected = expected_kline(symbol, envelope.payload.open_time)
            assert envelope.payload == expected.payload
            assert (envelope.id, envelope.ts, envelope.type, envelope.source) == (
                expected.id, expected.ts, expected.type, expected.source)
            # the same key and ts as replay: only the payload's origin differs
            replayed = new_envelope(expected.payload.model_copy(update={"source": "replay"}),
                                    ts=expected.ts, source="market-publisher",
                                    key=f"{symbol}:{INTERVAL}:{envelope.payload.open_time}")
            assert replayed.id == envelope.id

    ticks = events(r, MARKET_TICK.key)
    assert all(isinstance(t.payload, Tick) and t.payload.source == "binance" for t in ticks)
    assert len({t.id for t in ticks}) == len(ticks)
    for symbol in SYMBOLS:
        rows = bars(symbol)
        by_ts = {t.ts: t.payload for t in ticks if t.payload.symbol == symbol}
        for open_time in (TWO_AM, TWO_AM + STEP, TWO_AM + 2 * STEP):
            close_tick = by_ts[open_time + STEP]  # the candle's close, E = close_time + 1
            close = rows[open_time][3]
            assert (close_tick.open, close_tick.high, close_tick.low, close_tick.close) == (
                close, close, close, close)
            mark_tick = by_ts[open_time + STEP // 2]  # the mark price update mid-candle
            assert mark_tick.mark_price == expected_mark(symbol, open_time + STEP // 2)
            assert close_tick.mark_price == mark_tick.mark_price
            assert close_tick.ts == open_time + STEP
    # the candle still forming is never published as closed
    assert all(k.payload.open_time < TWO_AM + 3 * STEP for k in events(r, MARKET_KLINES.key))


def test_funding_rate_is_set_on_the_first_tick_at_the_settlement(
    r: redis.Redis, start_source: Callable[..., RunningSource]
) -> None:
    with BinanceStandIn(SAMPLE, SYMBOLS, INTERVAL, start_ms=SETTLEMENT - 4 * STEP) as standin:
        start_source(standin)
        standin.wait_for_connections(1)
        standin.advance(6)
        wait_for_klines(r, 6)

    for symbol in SYMBOLS:
        ticks = [t.payload for t in events(r, MARKET_TICK.key) if t.payload.symbol == symbol]
        funded = [t for t in ticks if t.funding_rate is not None]
        assert [t.ts for t in funded] == [SETTLEMENT]
        assert funded[0].funding_rate == funding_rates(symbol)[SETTLEMENT]


@pytest.mark.parametrize("abrupt", [True, False], ids=["tcp-abort", "close-frame"])
def test_a_dropped_connection_reconnects_and_backfills_without_loss_or_duplicates(
    r: redis.Redis, standin: BinanceStandIn, start_source: Callable[..., RunningSource],
    abrupt: bool,
) -> None:
    start_source(standin)
    standin.wait_for_connections(1)
    standin.advance(3)
    wait_for_klines(r, 3)

    with standin.offline(abrupt=abrupt):  # three candles close while nobody listens
        standin.advance(3)
    standin.wait_for_connections(2, WAIT_SECONDS)
    standin.advance(2)
    published = wait_for_klines(r, 8)
    standin.advance(1)  # anything late or doubled would show up behind this candle
    published = wait_for_klines(r, 9)

    assert standin.rest_requests["/fapi/v1/klines"] >= len(SYMBOLS)
    for symbol in SYMBOLS:
        assert_contiguous_and_unique(published[symbol], TWO_AM, 9)
        for envelope in published[symbol]:
            assert envelope.payload == expected_kline(symbol, envelope.payload.open_time).payload
    ticks = events(r, MARKET_TICK.key)
    assert len({t.id for t in ticks}) == len(ticks)


def test_a_long_outage_is_backfilled_across_rest_pages(
    r: redis.Redis, standin: BinanceStandIn, start_source: Callable[..., RunningSource]
) -> None:
    start_source(standin)
    standin.wait_for_connections(1)
    standin.advance(1)
    wait_for_klines(r, 1)

    outage = live.REST_PAGE_LIMIT + 20  # more candles than one klines request returns
    with standin.offline():
        standin.advance(outage)
    standin.wait_for_connections(2, WAIT_SECONDS)
    standin.advance(1)
    total = 1 + outage + 1
    published = wait_for_klines(r, total)

    assert standin.rest_requests["/fapi/v1/klines"] >= 2 * len(SYMBOLS)
    for symbol in SYMBOLS:
        assert_contiguous_and_unique(published[symbol], TWO_AM, total)
        last = published[symbol][-2]
        assert last.payload == expected_kline(symbol, last.payload.open_time).payload


def test_a_restart_resumes_from_the_last_published_candle(
    r: redis.Redis, standin: BinanceStandIn, start_source: Callable[..., RunningSource]
) -> None:
    standin.advance(3)  # three candles close while the service is down
    start_source(standin, resume_from={symbol: TWO_AM for symbol in SYMBOLS})
    standin.wait_for_connections(1)
    standin.advance(1)
    published = wait_for_klines(r, 3)

    for symbol in SYMBOLS:
        assert_contiguous_and_unique(published[symbol], TWO_AM + STEP, 3)
        for envelope in published[symbol]:
            assert envelope.payload == expected_kline(symbol, envelope.payload.open_time).payload


def test_malformed_and_redelivered_messages_are_skipped(
    r: redis.Redis, standin: BinanceStandIn, start_source: Callable[..., RunningSource]
) -> None:
    running = start_source(standin)
    standin.wait_for_connections(1)
    standin.advance(1)
    wait_for_klines(r, 1)
    skipped_before = counter("quantum_market_live_skipped_total")

    kline_stream, mark_stream = "btcusdt@kline_5m", "btcusdt@markPrice"
    good_close = {"e": "kline", "E": TWO_AM + STEP, "s": "BTCUSDT", "k": {
        "t": TWO_AM, "T": TWO_AM + STEP - 1, "s": "BTCUSDT", "i": INTERVAL, "o": "1",
        "h": "2", "l": "0.5", "c": "1.5", "v": "10", "x": True}}
    malformed: list[dict[str, Any]] = [
        {"e": "kline", "E": TWO_AM + STEP + 5, "s": "BTCUSDT"},  # no k
        {**good_close, "E": "soon"},  # E not a time
        {**good_close, "k": {**good_close["k"], "t": TWO_AM + STEP, "c": "abc"}},
        {**good_close, "k": {**good_close["k"], "t": TWO_AM + STEP, "l": "-1"}},
        {**good_close, "k": {**good_close["k"], "t": TWO_AM + STEP, "i": "1m"}},
        {**good_close, "s": "DOGEUSDT"},  # not a subscribed symbol
        {"e": "markPriceUpdate", "E": TWO_AM + STEP + 7, "s": "BTCUSDT", "p": "0",
         "r": "0.0001", "T": SETTLEMENT},
        {"e": "markPriceUpdate", "E": TWO_AM + STEP + 8, "s": "BTCUSDT", "r": "0.0001"},
        {"e": "markPriceUpdate", "E": TWO_AM + STEP + 9, "s": "BTCUSDT", "p": "1",
         "r": "nan", "T": SETTLEMENT},
        {"e": "aggTrade", "E": TWO_AM + STEP + 10, "s": "BTCUSDT"},
    ]
    for message in malformed:
        stream = mark_stream if message.get("e") == "markPriceUpdate" else kline_stream
        assert standin.inject(stream, message) == 1
    # a redelivery of the candle already published, with other values: dropped by open time
    assert standin.inject(kline_stream, good_close) == 1
    standin.advance(2)
    published = wait_for_klines(r, 3)

    wait_until(lambda: counter("quantum_market_live_skipped_total") - skipped_before
               >= len(malformed),
               "the malformed messages to be counted")
    assert running.thread.is_alive()
    assert standin.hub.accepted == 1  # skipped in place, no reconnect needed
    for symbol in SYMBOLS:
        assert_contiguous_and_unique(published[symbol], TWO_AM, 3)
        for envelope in published[symbol]:
            assert envelope.payload == expected_kline(symbol, envelope.payload.open_time).payload
    ticks = [t.payload for t in events(r, MARKET_TICK.key)]
    assert all(t.close != 1.5 and t.mark_price not in (0.0, 1.0) for t in ticks)
    assert not any(t.funding_rate is not None for t in ticks)


def test_an_undecodable_frame_restarts_the_socket_and_loses_nothing(
    r: redis.Redis, standin: BinanceStandIn, start_source: Callable[..., RunningSource]
) -> None:
    # python-binance ends its read loop on a frame that is not JSON; the source reconnects
    start_source(standin)
    standin.wait_for_connections(1)
    standin.advance(2)
    wait_for_klines(r, 2)
    reconnects_before = counter("quantum_market_live_reconnects_total")

    assert standin.inject("ethusdt@kline_5m", "this is not json") == 1
    with standin.offline(abrupt=False):  # the close frame follows the bad frame: both arrive
        standin.advance(2)  # two candles close before the new socket is up
    standin.wait_for_connections(2, WAIT_SECONDS)
    standin.advance(2)
    published = wait_for_klines(r, 6)
    standin.advance(1)
    published = wait_for_klines(r, 7)

    assert counter("quantum_market_live_reconnects_total") > reconnects_before
    for symbol in SYMBOLS:
        assert_contiguous_and_unique(published[symbol], TWO_AM, 7)


def test_stop_returns_while_the_exchange_refuses_connections(
    standin: BinanceStandIn, start_source: Callable[..., RunningSource]
) -> None:
    reconnects_before = counter("quantum_market_live_reconnects_total")
    with standin.offline():
        running = start_source(standin)
        wait_until(lambda: counter("quantum_market_live_reconnects_total") > reconnects_before,
                   "a refused connection")
        running.stop.set()
        running.thread.join(WAIT_SECONDS)
        assert not running.thread.is_alive()
    assert standin.hub.accepted == 0


@pytest.mark.parametrize("symbols", [
    ["btcusdt"], ["BTC-USDT"], ["B"], [""], ["A" * 21], [], "BTCUSDT", ["BTCUSDT", 7],
])
def test_invalid_symbols_are_refused_at_construction(symbols: Any) -> None:
    with pytest.raises(InvalidSymbol, match="symbol"):
        LiveSource(symbols)


def test_resume_from_an_unsubscribed_symbol_is_refused() -> None:
    with pytest.raises(InvalidSymbol, match="SOLUSDT"):
        LiveSource(["BTCUSDT"], resume_from={"SOLUSDT": TWO_AM})


def test_bad_interval_and_urls_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="interval"):
        LiveSource(["BTCUSDT"], "7m")
    with pytest.raises(ValueError, match="ws_url"):
        LiveSource(["BTCUSDT"], ws_url="http://127.0.0.1:1/")
    with pytest.raises(ValueError, match="rest_url"):
        LiveSource(["BTCUSDT"], rest_url="127.0.0.1:1")


def test_the_standin_answers_rest_klines_as_binance_does(standin: BinanceStandIn) -> None:
    standin.advance(2)
    client = Client(ping=False, requests_params={"timeout": 10})
    client.FUTURES_URL = standin.rest_url + "/fapi"
    rows = client.futures_klines(symbol="BTCUSDT", interval=INTERVAL, limit=10)
    assert [row[0] for row in rows] == [TWO_AM, TWO_AM + STEP, TWO_AM + 2 * STEP]
    o, h, low, c, v = bars("BTCUSDT")[TWO_AM]
    assert [float(x) for x in rows[0][1:6]] == [o, h, low, c, v]
    assert rows[0][6] == TWO_AM + STEP - 1
    forming = [float(x) for x in rows[2][1:6]]  # only its first trade so far
    opening = bars("BTCUSDT")[TWO_AM + 2 * STEP][0]
    assert forming == [opening, opening, opening, opening, 0.0]
    assert client.futures_time()["serverTime"] == TWO_AM + 2 * STEP + 1
    with pytest.raises(BinanceAPIException) as error:
        client.futures_klines(symbol="NOPEUSDT", interval=INTERVAL)
    assert error.value.code == -1121
    with pytest.raises(BinanceAPIException) as error:
        client.futures_klines(symbol="BTCUSDT", interval="1m")
    assert error.value.code == -1120
