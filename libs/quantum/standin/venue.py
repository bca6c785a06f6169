"""What the Bybit and Coinbase stand-ins share: recorded bars as another venue's market, a
WebSocket server and a REST server on 127.0.0.1 in a background thread, and the controls a
test needs (advance the market, go offline, drop connections, send a raw frame).

The bars are the sample data's (:func:`quantum.replay.data.load_symbol`, the same numbers
the Binance stand-in and the replay play) scaled by a venue factor, so the venue's prices
differ from Binance's by a known, constant ratio: a test can check a derived basis exactly.
The market moves only when told to (:meth:`VenueStandIn.advance`).
"""

from __future__ import annotations

import socket
import threading
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import structlog
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from quantum.replay.data import INTERVAL_MS, load_symbol
from quantum.standin._loop import LoopThread

log = structlog.get_logger(component="venue-standin")


def decimal_text(value: float) -> str:
    """A float as venues write decimals: positional, no exponent."""
    return str(np.format_float_positional(value, trim="-"))


class Bars:
    """One symbol's recorded bars, scaled; ``index`` is the bar forming now."""

    def __init__(self, data_dir: Path, symbol: str, interval: str, factor: float,
                 start_ms: int | None) -> None:
        data = load_symbol(data_dir, symbol, interval=interval, start_ms=start_ms)
        self.symbol = symbol
        self.open_time = [int(t) for t in data.open_time]
        self.ohlcv = [[float(v) * (factor if k < 4 else 1.0) for k, v in enumerate(row)]
                      for row in data.ohlcv]
        self.funding = dict(sorted(data.funding.items()))
        self.index = 0


class VenueStandIn(LoopThread):
    """A venue's WebSocket and REST market data, run as a context manager."""

    name = "venue"
    ws_path = "/"

    def __init__(self, data_dir: Path, symbols: Sequence[str], interval: str = "5m", *,
                 factor: float = 1.0, start_ms: int | None = None,
                 timeout: float = 10.0) -> None:
        self.interval = interval
        self.interval_ms = INTERVAL_MS[interval]
        self.bars = {s: Bars(data_dir, s, interval, factor, start_ms) for s in symbols}
        super().__init__(timeout=timeout, thread_name=f"{self.name}-standin",
                         what=f"{self.name} stand-in")
        self.online = True
        self.rest_online = True  # False: REST refuses (503) while the WebSocket goes on
        self.clients: dict[ServerConnection, set[str]] = {}  # connection → subscribed topics
        self.accepted = 0
        self.rest_requests: dict[str, int] = {}
        self.accepted_changed = threading.Condition()
        self._ws_server: Server | None = None
        self._rest_runner: web.AppRunner | None = None
        self.ws_url = ""
        self.rest_url = ""

    # --- what a venue provides ------------------------------------------------------------

    @abstractmethod
    async def on_client_message(self, connection: ServerConnection, message: Any) -> None:
        """A request from a client (subscribe, ping)."""

    @abstractmethod
    def routes(self, app: web.Application) -> None:
        """Add the venue's REST routes."""

    @abstractmethod
    def close_bar(self, bars: Bars) -> list[tuple[str, dict[str, Any]]]:
        """Close ``bars``' forming bar: the (topic, message) pushes it causes."""

    # --- lifecycle (the thread and its loop: LoopThread) ----------------------------------

    async def _start(self) -> None:
        self._ws_server = await serve(self._serve, "127.0.0.1", 0,
                                      process_request=self._process_request,
                                      ping_interval=None)
        port = self._ws_server.sockets[0].getsockname()[1]
        self.ws_url = f"ws://127.0.0.1:{port}{self.ws_path}"
        app = web.Application(middlewares=[self._gate])
        self.routes(app)
        self._rest_runner = web.AppRunner(app, access_log=None)
        await self._rest_runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._rest_runner, sock).start()
        self.rest_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        log.info("standin_started", venue=self.name, ws_url=self.ws_url,
                 rest_url=self.rest_url)

    async def _stop(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        if self._rest_runner is not None:
            await self._rest_runner.cleanup()

    # --- servers --------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self.online:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "offline\n")
        if request.path.split("?")[0] != self.ws_path:
            return connection.respond(HTTPStatus.NOT_FOUND, "no such stream\n")
        return None

    async def _serve(self, connection: ServerConnection) -> None:
        self.clients[connection] = set()
        with self.accepted_changed:
            self.accepted += 1
            self.accepted_changed.notify_all()
        try:
            async for text in connection:
                try:
                    message = orjson.loads(text)
                except orjson.JSONDecodeError:
                    continue
                await self.on_client_message(connection, message)
        except ConnectionClosed:
            pass
        finally:
            self.clients.pop(connection, None)

    @web.middleware
    async def _gate(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if not (self.online and self.rest_online):
            return web.Response(status=503, text="offline")
        self.rest_requests[request.path] = self.rest_requests.get(request.path, 0) + 1
        return await handler(request)

    async def send(self, connection: ServerConnection, message: dict[str, Any]) -> None:
        try:
            await connection.send(orjson.dumps(message).decode())
        except ConnectionClosed:
            self.clients.pop(connection, None)

    async def broadcast(self, pushes: list[tuple[str, dict[str, Any]]]) -> int:
        sent = 0
        for topic, message in pushes:
            for connection, topics in list(self.clients.items()):
                if topic in topics:
                    await self.send(connection, message)
                    sent += 1
        return sent

    # --- control --------------------------------------------------------------------------

    def advance(self, bars: int = 1) -> int:
        """Close ``bars`` bars of every symbol; returns the frames sent."""

        async def step() -> int:
            sent = 0
            for _ in range(bars):
                for symbol_bars in self.bars.values():
                    pushes = self.close_bar(symbol_bars)
                    symbol_bars.index += 1
                    sent += await self.broadcast(pushes)
            return sent

        return self._call(step)

    def send_raw(self, text: str) -> int:
        """Send ``text`` verbatim to every connection; returns how many got it."""

        async def go() -> int:
            for connection in list(self.clients):
                try:
                    await connection.send(text)
                except ConnectionClosed:
                    self.clients.pop(connection, None)
            return len(self.clients)

        return self._call(go)

    def drop_connections(self) -> int:
        async def go() -> int:
            connections = list(self.clients)
            for connection in connections:
                connection.transport.abort()
            return len(connections)

        return self._call(go)

    @contextmanager
    def offline(self) -> Iterator[None]:
        """Drop every connection and refuse WebSocket and REST until the block ends."""
        self.online = False
        self.drop_connections()
        try:
            yield
        finally:
            self.online = True

    def subscribed(self) -> int:
        """Connections holding at least one subscription."""
        return sum(1 for topics in self.clients.values() if topics)

    def wait_for_connections(self, accepted: int, timeout: float | None = None) -> None:
        limit = self.timeout if timeout is None else timeout
        with self.accepted_changed:
            if not self.accepted_changed.wait_for(lambda: self.accepted >= accepted, limit):
                raise TimeoutError(f"{self.accepted} connection(s) accepted, expected "
                                   f"{accepted} within {limit} s")

    def closed_bar(self, symbol: str, back: int = 1) -> tuple[int, list[float]]:
        """(open time, [o, h, l, c, v]) of the bar closed ``back`` bars ago."""
        bars = self.bars[symbol]
        i = bars.index - back
        return bars.open_time[i], bars.ohlcv[i]

    def clock(self, symbol: str) -> int:
        """The venue's time: the open of the bar forming now."""
        bars = self.bars[symbol]
        return bars.open_time[bars.index]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status,
                        content_type="application/json")
