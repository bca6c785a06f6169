"""Bybit v5 linear perpetuals: public klines, tickers and funding as fleet events.

WebSocket ``/v5/public/linear``: ``{"op": "subscribe", "args": [...]}`` with the topics
``kline.<interval>.<SYMBOL>`` and ``tickers.<SYMBOL>``; the venue answers each request
(``{"op": "subscribe", "success": …}``) and a ``{"op": "ping"}`` every 20 s keeps the
connection. A kline push carries a ``data`` list of candles, ``confirm: true`` on the
candle's final update; a ticker push is a ``snapshot`` (every field) or a ``delta`` (the
fields that changed), merged here per symbol.

* a confirmed candle → :class:`~quantum.contracts.events.VenueKline`, id keyed
  ``bybit:SYMBOL:interval:start`` (published once: the watermark drops repeats);
* a ticker push → :class:`~quantum.contracts.events.VenueTick` at the push's ``ts``: last
  price, mark and index price, the current funding rate and the next settlement time;
* a settlement (the first ticker at or after the announced ``nextFundingTime``, and at
  every connect) → ``/v5/market/funding/history`` → :class:`~quantum.contracts.events.
  VenueFunding` for each settlement after the last one published.

Back-fill: at each connect and when a confirmed candle does not follow the watermark,
``/v5/market/kline`` pages (newest first, up to 1000 rows) are read from the watermark on;
a row is taken as closed only when its end is before the answer's server ``time``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from websockets.asyncio.client import ClientConnection

from quantum.bus.envelope import Envelope, new_envelope
from quantum.contracts.events import (
    Finite,
    NonNegative,
    Positive,
    VenueFunding,
    VenueKline,
    VenueTick,
)
from quantum.contracts.streams import EXCHANGE_NORMALIZED
from quantum.crossexchange.feed import (
    BACKFILLED,
    LAST_EVENT,
    MESSAGES,
    Instrument,
    MalformedFrame,
    SessionEnded,
    Sink,
    VenueFeed,
    base_asset,
    parse_json,
    validation_reason,
)

VENUE = "bybit"
WS_URL = "wss://stream.bybit.com/v5/public/linear"
REST_URL = "https://api.bybit.com"
INTERVAL_CODE = {"1m": "1", "5m": "5", "15m": "15", "1h": "60", "6h": "360", "1d": "D"}
KLINE_PAGE = 1000
FUNDING_PAGE = 200
ARGS_PER_REQUEST = 10
PING_SECONDS = 20.0


class _Raw(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class RawCandle(_Raw):
    start: int
    end: int
    interval: str
    open: Positive
    high: Positive
    low: Positive
    close: Positive
    volume: NonNegative
    confirm: bool = True


class TickerFields(_Raw):
    """A ticker push's fields: all optional, since a delta carries only what changed."""

    symbol: str
    last_price: Positive | None = Field(default=None, alias="lastPrice")
    mark_price: Positive | None = Field(default=None, alias="markPrice")
    index_price: Positive | None = Field(default=None, alias="indexPrice")
    funding_rate: Finite | None = Field(default=None, alias="fundingRate")
    next_funding_time: int | None = Field(default=None, alias="nextFundingTime")


class FundingRow(_Raw):
    symbol: str
    funding_rate: Finite = Field(alias="fundingRate")
    funding_time: int = Field(alias="fundingRateTimestamp")


def instruments(symbols: Sequence[str]) -> list[Instrument]:
    """Bybit names its USDT perpetuals as the fleet does."""
    for symbol in symbols:
        base_asset(symbol)
    return [Instrument(symbol, symbol) for symbol in dict.fromkeys(symbols)]


def kline_event(instrument: Instrument, interval: str, candle: RawCandle,
                source_name: str) -> Envelope[Any]:
    payload = VenueKline(
        venue=VENUE, instrument=instrument.name, symbol=instrument.symbol, interval=interval,
        open_time=candle.start, close_time=candle.end, open=candle.open, high=candle.high,
        low=candle.low, close=candle.close, volume=candle.volume,
    )
    return new_envelope(payload, ts=candle.end, source=source_name,
                        key=f"{VENUE}:{instrument.symbol}:{interval}:{candle.start}")


class BybitFeed(VenueFeed):
    venue = VENUE

    def __init__(self, symbols: Sequence[str], interval: str = "5m", *,
                 ws_url: str = WS_URL, rest_url: str = REST_URL,
                 source_name: str = "cross-exchange-aggregator",
                 resume_from: Mapping[str, int] | None = None,
                 funding_from: Mapping[str, int] | None = None) -> None:
        super().__init__(instruments(symbols), interval, ws_url=ws_url, rest_url=rest_url,
                         source_name=source_name, resume_from=resume_from)
        self.code = INTERVAL_CODE[interval]
        self.topics = {f"kline.{self.code}.{i.name}": i for i in self.instruments}
        self.topics |= {f"tickers.{i.name}": i for i in self.instruments}
        self.tickers: dict[str, dict[str, Any]] = {}
        self.funded: dict[str, int] = {i.symbol: 0 for i in self.instruments}
        for symbol, funding_time in (funding_from or {}).items():
            if symbol in self.funded:
                self.funded[symbol] = int(funding_time)
        self.next_funding: dict[str, int] = {}  # settlement announced, not yet asked for
        self.asked: dict[str, int] = {}
        self._last_ping = 0.0

    # --- session --------------------------------------------------------------------------

    async def subscribe(self, ws: ClientConnection) -> None:
        topics = list(self.topics)
        pending = set()
        for n in range(0, len(topics), ARGS_PER_REQUEST):
            request_id = f"sub-{n // ARGS_PER_REQUEST}"
            pending.add(request_id)
            await ws.send(orjson.dumps({"op": "subscribe", "req_id": request_id,
                                        "args": topics[n:n + ARGS_PER_REQUEST]}).decode())
        while pending:  # the answers come before any push of the topics
            answer = parse_json(await ws.recv())
            if answer.get("op") != "subscribe":
                continue
            if answer.get("success") is not True:
                raise SessionEnded(f"subscription refused: {answer.get('ret_msg')!r}")
            pending.discard(str(answer.get("req_id")))
        self.tickers.clear()  # a new connection starts from snapshots

    async def on_connected(self, sink: Sink, stop: threading.Event) -> None:
        for instrument in self.instruments:
            await self._backfill(instrument, None, sink, stop)
            await self._funding(instrument, sink, stop)

    async def on_quiet(self, ws: ClientConnection, sink: Sink, now: float) -> None:
        if now - self._last_ping >= PING_SECONDS:
            self._last_ping = now
            await ws.send('{"op":"ping"}')

    # --- frames ---------------------------------------------------------------------------

    async def handle(self, frame: str | bytes, sink: Sink, stop: threading.Event) -> None:
        message = parse_json(frame)
        if "op" in message:  # pong, late subscription answers
            if message.get("success") is False:
                raise MalformedFrame(f"venue refused {message.get('op')!r}: "
                                     f"{message.get('ret_msg')!r}")
            return
        topic = message.get("topic")
        if not isinstance(topic, str) or topic not in self.topics:
            raise MalformedFrame(f"unexpected topic {topic!r}")
        ts = message.get("ts")
        if not isinstance(ts, int) or isinstance(ts, bool) or ts <= 0:
            raise MalformedFrame(f"{topic}: no valid ts")
        instrument = self.topics[topic]
        if topic.startswith("kline."):
            await self._on_kline(instrument, message.get("data"), sink, stop)
        else:
            await self._on_ticker(instrument, message, ts, sink, stop)

    async def _on_kline(self, instrument: Instrument, data: object, sink: Sink,
                        stop: threading.Event) -> None:
        if not isinstance(data, list) or not data:
            raise MalformedFrame("kline: data is not a non-empty list")
        try:
            candles = [RawCandle.model_validate(item) for item in data]
        except ValidationError as e:
            raise MalformedFrame(validation_reason("kline", e)) from None
        for candle in candles:
            if candle.interval != self.code or candle.end != candle.start + self.interval_ms - 1:
                raise MalformedFrame(f"kline: interval {candle.interval!r} or span "
                                     f"{candle.start}..{candle.end} is not {self.interval}")
        MESSAGES.labels(VENUE, "kline").inc()
        symbol = instrument.symbol
        for candle in candles:
            if not candle.confirm:
                continue
            mark = self.watermark[symbol]
            if mark is None:
                mark = self.watermark[symbol] = candle.start - self.interval_ms
            if candle.start > mark + self.interval_ms:
                self.log.warning("kline_gap", symbol=symbol, after=mark,
                                 next_open_time=candle.start)
                await self._backfill(instrument, candle.start, sink, stop)
            if candle.start > (self.watermark[symbol] or 0):
                sink.publish([(EXCHANGE_NORMALIZED, kline_event(instrument, self.interval,
                                                                candle, self.source_name))])
                self.watermark[symbol] = candle.start
                LAST_EVENT.labels(VENUE).set(candle.end / 1000)

    async def _on_ticker(self, instrument: Instrument, message: dict[str, Any], ts: int,
                         sink: Sink, stop: threading.Event) -> None:
        data = message.get("data")
        kind = message.get("type")
        if not isinstance(data, dict) or kind not in ("snapshot", "delta"):
            raise MalformedFrame(f"tickers: type {kind!r} with data {type(data).__name__}")
        if data.get("symbol") != instrument.name:
            raise MalformedFrame(f"tickers: symbol {data.get('symbol')!r} on "
                                 f"{message.get('topic')}")
        merged = dict(data) if kind == "snapshot" else {**self.tickers.get(instrument.symbol,
                                                                            {}), **data}
        try:
            fields = TickerFields.model_validate(merged)
        except ValidationError as e:
            raise MalformedFrame(validation_reason("tickers", e)) from None
        self.tickers[instrument.symbol] = merged
        MESSAGES.labels(VENUE, "ticker").inc()
        if fields.last_price is not None:
            price = fields.last_price
            payload = VenueTick(
                venue=VENUE, instrument=instrument.name, symbol=instrument.symbol, ts=ts,
                open=price, high=price, low=price, close=price, mark_price=fields.mark_price,
                index_price=fields.index_price, funding_rate=fields.funding_rate,
                next_funding_time=fields.next_funding_time or None,
            )
            sink.publish([(EXCHANGE_NORMALIZED, new_envelope(
                payload, ts=ts, source=self.source_name,
                key=f"{VENUE}:{instrument.symbol}:{ts}"))])
            LAST_EVENT.labels(VENUE).set(ts / 1000)
        symbol = instrument.symbol
        if fields.next_funding_time and fields.next_funding_time > self.asked.get(symbol, 0):
            self.next_funding[symbol] = fields.next_funding_time
        due = self.next_funding.get(symbol)
        if due is not None and ts >= due:
            self.asked[symbol] = due  # one request per announced settlement
            del self.next_funding[symbol]
            try:
                await self._funding(instrument, sink, stop)
            except SessionEnded as e:  # the next connect asks again; the prices go on
                self.log.warning("funding_deferred", symbol=symbol, error=str(e))

    # --- REST -----------------------------------------------------------------------------

    async def _backfill(self, instrument: Instrument, before: int | None, sink: Sink,
                        stop: threading.Event) -> None:
        """Publish the closed candles after the watermark (and before ``before``)."""
        symbol = instrument.symbol
        fetched = 0
        while not stop.is_set():
            mark = self.watermark[symbol]
            if mark is None:
                return
            start = mark + self.interval_ms
            if before is not None and start >= before:
                break
            end = start + (KLINE_PAGE - 1) * self.interval_ms  # one page: the answer is the
            if before is not None:  # newest `limit` rows of the range
                end = min(end, before - 1)
            answer = await self.get_json("/v5/market/kline", {
                "category": "linear", "symbol": instrument.name, "interval": self.code,
                "start": start, "end": end, "limit": KLINE_PAGE}, stop)
            rows, server_time = _result_list(answer, "kline")
            candles = []
            for row in rows:
                candle = _rest_candle(row, self.code, self.interval_ms)
                if candle is None:
                    self.dead_letter(sink, "kline REST row malformed", orjson.dumps(row))
                    continue
                if candle.start > mark and candle.end < server_time and (
                        before is None or candle.start < before):
                    candles.append(candle)
            candles.sort(key=lambda c: c.start)
            if not candles:
                break
            sink.publish([(EXCHANGE_NORMALIZED, kline_event(instrument, self.interval, c,
                                                            self.source_name))
                          for c in candles])
            self.watermark[symbol] = candles[-1].start
            fetched += len(candles)
            if len(rows) < KLINE_PAGE:
                break
        if fetched:
            BACKFILLED.labels(VENUE).inc(fetched)
            self.log.info("backfilled", symbol=symbol, klines=fetched,
                          up_to=self.watermark[symbol])

    async def _funding(self, instrument: Instrument, sink: Sink, stop: threading.Event) -> None:
        """Publish the settlements after the last one published (the newest only at first)."""
        symbol = instrument.symbol
        answer = await self.get_json("/v5/market/funding/history", {
            "category": "linear", "symbol": instrument.name, "limit": FUNDING_PAGE}, stop)
        rows, _ = _result_list(answer, "funding/history")
        settled: list[FundingRow] = []
        for row in rows:
            try:
                settled.append(FundingRow.model_validate(row))
            except ValidationError as e:
                self.dead_letter(sink, validation_reason("funding row", e), orjson.dumps(row))
        settled = sorted((r for r in settled if r.symbol == instrument.name
                          and r.funding_time > self.funded[symbol]),
                         key=lambda r: r.funding_time)
        if self.funded[symbol] == 0:
            settled = settled[-1:]
        items = []
        for row in settled:
            payload = VenueFunding(venue=VENUE, instrument=instrument.name, symbol=symbol,
                                   funding_time=row.funding_time, funding_rate=row.funding_rate)
            items.append((EXCHANGE_NORMALIZED, new_envelope(
                payload, ts=row.funding_time, source=self.source_name,
                key=f"{VENUE}:{symbol}:funding:{row.funding_time}")))
        if items:
            sink.publish(items)
            self.funded[symbol] = settled[-1].funding_time
            MESSAGES.labels(VENUE, "funding").inc(len(items))


def _result_list(answer: object, what: str) -> tuple[list[Any], int]:
    """``result.list`` and the server ``time`` of a v5 answer; SessionEnded if refused."""
    if not isinstance(answer, dict) or answer.get("retCode") != 0:
        message = answer.get("retMsg") if isinstance(answer, dict) else answer
        raise SessionEnded(f"bybit {what} refused: {message!r}")
    result = answer.get("result")
    rows = result.get("list") if isinstance(result, dict) else None
    server_time = answer.get("time")
    if not isinstance(rows, list) or not isinstance(server_time, int):
        raise SessionEnded(f"bybit {what}: no result.list or time in the answer")
    return rows, server_time


def _rest_candle(row: object, code: str, interval_ms: int) -> RawCandle | None:
    """A ``/v5/market/kline`` row (``[start, open, high, low, close, volume, turnover]``)."""
    if not isinstance(row, list) or len(row) < 6:
        return None
    try:
        start = int(row[0])
        return RawCandle(start=start, end=start + interval_ms - 1, interval=code,
                         open=row[1], high=row[2], low=row[3], close=row[4], volume=row[5])
    except (ValueError, TypeError, ValidationError):
        return None
