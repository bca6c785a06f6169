"""What every venue feed shares: the session loop, reconnect with back-off, the watermark,
the dead-letter path and the fleet symbols.

A feed (:class:`VenueFeed`) runs sessions until stopped: connect the venue's public
WebSocket, subscribe, back-fill over REST what closed since the watermark (the open time of
the last candle published per symbol), then translate frames into events. A drop, a refused
subscription or a REST failure ends the session; the next one starts after an exponential
back-off and back-fills first, so a disconnect leaves no gap in the candles. A frame that
cannot be used (not JSON, an unknown shape, a field out of range, a symbol not subscribed)
is written to the dead-letter stream with the reason and the frame verbatim; the session
carries on.

:func:`run_feeds` runs several feeds on one event loop, each in its own task: an error in
one (even an unexpected one) is logged and that feed alone is restarted after a back-off,
so a venue that fails never stops the others.
"""

from __future__ import annotations

import asyncio
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
import structlog
from prometheus_client import Counter, Gauge
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from quantum.bus.envelope import Envelope
from quantum.exchange.venues.binance.market import keep_alive, sleep_unless

log = structlog.get_logger(component="cross-exchange")

#: Intervals both venues serve (Bybit's kline codes, Coinbase's candle granularities).
INTERVAL_MS: dict[str, int] = {
    "1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "6h": 21_600_000,
    "1d": 86_400_000,
}
FLEET_SYMBOL = re.compile(r"^([A-Z0-9]{1,16})(USDT|USDC)$")

POLL_SECONDS = 0.25
CONNECT_TIMEOUT_SECONDS = 10.0
REST_TIMEOUT_SECONDS = 10.0
REST_ATTEMPTS = 3
RECONNECT_BASE_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 60.0

MESSAGES = Counter("quantum_xex_messages_total", "Venue frames turned into events",
                   ["venue", "kind"])
DEAD_LETTERED = Counter("quantum_xex_dead_lettered_total",
                        "Malformed venue frames sent to the dead-letter stream", ["venue"])
RECONNECTS = Counter("quantum_xex_reconnects_total", "Venue sessions ended and retried",
                     ["venue"])
BACKFILLED = Counter("quantum_xex_backfilled_total", "Closed candles fetched over REST",
                     ["venue"])
CONNECTED = Gauge("quantum_xex_connected", "1 while the venue's WebSocket is subscribed",
                  ["venue"])
LAST_EVENT = Gauge("quantum_xex_last_event_timestamp_seconds",
                   "Venue time of the newest event published", ["venue"])

Item = tuple[Any, Envelope[Any]]  # (StreamSpec, envelope)


class Sink(Protocol):
    """Where a feed's events and dead letters go (Redis in the service, a list in tests)."""

    def publish(self, items: list[Item]) -> None: ...

    def dead_letter(self, venue: str, where: str, reason: str, frame: object) -> None: ...


class MalformedFrame(ValueError):
    """A frame that cannot be used; the message is the reason."""


class SessionEnded(RuntimeError):
    """The venue refused or broke the session (a refused subscription, a failed back-fill)."""


@dataclass(frozen=True, slots=True)
class Instrument:
    """A fleet symbol and the venue's own name for what prices it."""

    symbol: str  # BTCUSDT
    name: str  # BTCUSDT on Bybit, BTC-USD on Coinbase


def base_asset(symbol: str) -> str:
    """``BTCUSDT`` → ``BTC``; ValueError for what is not a fleet perpetual symbol."""
    match = FLEET_SYMBOL.fullmatch(symbol)
    if match is None:
        raise ValueError(f"invalid symbol {symbol!r}: a fleet symbol is like BTCUSDT")
    return match.group(1)


def preview(value: object, limit: int = 2000) -> str:
    text = value.decode(errors="replace") if isinstance(value, bytes) else (
        value if isinstance(value, str) else repr(value))
    return text if len(text) <= limit else text[:limit] + "…"


def parse_json(frame: object) -> dict[str, Any]:
    """A text frame as a JSON object; :class:`MalformedFrame` otherwise."""
    try:
        data = orjson.loads(frame) if isinstance(frame, str | bytes) else frame
    except orjson.JSONDecodeError as e:
        raise MalformedFrame(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise MalformedFrame(f"not a JSON object: {type(data).__name__}")
    return data


def validation_reason(what: str, error: Any) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "message"
    return f"{what} invalid at {where}: {first['msg']}"


class VenueFeed(ABC):
    """One venue's public market data as fleet events, until stopped."""

    venue: str = ""

    def __init__(self, instruments: Sequence[Instrument], interval: str, *, ws_url: str,
                 rest_url: str, source_name: str,
                 resume_from: Mapping[str, int] | None = None) -> None:
        if interval not in INTERVAL_MS:
            raise ValueError(f"unsupported interval {interval!r}; use one of "
                             f"{', '.join(INTERVAL_MS)}")
        if not ws_url.startswith(("ws://", "wss://")):
            raise ValueError(f"{self.venue} WebSocket URL must be ws:// or wss://: {ws_url!r}")
        if not rest_url.startswith(("http://", "https://")):
            raise ValueError(f"{self.venue} REST URL must be http:// or https://: {rest_url!r}")
        if not instruments:
            raise ValueError(f"{self.venue}: no symbols")
        self.instruments = tuple(instruments)
        self.by_name = {i.name: i for i in self.instruments}
        self.interval = interval
        self.interval_ms = INTERVAL_MS[interval]
        self.ws_url = ws_url
        self.rest_url = rest_url.rstrip("/")
        self.source_name = source_name
        #: per fleet symbol: open time of the last closed candle published
        self.watermark: dict[str, int | None] = {i.symbol: None for i in self.instruments}
        for symbol, open_time in (resume_from or {}).items():
            if symbol in self.watermark:
                self.watermark[symbol] = int(open_time)
        self.log = log.bind(venue=self.venue)
        self._http: aiohttp.ClientSession | None = None

    # --- what a venue provides ------------------------------------------------------------

    @abstractmethod
    async def subscribe(self, ws: ClientConnection) -> None:
        """Send the subscription request(s)."""

    @abstractmethod
    async def on_connected(self, sink: Sink, stop: threading.Event) -> None:
        """Back-fill once subscribed (REST), before any frame is handled."""

    @abstractmethod
    async def handle(self, frame: str | bytes, sink: Sink, stop: threading.Event) -> None:
        """Translate one frame and publish its events; :class:`MalformedFrame` if unusable."""

    async def on_quiet(self, ws: ClientConnection, sink: Sink, now: float) -> None:
        """Called about every :data:`POLL_SECONDS` (keep-alive pings)."""
        return None

    async def on_session_end(self) -> None:
        """Called when a session ends, however it ends (stop background work)."""
        return None

    # --- running --------------------------------------------------------------------------

    async def run(self, sink: Sink, stop: threading.Event) -> None:
        failures = 0
        try:
            while not stop.is_set():
                try:
                    streamed = await self._session(sink, stop)
                except (OSError, TimeoutError, WebSocketException, aiohttp.ClientError,
                        SessionEnded) as e:
                    self.log.warning("session_failed", error=f"{type(e).__name__}: {e}")
                    streamed = False
                finally:
                    CONNECTED.labels(self.venue).set(0)
                if stop.is_set():
                    break
                failures = 0 if streamed else failures + 1
                delay = min(RECONNECT_MAX_SECONDS, RECONNECT_BASE_SECONDS * 2 ** failures)
                RECONNECTS.labels(self.venue).inc()
                self.log.warning("reconnecting", in_seconds=delay, failures=failures)
                await sleep_unless(stop, delay)
        finally:
            if self._http is not None:
                await self._http.close()
                self._http = None

    async def _session(self, sink: Sink, stop: threading.Event) -> bool:
        try:
            return await self._connected_session(sink, stop)
        finally:
            await self.on_session_end()

    async def _connected_session(self, sink: Sink, stop: threading.Event) -> bool:
        self.log.info("connecting", url=self.ws_url)
        async with connect(self.ws_url, open_timeout=CONNECT_TIMEOUT_SECONDS,
                           close_timeout=2, ping_interval=20, max_size=2 ** 22) as ws:
            await self.subscribe(ws)
            CONNECTED.labels(self.venue).set(1)
            self.log.info("subscribed", symbols=[i.symbol for i in self.instruments])
            await self.on_connected(sink, stop)
            streamed = False
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                try:
                    frame = await asyncio.wait_for(ws.recv(), POLL_SECONDS)
                except TimeoutError:
                    await self.on_quiet(ws, sink, loop.time())
                    continue
                except ConnectionClosed as e:
                    self.log.warning("socket_closed", code=e.rcvd.code if e.rcvd else None)
                    return streamed
                try:
                    await self.handle(frame, sink, stop)
                    streamed = True
                except MalformedFrame as e:
                    self.dead_letter(sink, str(e), frame)
                await self.on_quiet(ws, sink, loop.time())
        return True

    def dead_letter(self, sink: Sink, reason: str, frame: object) -> None:
        DEAD_LETTERED.labels(self.venue).inc()
        self.log.warning("frame_dead_lettered", reason=reason, frame=preview(frame, 300))
        sink.dead_letter(self.venue, self.ws_url, reason, frame)

    # --- REST -----------------------------------------------------------------------------

    async def get_json(self, path: str, params: Mapping[str, str | int],
                       stop: threading.Event) -> Any:
        """GET ``rest_url + path`` as JSON, retried; :class:`SessionEnded` when it fails."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REST_TIMEOUT_SECONDS))
        error = ""
        for attempt in range(REST_ATTEMPTS):
            if stop.is_set():
                break
            try:
                async with self._http.get(self.rest_url + path,
                                          params={k: str(v) for k, v in params.items()},
                                          headers={"Accept": "application/json"}) as answer:
                    body = await answer.read()
                    if answer.status == 200:
                        try:
                            return orjson.loads(body)
                        except orjson.JSONDecodeError:
                            error = f"not JSON: {preview(body, 200)}"
                    else:
                        error = f"HTTP {answer.status}: {preview(body, 200)}"
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                error = f"{type(e).__name__}: {e}"
            self.log.warning("rest_request_failed", path=path, attempt=attempt + 1, error=error)
            await sleep_unless(stop, 0.25 * 2 ** attempt)
        raise SessionEnded(f"{self.venue} REST {path} failed: {error}")


async def _guarded(feed: VenueFeed, sink: Sink, stop: threading.Event) -> None:
    """Run one feed; an unexpected error restarts it alone after a back-off."""
    failures = 0
    while not stop.is_set():
        try:
            await feed.run(sink, stop)
            return
        except Exception as e:  # one venue's bug must not stop the others
            failures += 1
            delay = min(RECONNECT_MAX_SECONDS, RECONNECT_BASE_SECONDS * 2 ** failures)
            log.exception("feed_crashed", venue=feed.venue, error=f"{type(e).__name__}: {e}",
                          restart_in_seconds=delay)
            CONNECTED.labels(feed.venue).set(0)
            await sleep_unless(stop, delay)


async def run_feeds_async(feeds: Sequence[VenueFeed], sink: Sink, stop: threading.Event,
                          alive: Callable[[], None] | None = None) -> None:
    tasks = [asyncio.create_task(_guarded(feed, sink, stop)) for feed in feeds]
    if alive is not None:
        tasks.append(asyncio.create_task(keep_alive(alive, stop)))
    try:
        while not stop.is_set():
            await asyncio.sleep(POLL_SECONDS)
    finally:
        for task in tasks:
            if not task.done():
                await asyncio.wait({task}, timeout=5.0)
            if not task.done():
                task.cancel()


def run_feeds(feeds: Sequence[VenueFeed], sink: Sink, stop: threading.Event,
              alive: Callable[[], None] | None = None) -> None:
    """Run every feed (and ``alive`` each second) until ``stop`` is set."""
    asyncio.run(run_feeds_async(feeds, sink, stop, alive))
