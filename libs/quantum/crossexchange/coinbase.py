"""Coinbase Exchange spot: the public ticker over WebSocket and candles over REST.

WebSocket (``wss://ws-feed.exchange.coinbase.com``): one ``{"type": "subscribe",
"product_ids": [...], "channels": ["ticker", "heartbeat"]}``, answered by a
``subscriptions`` message (an ``error`` message refuses it). A ``ticker`` message (every
match) carries ``product_id``, ``price``, ``time`` (ISO 8601) and a per-product
``sequence``; a ``heartbeat`` (every second per product) carries ``time`` too, so the
exchange's clock is known when a product is quiet.

* a ticker → :class:`~quantum.contracts.events.VenueTick` at its ``time``, filed under the
  fleet symbol whose base asset it prices (``BTC-USD`` → ``BTCUSDT``); a ticker whose
  sequence is not newer than the last one seen (a redelivery) is dropped;
* candles: the Exchange feed has no candle channel, so ``/products/<id>/candles`` (rows
  ``[time, low, high, open, close, volume]``, newest first, at most 300) is read at each
  connect and whenever the exchange's clock passes the close of the next candle plus
  :data:`SETTLE_MS`. A candle Coinbase does not return (no trade in the interval) is not
  invented; the watermark moves past it. When REST fails the ticker goes on and the
  candles are caught up from the watermark :data:`CANDLES_RETRY_SECONDS` later.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from websockets.asyncio.client import ClientConnection

from quantum.bus.envelope import Envelope, new_envelope
from quantum.contracts.events import NonNegative, Positive, VenueKline, VenueTick
from quantum.contracts.streams import EXCHANGE_NORMALIZED
from quantum.crossexchange.feed import (
    BACKFILLED,
    LAST_EVENT,
    MESSAGES,
    POLL_SECONDS,
    Instrument,
    MalformedFrame,
    SessionEnded,
    Sink,
    VenueFeed,
    base_asset,
    parse_json,
    validation_reason,
)

VENUE = "coinbase"
WS_URL = "wss://ws-feed.exchange.coinbase.com"
REST_URL = "https://api.exchange.coinbase.com"
CANDLES_PAGE = 300
SETTLE_MS = 5_000  # how long after a candle's close Coinbase is given to have it
CANDLES_RETRY_SECONDS = 30.0


class _Raw(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class TickerMessage(_Raw):
    product_id: str
    price: Positive
    time: datetime
    sequence: int


class RawCandle(_Raw):
    start: int
    open: Positive
    high: Positive
    low: Positive
    close: Positive
    volume: NonNegative


def instruments(symbols: Sequence[str], quote: str = "USD") -> list[Instrument]:
    """``BTCUSDT`` → ``BTC-USD`` (the spot product that prices it in ``quote``)."""
    return [Instrument(symbol, f"{base_asset(symbol)}-{quote}")
            for symbol in dict.fromkeys(symbols)]


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("time without a time zone")
    return int(moment.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CoinbaseFeed(VenueFeed):
    venue = VENUE

    def __init__(self, symbols: Sequence[str], interval: str = "5m", *,
                 ws_url: str = WS_URL, rest_url: str = REST_URL, quote: str = "USD",
                 source_name: str = "cross-exchange-aggregator",
                 resume_from: Mapping[str, int] | None = None) -> None:
        super().__init__(instruments(symbols, quote), interval, ws_url=ws_url,
                         rest_url=rest_url, source_name=source_name, resume_from=resume_from)
        self.granularity = self.interval_ms // 1000
        self.sequence: dict[str, int] = {}
        self.clock_ms = 0  # the exchange's newest time seen
        self._due_candles = True  # at each connect: catch up whatever closed meanwhile
        self._retry_at = 0.0  # loop time before which a failed candle request is not retried
        self._poller: asyncio.Task[None] | None = None

    async def subscribe(self, ws: ClientConnection) -> None:
        await ws.send(orjson.dumps({
            "type": "subscribe", "product_ids": [i.name for i in self.instruments],
            "channels": ["ticker", "heartbeat"]}).decode())
        while True:
            answer = parse_json(await ws.recv())
            if answer.get("type") == "subscriptions":
                return
            if answer.get("type") == "error":
                raise SessionEnded(f"subscription refused: {answer.get('message')!r} "
                                   f"{answer.get('reason')!r}")

    async def on_connected(self, sink: Sink, stop: threading.Event) -> None:
        self.sequence.clear()  # sequences may restart with a new connection
        self._due_candles = True
        self._poller = asyncio.create_task(self._poll_loop(sink, stop))

    async def on_session_end(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None

    async def _poll_loop(self, sink: Sink, stop: threading.Event) -> None:
        """Candles beside the socket: a slow or failing REST never holds the ticker."""
        while not stop.is_set():
            try:
                await self._poll_candles(sink, stop)
            except Exception as e:  # a bug here must not end the ticker either
                self.log.exception("candle_poll_failed", error=f"{type(e).__name__}: {e}")
                self._retry_at = asyncio.get_running_loop().time() + CANDLES_RETRY_SECONDS
            await asyncio.sleep(POLL_SECONDS)

    async def handle(self, frame: str | bytes, sink: Sink, stop: threading.Event) -> None:
        message = parse_json(frame)
        kind = message.get("type")
        if kind == "heartbeat":
            product = message.get("product_id")
            if product not in self.by_name:
                raise MalformedFrame(f"heartbeat for unsubscribed product {product!r}")
            self._advance_clock(message.get("time"))
        elif kind == "ticker":
            self._on_ticker(message, sink)
        elif kind == "subscriptions":
            return
        elif kind == "error":
            raise MalformedFrame(f"venue error: {message.get('message')!r}")
        else:
            raise MalformedFrame(f"unexpected message type {kind!r}")

    def _advance_clock(self, text: object) -> None:
        if not isinstance(text, str):
            raise MalformedFrame("heartbeat without time")
        try:
            moment = _ms(datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError as e:
            raise MalformedFrame(f"heartbeat time {text!r}: {e}") from None
        self._observe_clock(moment)

    def _observe_clock(self, ms: int) -> None:
        """The venue's time moved; a symbol with no watermark yet starts from the last
        candle closed at the first time seen (as the other feeds do)."""
        self.clock_ms = max(self.clock_ms, ms)
        for symbol, mark in self.watermark.items():
            if mark is None:
                self.watermark[symbol] = self._last_closed_open() - self.interval_ms

    def _on_ticker(self, message: dict[str, Any], sink: Sink) -> None:
        try:
            ticker = TickerMessage.model_validate(message)
            ts = _ms(ticker.time)
        except ValidationError as e:
            raise MalformedFrame(validation_reason("ticker", e)) from None
        except ValueError as e:
            raise MalformedFrame(f"ticker time: {e}") from None
        instrument = self.by_name.get(ticker.product_id)
        if instrument is None:
            raise MalformedFrame(f"ticker for unsubscribed product {ticker.product_id!r}")
        self._observe_clock(ts)
        if ticker.sequence <= self.sequence.get(ticker.product_id, -1):
            MESSAGES.labels(VENUE, "stale").inc()
            return
        self.sequence[ticker.product_id] = ticker.sequence
        MESSAGES.labels(VENUE, "ticker").inc()
        price = ticker.price
        payload = VenueTick(venue=VENUE, instrument=instrument.name, symbol=instrument.symbol,
                            ts=ts, open=price, high=price, low=price, close=price)
        sink.publish([(EXCHANGE_NORMALIZED, new_envelope(
            payload, ts=ts, source=self.source_name,
            key=f"{VENUE}:{instrument.symbol}:{ticker.sequence}"))])
        LAST_EVENT.labels(VENUE).set(ts / 1000)

    # --- candles --------------------------------------------------------------------------

    def _last_closed_open(self) -> int:
        """Open time of the newest candle closed at least SETTLE_MS ago on the venue clock."""
        return ((self.clock_ms - SETTLE_MS) // self.interval_ms - 1) * self.interval_ms

    async def _poll_candles(self, sink: Sink, stop: threading.Event) -> None:
        if self.clock_ms == 0:
            return
        newest = self._last_closed_open()
        due = self._due_candles or any(
            mark is None or mark < newest for mark in self.watermark.values())
        if not due:
            return
        loop_time = asyncio.get_running_loop().time()
        if loop_time < self._retry_at:
            return
        try:
            self._due_candles = False
            for instrument in self.instruments:
                await self._candles(instrument, newest, sink, stop)
        except SessionEnded as e:
            # REST down: the ticker goes on; the candles are caught up (from the unchanged
            # watermark) once REST answers again
            self._retry_at = loop_time + CANDLES_RETRY_SECONDS
            self.log.warning("candles_deferred", error=str(e),
                             retry_in_seconds=CANDLES_RETRY_SECONDS)

    async def _candles(self, instrument: Instrument, newest: int, sink: Sink,
                       stop: threading.Event) -> None:
        symbol = instrument.symbol
        if self.watermark[symbol] is None:
            self.watermark[symbol] = newest - self.interval_ms  # from the last closed one
        fetched = 0
        while not stop.is_set():
            mark = self.watermark[symbol]
            assert mark is not None
            start = mark + self.interval_ms
            if start > newest:
                break
            end = min(newest, start + (CANDLES_PAGE - 1) * self.interval_ms)
            rows = await self.get_json(f"/products/{instrument.name}/candles", {
                "granularity": self.granularity, "start": _iso(start), "end": _iso(end)}, stop)
            if not isinstance(rows, list):
                raise SessionEnded(f"coinbase candles: not a list: {str(rows)[:200]}")
            candles = []
            for row in rows:
                candle = _rest_candle(row)
                if candle is None:
                    self.dead_letter(sink, "candle REST row malformed", orjson.dumps(row))
                elif start <= candle.start <= end and candle.start % self.interval_ms == 0:
                    candles.append(candle)
            candles.sort(key=lambda c: c.start)
            if candles:
                sink.publish([(EXCHANGE_NORMALIZED, self._kline(instrument, c))
                              for c in candles])
                fetched += len(candles)
            self.watermark[symbol] = end  # an interval Coinbase has no candle for stays empty
        if fetched:
            BACKFILLED.labels(VENUE).inc(fetched)
            LAST_EVENT.labels(VENUE).set((self.watermark[symbol] or 0) / 1000)
            self.log.info("candles", symbol=symbol, klines=fetched,
                          up_to=self.watermark[symbol])

    def _kline(self, instrument: Instrument, candle: RawCandle) -> Envelope[Any]:
        close_time = candle.start + self.interval_ms - 1
        payload = VenueKline(
            venue=VENUE, instrument=instrument.name, symbol=instrument.symbol,
            interval=self.interval, open_time=candle.start, close_time=close_time,
            open=candle.open, high=candle.high, low=candle.low, close=candle.close,
            volume=candle.volume,
        )
        return new_envelope(payload, ts=close_time, source=self.source_name,
                            key=f"{VENUE}:{instrument.symbol}:{self.interval}:{candle.start}")


def _rest_candle(row: object) -> RawCandle | None:
    """A candles row ``[time (s), low, high, open, close, volume]``."""
    if not isinstance(row, list) or len(row) < 6:
        return None
    try:
        return RawCandle(start=int(row[0]) * 1000, low=row[1], high=row[2], open=row[3],
                         close=row[4], volume=row[5])
    except (ValueError, TypeError, ValidationError):
        return None
