"""The live market source: Binance USDⓈ-M futures klines and mark prices over WebSocket.

It publishes the same events as the replay source (:mod:`quantum.market.replay`), so the
fleet cannot tell them apart:

* a **closed** kline (``k.x``) becomes a :class:`~quantum.contracts.events.Kline` on
  ``market.klines``, envelope ``ts`` = close time, id keyed ``SYMBOL:interval:open_time`` —
  a candle delivered twice (a reconnect, a back-fill overlapping the stream) has one id,
  and is published once here anyway: each symbol keeps the open time of the last candle
  published (its *watermark*) and drops anything at or before it;
* every kline update and mark price update becomes a :class:`~quantum.contracts.events.Tick`
  on ``market.tick`` at the event time ``E`` (id keyed ``SYMBOL:E``): the last trade price
  in open/high/low/close, the latest mark price, and the funding rate on the first tick
  at or after a settlement time ``T`` that a mark price update announced earlier.

Transport is python-binance's own: :class:`binance.BinanceSocketManager` futures multiplex
socket (``<symbol>@kline_<interval>`` and ``<symbol>@markPrice``), whose
``ReconnectingWebsocket`` reconnects by itself after a drop. When it gives up (its read
loop ends) this source opens a new socket with exponential back-off. After any drop or
new connection, the first message's event time ``E`` — the exchange's clock — bounds a
REST back-fill (``Client.futures_klines``) of every candle that closed after the
watermark and before ``E``; the candle still forming is never taken for a closed one.
A closed candle that does not follow its symbol's watermark (a message lost without a
visible drop) triggers the same back-fill for that symbol.

A message with missing or malformed fields is logged and skipped. Bad symbols are
refused when the source is built.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import requests
import structlog
from binance import AsyncClient, BinanceSocketManager, Client
from binance.exceptions import BinanceAPIException, BinanceRequestException, ReadLoopClosed
from binance.ws.constants import WSListenerState
from prometheus_client import Counter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from websockets.exceptions import WebSocketException

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.streams import StreamSpec
from quantum.contracts.events import Finite, Kline, NonNegative, Positive, Tick
from quantum.contracts.streams import MARKET_KLINES, MARKET_TICK

log = structlog.get_logger(component="market-live")

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,20}$")

#: Binance kline intervals of fixed length (weeks and months are not: no back-fill grid).
INTERVAL_MS: dict[str, int] = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000,
    "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000, "3d": 259_200_000,
}

POLL_SECONDS = 0.25  # how often a quiet socket checks the stop flag
ALIVE_SECONDS = 1.0  # how often the running loop reports itself alive (watchdog, heartbeat)
BATCH_LINGER_SECONDS = 0.005  # frames arriving this close together form one batch
MAX_BATCH = 1000
CONNECT_TIMEOUT_SECONDS = 15.0
CLOSE_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 0.5  # python-binance's read wait; bounds how long a close takes
QUEUE_SIZE = 10_000  # python-binance drops the socket when its queue overflows
RECONNECT_BASE_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 60.0
REST_PAGE_LIMIT = 1500  # the most klines Binance returns per request
REST_ATTEMPTS = 3
REST_TIMEOUT_SECONDS = 10.0

Publish = Callable[[list[tuple[StreamSpec, Envelope[Any]]]], None]

MESSAGES = Counter("quantum_market_live_messages_total", "Stream messages handled", ["kind"])
SKIPPED = Counter("quantum_market_live_skipped_total", "Malformed stream messages skipped")
RECONNECTS = Counter("quantum_market_live_reconnects_total", "Socket drops and new connections")
BACKFILLED = Counter("quantum_market_live_backfilled_total", "Closed klines fetched over REST")
SUBSCRIPTION_CHANGES = Counter("quantum_market_live_subscription_changes_total",
                               "Symbol sets changed without a restart (the universe)")


class InvalidSymbol(ValueError):
    """A symbol that cannot be a Binance futures symbol in the fleet's contracts."""


# --- raw Binance messages -------------------------------------------------------------------
# Unknown fields are ignored rather than forbidden: Binance adds fields to its messages and
# that must not stop the feed. Everything read is typed and checked.


def _empty_is_none(value: object) -> object:
    return None if value == "" else value


class _Raw(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class RawKline(_Raw):
    open_time: int = Field(alias="t")
    close_time: int = Field(alias="T")
    symbol: str = Field(alias="s")
    interval: str = Field(alias="i")
    open: Positive = Field(alias="o")
    high: Positive = Field(alias="h")
    low: Positive = Field(alias="l")
    close: Positive = Field(alias="c")
    volume: NonNegative = Field(alias="v")
    closed: bool = Field(alias="x")


class KlineMessage(_Raw):
    event: Literal["kline"] = Field(alias="e")
    event_time: int = Field(alias="E")
    symbol: str = Field(alias="s")
    kline: RawKline = Field(alias="k")


class MarkPriceMessage(_Raw):
    event: Literal["markPriceUpdate"] = Field(alias="e")
    event_time: int = Field(alias="E")
    symbol: str = Field(alias="s")
    mark_price: Positive = Field(alias="p")
    funding_rate: Annotated[Finite | None, BeforeValidator(_empty_is_none)] = Field(
        default=None, alias="r"
    )
    next_funding_time: int = Field(default=0, alias="T")


@dataclass(frozen=True, slots=True)
class SocketError:
    """python-binance's in-band report that the socket failed (``{"e": "error"}``)."""

    kind: str
    message: str


Message = KlineMessage | MarkPriceMessage | SocketError


class MalformedMessage(ValueError):
    """A stream message that cannot be used; carries the reason for the log."""


def parse_message(raw: object) -> Message:
    """Unwrap a combined-stream frame and validate it. Raises :class:`MalformedMessage`."""
    if isinstance(raw, dict) and "stream" in raw and "data" in raw:
        raw = raw["data"]
    if not isinstance(raw, dict):
        raise MalformedMessage(f"not an object: {type(raw).__name__}")
    kind = raw.get("e")
    try:
        if kind == "kline":
            return KlineMessage.model_validate(raw)
        if kind == "markPriceUpdate":
            return MarkPriceMessage.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise MalformedMessage(f"{kind} invalid at {where}: {first['msg']}") from None
    if kind == "error":
        return SocketError(str(raw.get("type", "")), str(raw.get("m", "")))
    raise MalformedMessage(f"unexpected event type {kind!r}")


# --- translation into fleet events ------------------------------------------------------------


@dataclass
class SymbolState:
    """What the source remembers per symbol between messages."""

    watermark: int | None = None  # open time of the last closed candle published (or skipped)
    last_price: float | None = None
    mark_price: float | None = None
    funding_time: int | None = None  # settlement announced and not yet ticked
    funding_rate: float | None = None
    settled_time: int = 0  # the last settlement put on a tick
    last_event_time: int = 0  # newest exchange event time used for prices


@dataclass
class _PendingTick:
    close: float
    mark_price: float | None
    funding_rate: float | None


@dataclass
class Batch:
    """Events built from frames that arrived together; published in one call."""

    klines: list[Envelope[Any]] = field(default_factory=list)
    ticks: dict[tuple[str, int], _PendingTick] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.klines) + len(self.ticks)


def kline_envelope(
    symbol: str, interval: str, raw: RawKline, source_name: str
) -> Envelope[Any]:
    """The ``market.kline`` event of a closed candle, identical to replay's for the bar."""
    payload = Kline(
        symbol=symbol, interval=interval, open_time=raw.open_time, close_time=raw.close_time,
        open=raw.open, high=raw.high, low=raw.low, close=raw.close, volume=raw.volume,
        source="binance",
    )
    return new_envelope(payload, ts=raw.close_time, source=source_name,
                        key=f"{symbol}:{interval}:{raw.open_time}")


def tick_envelope(symbol: str, ts: int, tick: _PendingTick, source_name: str) -> Envelope[Any]:
    """The ``market.tick`` event of a live price: the last trade price in all four prices."""
    payload = Tick(
        symbol=symbol, ts=ts, open=tick.close, high=tick.close, low=tick.close,
        close=tick.close, mark_price=tick.mark_price, funding_rate=tick.funding_rate,
        source="binance",
    )
    return new_envelope(payload, ts=ts, source=source_name, key=f"{symbol}:{ts}")


def validate_symbols(symbols: Sequence[str]) -> tuple[str, ...]:
    """The symbols, checked; raises :class:`InvalidSymbol` naming the first bad one."""
    if isinstance(symbols, str):
        raise InvalidSymbol(f"symbols must be a sequence of names, got the string {symbols!r}")
    if not symbols:
        raise InvalidSymbol("no symbols to subscribe to")
    for symbol in symbols:
        if not isinstance(symbol, str) or not SYMBOL_PATTERN.fullmatch(symbol):
            hint = " (use upper case)" if isinstance(symbol, str) and symbol.upper() != symbol \
                else ""
            raise InvalidSymbol(
                f"invalid symbol {symbol!r}{hint}: a Binance futures symbol is 2 to 20 "
                f"upper-case letters or digits, e.g. BTCUSDT"
            )
    return tuple(dict.fromkeys(symbols))


class LiveSource:
    """Binance futures klines and mark prices, published as fleet events until stopped."""

    def __init__(
        self,
        symbols: Sequence[str],
        interval: str = "5m",
        *,
        testnet: bool = True,
        ws_url: str | None = None,
        rest_url: str | None = None,
        source_name: str = "market-publisher",
        resume_from: Mapping[str, int] | None = None,
    ) -> None:
        """Check the arguments; nothing connects until :meth:`run`.

        Args:
            symbols: futures symbols, upper case (``BTCUSDT``).
            interval: kline interval, one of :data:`INTERVAL_MS`.
            testnet: the futures testnet (default); mainnet only when False.
            ws_url: stream base URL replacing python-binance's (``ws://host:port/``),
                e.g. the local stand-in's.
            rest_url: REST base URL replacing python-binance's futures one; ``/fapi`` is
                appended as Binance's paths require.
            source_name: the ``source`` of the envelopes (the publishing service).
            resume_from: per symbol, the open time of the last candle already on the
                stream (read from it by the service at start): candles closed since are
                back-filled once connected, so a restart loses none. Without it, the
                first candle published is the first that closes after connecting.
        """
        self.symbols = validate_symbols(symbols)
        if interval not in INTERVAL_MS:
            raise ValueError(
                f"unsupported interval {interval!r}; use one of {', '.join(INTERVAL_MS)}"
            )
        if ws_url is not None and not ws_url.startswith(("ws://", "wss://")):
            raise ValueError(f"ws_url must be a ws:// or wss:// URL, got {ws_url!r}")
        if rest_url is not None and not rest_url.startswith(("http://", "https://")):
            raise ValueError(f"rest_url must be an http:// or https:// URL, got {rest_url!r}")
        self.interval = interval
        self.interval_ms = INTERVAL_MS[interval]
        self.testnet = testnet
        self.ws_url = None if ws_url is None else ws_url.rstrip("/") + "/"
        self.rest_url = None if rest_url is None else rest_url.rstrip("/")
        self.source_name = source_name
        self.streams = self._streams_of(self.symbols)
        self.state: dict[str, SymbolState] = {symbol: SymbolState() for symbol in self.symbols}
        self._wanted: tuple[str, ...] | None = None  # set by resubscribe(), from any thread
        self._wanted_lock = threading.Lock()
        for symbol, open_time in (resume_from or {}).items():
            if symbol not in self.state:
                raise InvalidSymbol(f"resume_from names {symbol!r}, which is not subscribed")
            self.state[symbol].watermark = int(open_time)
        self._needs_backfill = False
        self._rest: Client | None = None
        self.log = log.bind(symbols=list(self.symbols), interval=interval,
                            venue="testnet" if testnet else "mainnet")

    def _streams_of(self, symbols: Sequence[str]) -> list[str]:
        return [name for symbol in symbols
                for name in (f"{symbol.lower()}@kline_{self.interval}",
                             f"{symbol.lower()}@markPrice")]

    def resubscribe(self, symbols: Sequence[str]) -> bool:
        """Stream ``symbols`` from now on (the universe changed), without a restart: the
        socket is reopened with the new streams at once. A symbol kept keeps its
        watermark, so what closed meanwhile is back-filled; a new one starts with the
        first candle that closes after it is streamed. Thread-safe; False (nothing to do)
        when the set is the one streamed. Raises :class:`InvalidSymbol`."""
        wanted = validate_symbols(symbols)
        if set(wanted) == set(self.symbols):
            return False
        with self._wanted_lock:
            self._wanted = wanted
        return True

    def _take_subscription(self) -> bool:
        """Apply a pending :meth:`resubscribe`; whether the streams changed."""
        with self._wanted_lock:
            wanted, self._wanted = self._wanted, None
        if wanted is None or set(wanted) == set(self.symbols):
            return False
        added = [s for s in wanted if s not in self.state]
        dropped = [s for s in self.symbols if s not in wanted]
        self.symbols = wanted
        self.streams = self._streams_of(wanted)
        self.state = {s: self.state.get(s) or SymbolState() for s in wanted}
        SUBSCRIPTION_CHANGES.inc()
        self.log = log.bind(symbols=list(wanted), interval=self.interval,
                            venue="testnet" if self.testnet else "mainnet")
        self.log.info("subscription_changed", added=added, dropped=dropped)
        return True

    # --- running --------------------------------------------------------------------------

    def run(self, publish: Publish, stop: threading.Event,
            alive: Callable[[], None] | None = None) -> None:
        """Publish until ``stop`` is set, reconnecting with back-off on drops.

        An exception from ``publish`` (Redis gone) ends the run: the service exits and
        its supervisor restarts it, resuming from the stream (``resume_from``). ``alive``
        (the systemd watchdog, the heartbeat) is called every :data:`ALIVE_SECONDS` from
        the event loop, whatever the socket is doing (connecting, waiting out a back-off,
        quiet): a process whose loop turns is alive, with data or without; a loop that is
        stuck (a blocking call on it) stops calling it.
        """
        asyncio.run(self._run(publish, stop, alive))

    async def _run(self, publish: Publish, stop: threading.Event,
                   alive: Callable[[], None] | None = None) -> None:
        keeper = asyncio.create_task(keep_alive(alive, stop)) if alive is not None else None
        try:
            await self._sessions(publish, stop)
        finally:
            if keeper is not None:
                keeper.cancel()

    async def _sessions(self, publish: Publish, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            streamed = await self._session(publish, stop)
            if stop.is_set():
                break
            if self._take_subscription():
                continue  # a new set of streams, not a failure: reconnect at once
            failures = 0 if streamed else failures + 1
            delay = min(RECONNECT_MAX_SECONDS, RECONNECT_BASE_SECONDS * 2 ** failures)
            RECONNECTS.inc()
            self.log.warning("reconnecting", in_seconds=delay, failures=failures)
            await sleep_unless(stop, delay)
        self.log.info("live_source_stopped")

    async def _session(self, publish: Publish, stop: threading.Event) -> bool:
        """One socket's life; returns whether it delivered any message."""
        client = AsyncClient(testnet=self.testnet)
        try:
            manager = BinanceSocketManager(client, max_queue_size=QUEUE_SIZE)
            if self.ws_url is not None:
                manager.FSTREAM_URL = self.ws_url
                manager.FSTREAM_TESTNET_URL = self.ws_url
                manager.FSTREAM_DEMO_URL = self.ws_url
            stream_socket = manager.futures_multiplex_socket(self.streams)
            stream_socket.TIMEOUT = READ_TIMEOUT_SECONDS
            self.log.info("connecting", streams=len(self.streams))
            try:
                if not await _unless_stopped(stream_socket.__aenter__(), stop,
                                             CONNECT_TIMEOUT_SECONDS):
                    return False  # asked to stop while connecting
            except (OSError, TimeoutError, WebSocketException) as e:
                self.log.warning("connect_failed", error=f"{type(e).__name__}: {e}")
                return False
            self.log.info("connected", streams=len(self.streams))
            self._needs_backfill = True
            try:
                return await self._pump(stream_socket, publish, stop)
            finally:
                await self._close_socket(stream_socket, stop)
        finally:
            await client.close_connection()

    async def _close_socket(self, stream_socket: Any, stop: threading.Event) -> None:
        """Close python-binance's socket, unless that would wait on its reconnect attempts.

        Its close waits for the read loop to notice it should exit, which a reconnect in
        progress never does (the attempt resets the loop's state). When stopping in that
        state the socket is left to ``asyncio.run``, which cancels its read loop on return.
        """
        if stop.is_set() and stream_socket.ws_state is WSListenerState.RECONNECTING:
            self.log.info("socket_left_reconnecting_at_stop")
            return
        try:
            await asyncio.wait_for(stream_socket.__aexit__(None, None, None),
                                   CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            self.log.warning("socket_close_timed_out")

    async def _pump(self, stream_socket: Any, publish: Publish, stop: threading.Event) -> bool:
        streamed = False
        while not stop.is_set():
            if self._wanted is not None:
                self.log.info("resubscribing")
                return True
            try:
                frames = [await asyncio.wait_for(stream_socket.recv(), POLL_SECONDS)]
            except TimeoutError:
                continue
            except ReadLoopClosed:
                self.log.warning("socket_read_loop_closed")
                return streamed
            while len(frames) < MAX_BATCH:
                try:
                    frames.append(
                        await asyncio.wait_for(stream_socket.recv(), BATCH_LINGER_SECONDS)
                    )
                except (TimeoutError, ReadLoopClosed):
                    break
            batch = Batch()
            streamed = await self.handle_frames(frames, batch, stop) or streamed
            if batch:
                publish(self.events(batch))
        return streamed

    # --- frames to events ---------------------------------------------------------------------

    async def handle_frames(
        self, frames: Sequence[object], batch: Batch, stop: threading.Event
    ) -> bool:
        """Translate frames into ``batch``, back-filling first where needed.

        Returns whether any frame was a market message.
        """
        streamed = False
        for frame in frames:
            try:
                message = parse_message(frame)
            except MalformedMessage as e:
                SKIPPED.inc()
                self.log.warning("message_skipped", reason=str(e), frame=_preview(frame))
                continue
            if isinstance(message, SocketError):
                MESSAGES.labels("socket_error").inc()
                if not self._needs_backfill:
                    RECONNECTS.inc()
                self.log.warning("socket_dropped", error=message.kind, detail=message.message)
                self._needs_backfill = True
                continue
            if message.symbol not in self.state:
                SKIPPED.inc()
                self.log.warning("message_skipped", reason=f"unsubscribed symbol "
                                 f"{message.symbol!r}", frame=_preview(frame))
                continue
            streamed = True
            if self._needs_backfill:
                self._needs_backfill = False
                for symbol in self.symbols:
                    await self._backfill(symbol, message.event_time, batch, stop)
            if isinstance(message, KlineMessage):
                await self._on_kline(message, batch, stop)
            else:
                self._on_mark_price(message, batch)
        return streamed

    async def _on_kline(self, message: KlineMessage, batch: Batch, stop: threading.Event) -> None:
        MESSAGES.labels("kline").inc()
        raw = message.kline
        symbol = message.symbol
        if raw.interval != self.interval or raw.symbol != symbol:
            SKIPPED.inc()
            self.log.warning("message_skipped", reason="kline symbol or interval mismatch",
                             symbol=symbol, kline_symbol=raw.symbol, kline_interval=raw.interval)
            return
        state = self.state[symbol]
        if state.watermark is None:  # candles closed before we listened are not ours
            state.watermark = raw.open_time - self.interval_ms
        if raw.closed and raw.open_time > state.watermark + self.interval_ms:
            self.log.warning("kline_gap", symbol=symbol, after=state.watermark,
                             next_open_time=raw.open_time)
            await self._backfill(symbol, raw.open_time, batch, stop)
        if self._is_current(message.symbol, message.event_time, batch):
            state.last_price = raw.close
            self._add_tick(symbol, message.event_time, batch)
        if raw.closed and raw.open_time > state.watermark:
            if self._add_kline(symbol, raw, batch):
                state.watermark = raw.open_time

    def _on_mark_price(self, message: MarkPriceMessage, batch: Batch) -> None:
        MESSAGES.labels("mark_price").inc()
        state = self.state[message.symbol]
        if not self._is_current(message.symbol, message.event_time, batch):
            return
        state.mark_price = message.mark_price
        self._add_tick(message.symbol, message.event_time, batch)
        announced = message.next_funding_time
        if announced > message.event_time and announced > state.settled_time \
                and message.funding_rate is not None:
            state.funding_time = announced
            state.funding_rate = message.funding_rate

    def _is_current(self, symbol: str, event_time: int, batch: Batch) -> bool:
        """Whether a message is news: later than any seen, or of the instant being batched.

        An older message (a redelivery, or one stream lagging the other) must not move the
        last or mark price back in time; its closed candle is still judged by open time.
        """
        state = self.state[symbol]
        if event_time > state.last_event_time or (symbol, event_time) in batch.ticks:
            state.last_event_time = event_time
            return True
        MESSAGES.labels("stale").inc()
        return False

    def _add_tick(self, symbol: str, ts: int, batch: Batch) -> None:
        """Record the tick at ``ts``, merging the frames of one instant into one tick.

        No tick before the first trade price is known (a tick needs a price). The funding
        rate of an announced settlement goes on the first tick at or after its time.
        """
        state = self.state[symbol]
        if state.last_price is None:
            return
        existing = batch.ticks.get((symbol, ts))
        funding = existing.funding_rate if existing is not None else None
        if state.funding_time is not None and ts >= state.funding_time:
            funding = state.funding_rate
            state.settled_time = state.funding_time
            state.funding_time = None
        batch.ticks[(symbol, ts)] = _PendingTick(state.last_price, state.mark_price, funding)

    def _add_kline(self, symbol: str, raw: RawKline, batch: Batch) -> bool:
        try:
            batch.klines.append(kline_envelope(symbol, self.interval, raw, self.source_name))
        except ValidationError as e:
            SKIPPED.inc()
            self.log.warning("message_skipped", reason=f"kline invalid: {e.errors()[0]['msg']}",
                             symbol=symbol, open_time=raw.open_time)
            return False
        return True

    def events(self, batch: Batch) -> list[tuple[StreamSpec, Envelope[Any]]]:
        """The batch as ``(stream, envelope)`` pairs: ticks, then klines, each in order."""
        out: list[tuple[StreamSpec, Envelope[Any]]] = [
            (MARKET_TICK, tick_envelope(symbol, ts, tick, self.source_name))
            for (symbol, ts), tick in batch.ticks.items()
        ]
        out += [(MARKET_KLINES, envelope) for envelope in batch.klines]
        return out

    # --- back-fill ------------------------------------------------------------------------

    def rest_client(self) -> Client:
        """python-binance's REST client, without the network ping its constructor does."""
        if self._rest is None:
            client = Client(testnet=self.testnet, ping=False,
                            requests_params={"timeout": REST_TIMEOUT_SECONDS})
            if self.rest_url is not None:
                client.FUTURES_URL = client.FUTURES_TESTNET_URL = self.rest_url + "/fapi"
                client.FUTURES_DEMO_URL = self.rest_url + "/fapi"
            self._rest = client
        return self._rest

    async def _backfill(
        self, symbol: str, before_ms: int, batch: Batch, stop: threading.Event
    ) -> None:
        """Publish the candles of ``symbol`` closed after its watermark and before ``before_ms``.

        ``before_ms`` is an exchange time already seen, so every candle closing before it
        is final at the exchange; the forming candle closes later and is left alone.
        """
        state = self.state[symbol]
        if state.watermark is None:
            return
        fetched = 0
        while state.watermark + 2 * self.interval_ms - 1 < before_ms and not stop.is_set():
            start = state.watermark + self.interval_ms
            rows = await self._fetch_klines(symbol, start, before_ms - 1, stop)
            if rows is None:
                self.log.error("backfill_failed", symbol=symbol, gap_from=start,
                               gap_before=before_ms)
                return
            progressed = False
            for row in rows:
                raw = _rest_kline(symbol, self.interval, row)
                if raw is None:
                    SKIPPED.inc()
                    self.log.warning("backfill_row_skipped", symbol=symbol, row=_preview(row))
                    continue
                if raw.open_time <= state.watermark or raw.close_time >= before_ms:
                    continue
                if self._add_kline(symbol, raw, batch):
                    state.watermark = raw.open_time
                    progressed = True
                    fetched += 1
            if not progressed or len(rows) < REST_PAGE_LIMIT:
                break
        if fetched:
            BACKFILLED.inc(fetched)
            self.log.info("backfilled", symbol=symbol, klines=fetched, up_to=state.watermark)

    async def _fetch_klines(
        self, symbol: str, start_ms: int, end_ms: int, stop: threading.Event
    ) -> list[Any] | None:
        client = self.rest_client()
        for attempt in range(REST_ATTEMPTS):
            try:
                rows = await asyncio.to_thread(
                    client.futures_klines, symbol=symbol, interval=self.interval,
                    startTime=start_ms, endTime=end_ms, limit=REST_PAGE_LIMIT,
                )
            except (BinanceAPIException, BinanceRequestException, requests.RequestException) as e:
                self.log.warning("backfill_request_failed", symbol=symbol, attempt=attempt + 1,
                                 error=f"{type(e).__name__}: {e}")
                await sleep_unless(stop, 0.5 * 2 ** attempt)
                continue
            if isinstance(rows, list):
                return rows
            self.log.warning("backfill_unexpected_answer", symbol=symbol, answer=_preview(rows))
        return None


def _rest_kline(symbol: str, interval: str, row: object) -> RawKline | None:
    """A ``/fapi/v1/klines`` row (a list) as a closed :class:`RawKline`, or None if malformed."""
    if not isinstance(row, list) or len(row) < 7:
        return None
    try:
        return RawKline.model_validate({"t": row[0], "T": row[6], "s": symbol, "i": interval,
                                        "o": row[1], "h": row[2], "l": row[3], "c": row[4],
                                        "v": row[5], "x": True})
    except ValidationError:
        return None


def _preview(value: object, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


async def sleep_unless(stop: threading.Event, seconds: float) -> None:
    """Sleep ``seconds`` in short steps, returning early once ``stop`` is set."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not stop.is_set():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await asyncio.sleep(min(POLL_SECONDS, remaining))


async def keep_alive(alive: Callable[[], None], stop: threading.Event) -> None:
    """Call ``alive`` every :data:`ALIVE_SECONDS` while the event loop turns. An error from
    it (Redis briefly gone, for the heartbeat) is logged, never fatal: the publish path
    is what decides whether the bus is down."""
    while not stop.is_set():
        try:
            alive()
        except Exception as e:  # noqa: BLE001 - liveness must not end the feed
            log.warning("alive_failed", error=f"{type(e).__name__}: {e}")
        await asyncio.sleep(ALIVE_SECONDS)


async def _unless_stopped(awaitable: Any, stop: threading.Event, timeout: float) -> bool:
    """Await ``awaitable`` for at most ``timeout`` seconds (raising :class:`TimeoutError`),
    giving up early (False) once ``stop`` is set, so a SIGTERM during a connect that hangs
    ends the process promptly."""
    task = asyncio.ensure_future(awaitable)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not task.done():
            if stop.is_set():
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no connection within {timeout:.0f}s")
            await asyncio.wait({task}, timeout=min(POLL_SECONDS, remaining))
        task.result()
        return True
    finally:
        if not task.done():
            task.cancel()
