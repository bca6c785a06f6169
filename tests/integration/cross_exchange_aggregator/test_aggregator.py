"""The cross-exchange-aggregator's feeds on a real Redis against the Bybit and Coinbase
stand-ins: each venue's messages normalised to the fleet's contracts, a disconnect survived
with no gap, malformed frames dead-lettered without a crash, one venue down while the other
keeps publishing, and the service process idle (healthy) when no venue is configured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from quantum.bus.envelope import decode
from quantum.bus.streams import DLQ
from quantum.contracts.events import EVENT_TYPES, VenueFunding, VenueKline, VenueTick
from quantum.contracts.streams import EXCHANGE_NORMALIZED
from quantum.crossexchange import coinbase as coinbase_feed
from quantum.crossexchange.bybit import BybitFeed
from quantum.crossexchange.coinbase import CoinbaseFeed
from quantum.crossexchange.feed import VenueFeed, run_feeds
from quantum.crossexchange.sink import RedisSink
from quantum.localredis import free_port
from quantum.observability.heartbeat import heartbeat_key
from quantum.standin.bybit import FUNDING_OFFSET, BybitStandIn
from quantum.standin.coinbase import CoinbaseStandIn

ROOT = Path(__file__).resolve().parents[3]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
NAME = "cross-exchange-aggregator"


def events(r: redis.Redis) -> list[Any]:
    return [decode(fields, EVENT_TYPES).payload
            for _, fields in r.xrange(EXCHANGE_NORMALIZED.key)]


def klines(r: redis.Redis, venue: str, symbol: str) -> list[VenueKline]:
    return [p for p in events(r) if isinstance(p, VenueKline) and p.venue == venue
            and p.symbol == symbol]


def wait_until(check: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


@contextmanager
def running(r: redis.Redis, feeds: list[VenueFeed]) -> Iterator[None]:
    stop = threading.Event()
    sink = RedisSink(r, NAME, wait=lambda: not stop.is_set())
    thread = threading.Thread(target=run_feeds, args=(feeds, sink, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive()


def test_bybit_klines_tickers_and_funding_are_normalised(r: redis.Redis,
                                                         sample_dir: Path) -> None:
    with BybitStandIn(sample_dir, SYMBOLS) as venue:
        venue.advance(2)
        feed = BybitFeed(SYMBOLS, ws_url=venue.ws_url, rest_url=venue.rest_url)
        with running(r, [feed]):
            venue.wait_for_connections(1)
            wait_until(lambda: venue.subscribed() == 1, what="subscription")
            wait_until(lambda: any(isinstance(p, VenueFunding) for p in events(r)),
                       what="funding at connect")
            venue.advance(1)
            wait_until(lambda: len(klines(r, "bybit", "ETHUSDT")) == 1, what="a kline")
            open_time, (o, h, low, c, v) = venue.closed_bar("ETHUSDT")

            def ticked_at_close() -> bool:  # the ticker and the kline are separate topics
                return any(isinstance(p, VenueTick) and p.symbol == "ETHUSDT"
                           and p.ts == open_time + 300_000 for p in events(r))

            wait_until(ticked_at_close, what="the ticker at the bar's close")
    kline = klines(r, "bybit", "ETHUSDT")[0]
    assert (kline.instrument, kline.interval, kline.open_time, kline.close_time) == (
        "ETHUSDT", "5m", open_time, open_time + 299_999)
    assert (kline.open, kline.high, kline.low, kline.close, kline.volume) == pytest.approx(
        (o, h, low, c, v))
    ticks = [p for p in events(r) if isinstance(p, VenueTick) and p.symbol == "ETHUSDT"]
    last = ticks[-1]
    assert last.ts == open_time + 300_000 and last.close == pytest.approx(c)
    assert last.mark_price == pytest.approx(c) and last.index_price is not None
    assert last.next_funding_time is not None and last.next_funding_time > last.ts
    funding = [p for p in events(r) if isinstance(p, VenueFunding) and p.symbol == "BTCUSDT"]
    assert len(funding) == 1 and funding[0].funding_time == 1_756_684_800_000
    recorded = venue.bars["BTCUSDT"].funding
    assert funding[0].funding_rate == pytest.approx(recorded[min(recorded)] + FUNDING_OFFSET)


def test_coinbase_ticker_and_candles_are_normalised(r: redis.Redis, sample_dir: Path) -> None:
    with CoinbaseStandIn(sample_dir, SYMBOLS) as venue:
        venue.advance(1)
        feed = CoinbaseFeed(SYMBOLS, ws_url=venue.ws_url, rest_url=venue.rest_url)
        with running(r, [feed]):
            wait_until(lambda: venue.subscribed() == 1, what="subscription")
            venue.advance(2)
            wait_until(lambda: len(klines(r, "coinbase", "BTCUSDT")) == 3, what="candles")
        # from the last candle closed before connecting on, each once
        closed = [venue.closed_bar("BTCUSDT", back) for back in (3, 2, 1)]
    got = klines(r, "coinbase", "BTCUSDT")
    assert [k.open_time for k in got] == [t for t, _ in closed]
    for kline, (_, (o, h, low, c, v)) in zip(got, closed, strict=True):
        assert kline.instrument == "BTC-USD"
        assert (kline.open, kline.high, kline.low, kline.close, kline.volume) == pytest.approx(
            (o, h, low, c, v))
    ticks = [p for p in events(r) if isinstance(p, VenueTick) and p.symbol == "BTCUSDT"]
    assert [t.ts for t in ticks] == [t + 300_000 for t, _ in closed[1:]]
    assert ticks[-1].close == pytest.approx(closed[-1][1][3]) and ticks[-1].mark_price is None


def test_a_disconnect_is_survived_with_a_backfill_and_no_gap(r: redis.Redis,
                                                             sample_dir: Path) -> None:
    with BybitStandIn(sample_dir, SYMBOLS) as bybit, \
            CoinbaseStandIn(sample_dir, SYMBOLS) as coinbase:
        feeds: list[VenueFeed] = [
            BybitFeed(SYMBOLS, ws_url=bybit.ws_url, rest_url=bybit.rest_url),
            CoinbaseFeed(SYMBOLS, ws_url=coinbase.ws_url, rest_url=coinbase.rest_url)]
        with running(r, feeds):
            wait_until(lambda: bybit.subscribed() == 1 and coinbase.subscribed() == 1)
            bybit.advance(2)
            coinbase.advance(2)
            wait_until(lambda: len(klines(r, "bybit", "BTCUSDT")) == 2)
            with bybit.offline(), coinbase.offline():
                bybit.advance(3)  # closed while nobody listens
                coinbase.advance(3)
                time.sleep(0.5)
            bybit.wait_for_connections(2, timeout=20)
            coinbase.wait_for_connections(2, timeout=20)
            wait_until(lambda: len(klines(r, "bybit", "BTCUSDT")) == 5, what="bybit backfill")
            bybit.advance(1)
            coinbase.advance(1)
            wait_until(lambda: len(klines(r, "bybit", "ETHUSDT")) == 6
                       and len(klines(r, "coinbase", "ETHUSDT")) == 6, what="all six bars")
        for venue, stand_in in (("bybit", bybit), ("coinbase", coinbase)):
            for symbol in SYMBOLS:
                times = [k.open_time for k in klines(r, venue, symbol)]
                want = [stand_in.closed_bar(symbol, back)[0] for back in range(6, 0, -1)]
                assert times == want, (venue, symbol)  # every bar once, in order


def test_malformed_frames_are_dead_lettered_and_the_feed_carries_on(
        r: redis.Redis, sample_dir: Path) -> None:
    with BybitStandIn(sample_dir, SYMBOLS) as bybit, \
            CoinbaseStandIn(sample_dir, SYMBOLS) as coinbase:
        feeds: list[VenueFeed] = [
            BybitFeed(SYMBOLS, ws_url=bybit.ws_url, rest_url=bybit.rest_url),
            CoinbaseFeed(SYMBOLS, ws_url=coinbase.ws_url, rest_url=coinbase.rest_url)]
        with running(r, feeds):
            wait_until(lambda: bybit.subscribed() == 1 and coinbase.subscribed() == 1)
            bybit.send_raw("{not json")
            bybit.send_raw(orjson.dumps({"topic": "kline.5.BTCUSDT", "type": "snapshot",
                                         "ts": 1, "data": [{"start": 0, "end": 299_999,
                                                            "interval": "5", "open": "-1",
                                                            "high": "1", "low": "1",
                                                            "close": "1", "volume": "1",
                                                            "confirm": True}]}).decode())
            coinbase.send_raw('{"type": "ticker", "product_id": "DOGE-USD", "price": "1", '
                              '"time": "2025-09-01T00:00:00Z", "sequence": 1}')
            wait_until(lambda: r.xlen(DLQ.key) == 3, what="three dead letters")
            bybit.advance(1)
            coinbase.advance(1)
            wait_until(lambda: len(klines(r, "bybit", "BTCUSDT")) == 1
                       and len(klines(r, "coinbase", "BTCUSDT")) == 1, what="feeds go on")
            assert bybit.accepted == 1 and coinbase.accepted == 1  # no reconnect needed
    letters = [{k.decode(): v.decode() for k, v in fields.items()}
               for _, fields in r.xrange(DLQ.key)]
    assert {letter["group"] for letter in letters} == {NAME}
    assert all(letter["type"] == "bus.dead_letter" for letter in letters)
    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons[0].startswith("kline invalid at open")
    assert reasons[1].startswith("not JSON")
    assert reasons[2] == "ticker for unsubscribed product 'DOGE-USD'"
    (not_json,) = [letter for letter in letters if letter["reason"].startswith("not JSON")]
    assert orjson.loads(not_json["original"]) == {"frame": "{not json"}
    assert not_json["stream"].startswith("bybit:ws://127.0.0.1")


def test_one_venue_down_while_the_other_keeps_publishing(r: redis.Redis,
                                                         sample_dir: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    with CoinbaseStandIn(sample_dir, SYMBOLS) as coinbase:
        feeds: list[VenueFeed] = [
            BybitFeed(SYMBOLS, ws_url=f"ws://{dead}/v5/public/linear", rest_url=f"http://{dead}"),
            CoinbaseFeed(SYMBOLS, ws_url=coinbase.ws_url, rest_url=coinbase.rest_url)]
        with running(r, feeds):
            wait_until(lambda: coinbase.subscribed() == 1)
            for _ in range(3):
                coinbase.advance(1)
                time.sleep(0.2)
            wait_until(lambda: len(klines(r, "coinbase", "ETHUSDT")) == 3, what="coinbase")
    assert {p.venue for p in events(r)} == {"coinbase"}


def test_coinbase_rest_down_keeps_the_ticker_and_catches_the_candles_up(
        r: redis.Redis, sample_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coinbase_feed, "CANDLES_RETRY_SECONDS", 0.5)
    with CoinbaseStandIn(sample_dir, SYMBOLS) as venue:
        feed = CoinbaseFeed(SYMBOLS, ws_url=venue.ws_url, rest_url=venue.rest_url)
        with running(r, [feed]):
            wait_until(lambda: venue.subscribed() == 1)
            venue.rest_online = False
            venue.advance(2)
            wait_until(lambda: len([p for p in events(r) if isinstance(p, VenueTick)]) == 4,
                       what="ticks while REST is down")
            assert klines(r, "coinbase", "BTCUSDT") == []
            venue.rest_online = True
            venue.advance(1)
            wait_until(lambda: len(klines(r, "coinbase", "ETHUSDT")) == 3, what="catch-up")
            time.sleep(0.5)
        want = [venue.closed_bar("ETHUSDT", back)[0] for back in (3, 2, 1)]
    assert [k.open_time for k in klines(r, "coinbase", "ETHUSDT")] == want
    assert venue.accepted == 1  # the socket was never dropped for it


def _service(r: redis.Redis, redis_url: str, **env: str) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    environment |= {"QT_REDIS_URL": redis_url, "QT_METRICS_PORT": "0", **env}
    return subprocess.Popen([sys.executable, "-m", "services.cross_exchange_aggregator"],
                            cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def test_the_service_runs_idle_and_healthy_with_no_venue(r: redis.Redis,
                                                         redis_url: str) -> None:
    proc = _service(r, redis_url)
    try:
        wait_until(lambda: r.exists(heartbeat_key(NAME)) == 1, what="heartbeat")
        time.sleep(1.5)
        assert proc.poll() is None
    finally:
        output = _stop(proc)
    assert "no venue configured" in output
    assert r.xlen(EXCHANGE_NORMALIZED.key) == 0


def test_the_service_publishes_the_venue_that_answers(r: redis.Redis, redis_url: str,
                                                      sample_dir: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with BybitStandIn(sample_dir, SYMBOLS) as bybit:
        proc = _service(r, redis_url, QT_VENUES="bybit,coinbase", QT_SYMBOLS="BTCUSDT,ETHUSDT",
                        QT_BYBIT_WS_URL=bybit.ws_url, QT_BYBIT_REST_URL=bybit.rest_url,
                        QT_COINBASE_WS_URL=f"ws://{dead}/",
                        QT_COINBASE_REST_URL=f"http://{dead}")
        try:
            wait_until(lambda: bybit.subscribed() == 1, timeout=30, what="service subscribed")
            bybit.advance(2)
            wait_until(lambda: len(klines(r, "bybit", "BTCUSDT")) == 2, what="klines")
            assert proc.poll() is None and r.exists(heartbeat_key(NAME)) == 1
        finally:
            _stop(proc)
        # restarted, it resumes from the stream: the bars closed meanwhile, once each
        bybit.advance(2)
        proc = _service(r, redis_url, QT_VENUES="bybit", QT_SYMBOLS="BTCUSDT,ETHUSDT",
                        QT_BYBIT_WS_URL=bybit.ws_url, QT_BYBIT_REST_URL=bybit.rest_url)
        try:
            wait_until(lambda: len(klines(r, "bybit", "BTCUSDT")) == 4, timeout=30,
                       what="back-fill after restart")
        finally:
            _stop(proc)
        want = [bybit.closed_bar("BTCUSDT", back)[0] for back in range(4, 0, -1)]
    assert [k.open_time for k in klines(r, "bybit", "BTCUSDT")] == want
