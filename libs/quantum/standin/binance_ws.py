"""A local Binance USDⓈ-M futures market: WebSocket streams and REST market data.

Tests and local runs point python-binance at this stand-in instead of the exchange, so the
live market source is exercised through the library's own socket and REST code, offline
and deterministically. It plays recorded bars (``data/sample/<SYMBOL>-5m.csv.gz`` and the
funding and mark price files beside them, read by :mod:`quantum.replay.data` so replay
and stand-in see identical numbers) forward only when told to (:meth:`BinanceStandIn.advance`):
a test decides when each candle closes, so nothing depends on wall-clock timing.

Three parts, each replaceable on its own:

* :class:`MarketTape` — the simulated market: its clock, the forming candle, the messages
  each step produces and the klines REST may return. No I/O.
* :class:`StreamHub` — the WebSocket endpoint (the ``websockets`` library): single streams
  ``/ws/<stream>``, combined streams ``/stream?streams=a/b`` (wrapped as
  ``{"stream": …, "data": …}``), optionally under a category segment (``/market/…``,
  ``/public/…``) as python-binance ≥ 1.0.30 requests them, and the live ``SUBSCRIBE`` /
  ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` methods. It can go offline and drop every
  connection, to test reconnects.
* REST routes on an aiohttp application: :func:`market_routes` serves ``/fapi/v1/ping``,
  ``/fapi/v1/time`` and ``/fapi/v1/klines``. Further route sets (the trading API: orders,
  account, exchangeInfo) plug in through ``rest_extensions`` without touching this file's
  market code.

:class:`BinanceStandIn` runs both servers on 127.0.0.1 (free ports) in a background thread
with its own event loop, as a context manager.

Message fields the data files do not carry (trade ids and counts, quote and taker volumes,
index and estimated settlement prices) are still sent so the shapes match Binance's
documentation: counts and volumes as zero, index and settlement price equal to the mark
price. The live source reads none of them.
"""

from __future__ import annotations

import bisect
import collections
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson
import structlog
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from quantum.replay.data import INTERVAL_MS, SymbolData, load_symbol, mark_at
from quantum.standin._loop import LoopThread

log = structlog.get_logger(component="binance-standin")

CATEGORY_SEGMENTS = ("market", "public", "private")
KLINES_MAX_LIMIT = 1500
KLINES_DEFAULT_LIMIT = 500
MARK_PRICE_ALIASES = ("@markPrice@1s", "@markPrice")


def decimal_text(value: float) -> str:
    """A float as Binance writes decimals: positional, no exponent, exact round trip."""
    return str(np.format_float_positional(value, trim="-"))


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One market stream event: the canonical stream name and the raw event object."""

    stream: str
    data: Mapping[str, Any]

    @property
    def event_time(self) -> int:
        return int(self.data["E"])


def canonical_stream(name: str) -> str:
    """``btcusdt@markPrice@1s`` and ``btcusdt@markPrice`` carry the same events here."""
    for alias in MARK_PRICE_ALIASES:
        if name.endswith(alias):
            return name[: -len(alias)] + "@markPrice"
    return name


class MarketTape:
    """Recorded bars of several symbols played forward as a live market, a candle at a time.

    For each symbol with a bar at open time ``t`` the tape produces, in event time:

    * ``E = t + 1``: a kline update, ``x = false``, holding the first trade of the candle
      (open = high = low = close = the recorded open, volume 0);
    * ``E = t + interval / 2``: a ``markPriceUpdate`` with the mark price (the last closed
      1 h mark kline, as replay uses) and the next funding settlement (rate, time);
    * ``E = t + interval`` (close time + 1): the closed kline, ``x = true``, with the
      recorded open, high, low, close and volume.

    As on Binance the next candle opens the moment one closes, so after every
    :meth:`advance` a candle is forming and ``/fapi/v1/klines`` returns it, partial, last.

    Not thread-safe: the stand-in calls it from its event loop only.
    """

    def __init__(
        self,
        data_dir: Path,
        symbols: Sequence[str],
        interval: str = "5m",
        *,
        start_ms: int | None = None,
    ) -> None:
        if interval not in INTERVAL_MS:
            known = ", ".join(INTERVAL_MS)
            raise ValueError(f"interval {interval!r} has no data files here (known: {known})")
        if not symbols:
            raise ValueError("the stand-in needs at least one symbol")
        self.interval = interval
        self.interval_ms = INTERVAL_MS[interval]
        self.data: dict[str, SymbolData] = {
            symbol: load_symbol(data_dir, symbol, start_ms=start_ms, interval=interval)
            for symbol in sorted(set(symbols))
        }
        empty = [symbol for symbol, data in self.data.items() if data.open_time.size == 0]
        if empty:
            raise ValueError(f"no bars from {start_ms} on for {', '.join(empty)}")
        self._row = {
            symbol: {int(t): i for i, t in enumerate(data.open_time)}
            for symbol, data in self.data.items()
        }
        self._funding_times = {
            symbol: sorted(data.funding) for symbol, data in self.data.items()
        }
        self.times: list[int] = sorted({int(t) for d in self.data.values() for t in d.open_time})
        self._next = 0  # index in ``times`` of the candle that closes on the next advance
        self._forming = False  # whether that candle's first update has been sent
        self.now_ms = self.times[0]  # the exchange clock: time of the last event sent

    # --- streams --------------------------------------------------------------------------

    def knows_stream(self, name: str) -> bool:
        """Whether ``name`` is a stream this market serves (symbols are lower case)."""
        symbol, _, kind = canonical_stream(name).partition("@")
        if symbol.upper() not in self.data or symbol != symbol.lower():
            return False
        return kind in (f"kline_{self.interval}", "markPrice")

    @property
    def exhausted(self) -> bool:
        return self._next >= len(self.times)

    def advance(self) -> list[StreamMessage]:
        """Close the forming candle and open the next; the messages in event-time order."""
        if self.exhausted:
            return []
        open_time = self.times[self._next]
        messages: list[StreamMessage] = []
        if not self._forming:
            messages += self._opening(open_time)
        messages += self._marks(open_time + self.interval_ms // 2)
        messages += self._closing(open_time)
        self._next += 1
        self._forming = False
        if not self.exhausted:
            messages += self._opening(self.times[self._next])
            self._forming = True
        if messages:
            self.now_ms = max(self.now_ms, messages[-1].event_time)
        return messages

    def _bar(self, symbol: str, open_time: int) -> list[float] | None:
        row = self._row[symbol].get(open_time)
        return None if row is None else self.data[symbol].ohlcv[row].tolist()

    def _opening(self, open_time: int) -> list[StreamMessage]:
        out = []
        for symbol in self.data:
            bar = self._bar(symbol, open_time)
            if bar is not None:
                first = bar[0]
                out.append(self._kline(symbol, open_time, [first, first, first, first, 0.0],
                                       closed=False, event_time=open_time + 1))
        return out

    def _closing(self, open_time: int) -> list[StreamMessage]:
        out = []
        for symbol in self.data:
            bar = self._bar(symbol, open_time)
            if bar is not None:
                out.append(self._kline(symbol, open_time, bar, closed=True,
                                       event_time=open_time + self.interval_ms))
        return out

    def _marks(self, event_time: int) -> list[StreamMessage]:
        out = []
        for symbol, data in self.data.items():
            mark = mark_at(data, event_time)
            if mark is None:  # no mark prices recorded for this time: nothing to announce
                continue
            rate, funding_time = self.next_funding(symbol, event_time)
            mark_text = decimal_text(mark)
            out.append(StreamMessage(f"{symbol.lower()}@markPrice", {
                "e": "markPriceUpdate", "E": event_time, "s": symbol, "p": mark_text,
                "i": mark_text, "P": mark_text,
                "r": "" if rate is None else decimal_text(rate), "T": funding_time,
            }))
        return out

    def next_funding(self, symbol: str, after_ms: int) -> tuple[float | None, int]:
        """The first settlement strictly after ``after_ms``: (rate, time), or (None, 0)."""
        times = self._funding_times[symbol]
        index = bisect.bisect_right(times, after_ms)
        if index == len(times):
            return None, 0
        return self.data[symbol].funding[times[index]], times[index]

    def _kline(
        self, symbol: str, open_time: int, bar: Sequence[float], *, closed: bool, event_time: int
    ) -> StreamMessage:
        o, h, low, c, v = bar
        body = {
            "t": open_time, "T": open_time + self.interval_ms - 1, "s": symbol,
            "i": self.interval, "f": 0, "L": 0, "o": decimal_text(o), "c": decimal_text(c),
            "h": decimal_text(h), "l": decimal_text(low), "v": decimal_text(v), "n": 0,
            "x": closed, "q": "0", "V": "0", "Q": "0", "B": "0",
        }
        data = {"e": "kline", "E": event_time, "s": symbol, "k": body}
        return StreamMessage(f"{symbol.lower()}@kline_{self.interval}", data)

    # --- REST -----------------------------------------------------------------------------

    def klines(
        self, symbol: str, *, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[list[Any]]:
        """``/fapi/v1/klines`` rows known so far, the forming candle (partial) last.

        As Binance: with ``startTime`` the first ``limit`` candles from it, otherwise the
        last ``limit`` up to ``endTime`` (or now).
        """
        known = self._next + (1 if self._forming else 0)
        rows: list[list[Any]] = []
        for index in range(min(known, len(self.times))):
            open_time = self.times[index]
            if (start_ms is not None and open_time < start_ms) or (
                end_ms is not None and open_time > end_ms
            ):
                continue
            bar = self._bar(symbol, open_time)
            if bar is None:
                continue
            if index == self._next:  # forming: only its first trade has happened
                bar = [bar[0], bar[0], bar[0], bar[0], 0.0]
            rows.append([
                open_time, *(decimal_text(x) for x in bar), open_time + self.interval_ms - 1,
                "0", 0, "0", "0", "0",
            ])
        return rows[:limit] if start_ms is not None else rows[-limit:]


# --- WebSocket ----------------------------------------------------------------------------


class BadStreamPath(ValueError):
    """A WebSocket request path that names no valid stream endpoint."""


def parse_stream_path(target: str) -> tuple[list[str], bool]:
    """Streams requested by a handshake target, and whether the endpoint is combined."""
    parts = urlsplit(target)
    segments = [segment for segment in parts.path.split("/") if segment]
    if segments and segments[0] in CATEGORY_SEGMENTS:
        segments = segments[1:]
    if not segments:
        raise BadStreamPath(f"no stream endpoint in {target!r}")
    if segments[0] == "ws":
        return segments[1:], False
    if segments[0] == "stream" and len(segments) == 1:
        requested = parse_qs(parts.query).get("streams", [""])[0]
        streams = [name for name in requested.split("/") if name]
        if not streams:
            raise BadStreamPath("combined endpoint without ?streams=")
        return streams, True
    raise BadStreamPath(f"unknown endpoint {parts.path!r}: use /ws/<stream> or /stream?streams=")


@dataclass(eq=False)
class Subscriber:
    """One client connection: the streams it follows (canonical → name it asked for)."""

    connection: ServerConnection
    combined: bool
    streams: dict[str, str] = field(default_factory=dict)

    def follow(self, names: Sequence[str]) -> None:
        for name in names:
            self.streams[canonical_stream(name)] = name

    def encode(self, stream: str, data: Mapping[str, Any]) -> bytes:
        if self.combined:
            return orjson.dumps({"stream": self.streams[stream], "data": data})
        return orjson.dumps(data)


class StreamHub:
    """The WebSocket side of the stand-in: handshakes, subscriptions and delivery."""

    def __init__(self, tape: MarketTape) -> None:
        self.tape = tape
        self.online = True
        self.accepted = 0  # handshakes accepted since start
        self._subscribers: set[Subscriber] = set()
        self.accepted_changed = threading.Condition()

    @property
    def connections(self) -> int:
        return len(self._subscribers)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse the handshake when offline or when a stream name is unknown."""
        if not self.online:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "stand-in is offline\n")
        try:
            streams, _ = parse_stream_path(request.path)
        except BadStreamPath as e:
            return connection.respond(HTTPStatus.BAD_REQUEST, f"{e}\n")
        unknown = [name for name in streams if not self.tape.knows_stream(name)]
        if unknown:
            return connection.respond(HTTPStatus.BAD_REQUEST, f"Invalid stream {unknown[0]}\n")
        return None

    async def serve_connection(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # set by the handshake this handler follows
        streams, combined = parse_stream_path(connection.request.path)
        subscriber = Subscriber(connection, combined)
        subscriber.follow(streams)
        self._subscribers.add(subscriber)
        with self.accepted_changed:
            self.accepted += 1
            self.accepted_changed.notify_all()
        try:
            async for raw in connection:
                reply = self._control(subscriber, raw)
                if reply is not None:
                    await connection.send(orjson.dumps(reply).decode())
        except ConnectionClosed:
            pass
        finally:
            self._subscribers.discard(subscriber)

    def _control(self, subscriber: Subscriber, raw: str | bytes) -> dict[str, Any] | None:
        """The live subscription methods of the Binance stream API."""
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}
        if not isinstance(request, dict):
            return {"error": {"code": 2, "msg": "Invalid request"}, "id": None}
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(subscriber.streams.values()), "id": request_id}
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            return {"error": {"code": 2, "msg": "Invalid request"}, "id": request_id}
        if not all(isinstance(p, str) and self.tape.knows_stream(p) for p in params):
            return {"error": {"code": 2, "msg": f"Invalid request: streams {params}"},
                    "id": request_id}
        if method == "SUBSCRIBE":
            subscriber.follow(params)
        else:
            for name in params:
                subscriber.streams.pop(canonical_stream(name), None)
        return {"result": None, "id": request_id}

    async def deliver(self, messages: Sequence[StreamMessage]) -> int:
        """Send each message to the connections following its stream, in order."""
        sent = 0
        for message in messages:
            for subscriber in list(self._subscribers):
                if message.stream in subscriber.streams:
                    sent += await self._send(subscriber, subscriber.encode(
                        message.stream, message.data).decode())
        return sent

    async def deliver_raw(self, stream: str, text: str) -> int:
        """Send ``text`` verbatim to the followers of ``stream`` (malformed-input tests)."""
        sent = 0
        for subscriber in list(self._subscribers):
            if canonical_stream(stream) in subscriber.streams:
                sent += await self._send(subscriber, text)
        return sent

    async def _send(self, subscriber: Subscriber, text: str) -> int:
        try:
            await subscriber.connection.send(text)
        except ConnectionClosed:
            self._subscribers.discard(subscriber)
            return 0
        return 1

    async def drop_all(self, *, abrupt: bool) -> int:
        """Cut every connection: a TCP abort (a network failure) or a 1001 close frame."""
        dropped = list(self._subscribers)
        self._subscribers.clear()
        for subscriber in dropped:
            if abrupt:
                subscriber.connection.transport.abort()
            else:
                await subscriber.connection.close(1001, "stand-in going away")
        return len(dropped)


# --- REST ---------------------------------------------------------------------------------


RestExtension = Callable[[web.Application, MarketTape], None]


def binance_error(status: int, code: int, message: str) -> web.Response:
    """An error in Binance's shape: ``{"code": -1121, "msg": "Invalid symbol."}``."""
    return web.json_response({"code": code, "msg": message}, status=status)


def _int_parameter(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    return int(raw)  # ValueError is answered by the caller with -1100


def market_routes(app: web.Application, tape: MarketTape) -> None:
    """Public market data: ping, server time (the tape's clock) and klines."""

    async def ping(_: web.Request) -> web.Response:
        return web.json_response({})

    async def server_time(_: web.Request) -> web.Response:
        return web.json_response({"serverTime": tape.now_ms})

    async def klines(request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        if not symbol:
            return binance_error(400, -1102, "Mandatory parameter 'symbol' was not sent, "
                                 "was empty/null, or malformed.")
        if symbol not in tape.data:
            return binance_error(400, -1121, "Invalid symbol.")
        if request.query.get("interval") != tape.interval:
            return binance_error(400, -1120, "Invalid interval.")
        try:
            start_ms = _int_parameter(request, "startTime")
            end_ms = _int_parameter(request, "endTime")
            limit = _int_parameter(request, "limit") or KLINES_DEFAULT_LIMIT
        except ValueError:
            return binance_error(400, -1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= KLINES_MAX_LIMIT:
            return binance_error(400, -1130, "Data sent for parameter 'limit' is not valid.")
        return web.json_response(tape.klines(symbol, start_ms=start_ms, end_ms=end_ms,
                                             limit=limit))

    app.router.add_get("/fapi/v1/ping", ping)
    app.router.add_get("/fapi/v1/time", server_time)
    app.router.add_get("/fapi/v1/klines", klines)


# --- the stand-in ---------------------------------------------------------------------------


def _loopback_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


class BinanceStandIn(LoopThread):
    """Binance futures market streams and REST market data on 127.0.0.1, in a thread.

    Use as a context manager; point python-binance's futures stream URL at :attr:`ws_url`
    and its futures REST URL at :attr:`rest_url` + ``/fapi``. Every control method waits
    at most ``timeout`` seconds for the stand-in's loop and raises ``TimeoutError`` after.
    """

    def __init__(
        self,
        data_dir: Path,
        symbols: Sequence[str],
        interval: str = "5m",
        *,
        start_ms: int | None = None,
        rest_extensions: Sequence[RestExtension] = (),
        timeout: float = 10.0,
    ) -> None:
        self.tape = MarketTape(data_dir, symbols, interval, start_ms=start_ms)
        self.hub = StreamHub(self.tape)
        super().__init__(timeout=timeout, thread_name="binance-standin", what="stand-in")
        self.rest_requests: collections.Counter[str] = collections.Counter()
        self._rest_extensions: tuple[RestExtension, ...] = (market_routes, *rest_extensions)
        self._ws_server: Server | None = None
        self._rest_runner: web.AppRunner | None = None
        self.ws_url = ""
        self.rest_url = ""

    # --- lifecycle (the thread and its loop: LoopThread) ----------------------------------

    async def _start(self) -> None:
        self._ws_server = await serve(
            self.hub.serve_connection, "127.0.0.1", 0,
            process_request=self.hub.process_request, ping_interval=None,
        )
        ws_port = self._ws_server.sockets[0].getsockname()[1]
        self.ws_url = f"ws://127.0.0.1:{ws_port}/"
        app = web.Application(middlewares=[self._count_requests])
        for extend in self._rest_extensions:
            extend(app, self.tape)
        self._rest_runner = web.AppRunner(app, access_log=None)
        await self._rest_runner.setup()
        sock = _loopback_socket()
        await web.SockSite(self._rest_runner, sock).start()
        self.rest_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        log.info("standin_started", ws_url=self.ws_url, rest_url=self.rest_url,
                 symbols=list(self.tape.data))

    async def _stop(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        if self._rest_runner is not None:
            await self._rest_runner.cleanup()

    @web.middleware
    async def _count_requests(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.rest_requests[request.path] += 1
        return await handler(request)

    # --- control --------------------------------------------------------------------------

    def advance(self, bars: int = 1) -> int:
        """Close ``bars`` candles (and open the next); returns the frames sent."""

        async def step() -> int:
            sent = 0
            for _ in range(bars):
                sent += await self.hub.deliver(self.tape.advance())
            return sent

        return self._call(step)

    def inject(self, stream: str, data: Mapping[str, Any] | str) -> int:
        """Send an arbitrary event (wrapped like real ones) or raw text on ``stream``."""
        if isinstance(data, str):
            text = data
            return self._call(lambda: self.hub.deliver_raw(stream, text))
        message = StreamMessage(canonical_stream(stream), data)
        return self._call(lambda: self.hub.deliver([message]))

    def drop_connections(self, *, abrupt: bool = True) -> int:
        """Cut all current connections; returns how many there were."""
        return self._call(lambda: self.hub.drop_all(abrupt=abrupt))

    @contextmanager
    def offline(self, *, abrupt: bool = True) -> Iterator[None]:
        """Drop all connections and refuse new ones until the block ends."""

        async def go_offline() -> int:
            self.hub.online = False
            return await self.hub.drop_all(abrupt=abrupt)

        async def go_online() -> None:
            self.hub.online = True

        self._call(go_offline)
        try:
            yield
        finally:
            self._call(go_online)

    @property
    def connections(self) -> int:
        return self.hub.connections

    def wait_for_connections(self, accepted: int, timeout: float | None = None) -> None:
        """Block until ``accepted`` handshakes in total have been accepted since start."""
        limit = self.timeout if timeout is None else timeout
        with self.hub.accepted_changed:
            if not self.hub.accepted_changed.wait_for(
                lambda: self.hub.accepted >= accepted, limit
            ):
                raise TimeoutError(
                    f"{self.hub.accepted} connection(s) accepted, expected {accepted} "
                    f"within {limit} s"
                )
