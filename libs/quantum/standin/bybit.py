"""A local Bybit v5 linear market: the public WebSocket and the REST market data.

WebSocket ``/v5/public/linear``: ``subscribe`` (answered ``{"op": "subscribe", "success":
…}``, refused for an unknown topic), ``ping`` (answered ``pong``); topics
``kline.<code>.<SYMBOL>`` (one push per closed bar, ``confirm: true``) and
``tickers.<SYMBOL>`` (a ``snapshot`` first on each connection, then ``delta`` pushes with
the fields that changed). REST: ``/v5/market/kline`` (newest first, the forming candle
included, as Bybit does), ``/v5/market/tickers`` and ``/v5/market/funding/history``; every
answer carries ``retCode``, ``retMsg``, ``result`` and the server ``time``.

Funding settles every 8 hours on the bars' clock at the sample data's recorded rate plus
:data:`FUNDING_OFFSET`, so a funding spread against Binance is known exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from websockets.asyncio.server import ServerConnection

from quantum.standin.venue import Bars, VenueStandIn, decimal_text, json_response

INTERVAL_CODE = {"1m": "1", "5m": "5", "15m": "15", "1h": "60"}
FUNDING_PERIOD_MS = 8 * 3_600_000
FUNDING_OFFSET = 0.00005
PRICE_FACTOR = 1.0005  # Bybit's prices here = Binance's recorded ones × this


class BybitStandIn(VenueStandIn):
    name = "bybit"
    ws_path = "/v5/public/linear"

    def __init__(self, data_dir: Path, symbols: list[str], interval: str = "5m",
                 **kwargs: Any) -> None:
        kwargs.setdefault("factor", PRICE_FACTOR)
        super().__init__(data_dir, symbols, interval, **kwargs)
        self.code = INTERVAL_CODE[interval]
        self.snapshot_sent: set[tuple[ServerConnection, str]] = set()

    # --- market ---------------------------------------------------------------------------

    def funding_history(self, symbol: str, until_ms: int) -> list[tuple[int, float]]:
        """Settlements (time, rate) at or before ``until_ms``: every 8 h boundary from the
        first bar on, at the recorded Binance rate of the latest settlement then + offset."""
        bars = self.bars[symbol]
        recorded = list(bars.funding.items())
        first = -(-bars.open_time[0] // FUNDING_PERIOD_MS) * FUNDING_PERIOD_MS  # at or after
        out = []
        for t in range(first, until_ms + 1, FUNDING_PERIOD_MS):
            earlier = [rate for when, rate in recorded if when <= t]
            out.append((t, (earlier[-1] if earlier else 0.0001) + FUNDING_OFFSET))
        return out

    def ticker(self, symbol: str) -> dict[str, Any]:
        bars = self.bars[symbol]
        price = bars.ohlcv[bars.index - 1][3] if bars.index > 0 else bars.ohlcv[0][0]
        now = bars.open_time[bars.index]
        settled = self.funding_history(symbol, now)
        return {
            "symbol": symbol, "tickDirection": "PlusTick", "lastPrice": decimal_text(price),
            "markPrice": decimal_text(price), "indexPrice": decimal_text(price / 1.0002),
            "fundingRate": decimal_text(settled[-1][1] if settled else 0.0001),
            "nextFundingTime": str((now // FUNDING_PERIOD_MS + 1) * FUNDING_PERIOD_MS),
            "openInterest": "0", "volume24h": "0", "turnover24h": "0",
        }

    def candle(self, bars: Bars, i: int, confirm: bool) -> dict[str, Any]:
        o, h, low, c, v = bars.ohlcv[i]
        start = bars.open_time[i]
        return {"start": start, "end": start + self.interval_ms - 1, "interval": self.code,
                "open": decimal_text(o), "close": decimal_text(c), "high": decimal_text(h),
                "low": decimal_text(low), "volume": decimal_text(v),
                "turnover": decimal_text(v * c), "confirm": confirm,
                "timestamp": start + self.interval_ms - 1}

    def close_bar(self, bars: Bars) -> list[tuple[str, dict[str, Any]]]:
        i = bars.index
        close_ts = bars.open_time[i] + self.interval_ms
        kline_topic = f"kline.{self.code}.{bars.symbol}"
        pushes: list[tuple[str, dict[str, Any]]] = [(kline_topic, {
            "topic": kline_topic, "type": "snapshot", "ts": close_ts - 1,
            "data": [self.candle(bars, i, True)]})]
        bars.index += 1  # the ticker after the close sees the closed bar's price
        try:
            ticker = self.ticker(bars.symbol)
        finally:
            bars.index -= 1
        topic = f"tickers.{bars.symbol}"
        pushes.append((topic, {"topic": topic, "type": "delta", "ts": close_ts,
                               "cs": close_ts, "data": ticker}))
        return pushes

    # --- WebSocket ------------------------------------------------------------------------

    def _known(self, topic: str) -> bool:
        kind, _, rest = topic.partition(".")
        if kind == "tickers":
            return rest in self.bars
        if kind == "kline":
            code, _, symbol = rest.partition(".")
            return code == self.code and symbol in self.bars
        return False

    async def on_client_message(self, connection: ServerConnection, message: Any) -> None:
        if not isinstance(message, dict):
            return
        op = message.get("op")
        if op == "ping":
            await self.send(connection, {"success": True, "ret_msg": "pong",
                                         "conn_id": str(id(connection)), "op": "ping"})
            return
        if op != "subscribe":
            return
        raw_args = message.get("args")
        args: list[str] = raw_args if isinstance(raw_args, list) else []
        bad = [a for a in args if not isinstance(a, str) or not self._known(a)]
        answer = {"success": not bad, "ret_msg": f"Invalid topic: {bad}" if bad else "",
                  "conn_id": str(id(connection)), "op": "subscribe"}
        if "req_id" in message:
            answer["req_id"] = message["req_id"]
        await self.send(connection, answer)
        if bad:
            return
        self.clients.setdefault(connection, set()).update(args)
        for topic in args:
            if topic.startswith("tickers."):
                symbol = topic.partition(".")[2]
                now = self.clock(symbol)
                await self.send(connection, {"topic": topic, "type": "snapshot", "ts": now,
                                             "cs": now, "data": self.ticker(symbol)})

    # --- REST -----------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v5/market/kline", self._kline)
        app.router.add_get("/v5/market/tickers", self._tickers)
        app.router.add_get("/v5/market/funding/history", self._funding)

    def _answer(self, symbol: str, result: dict[str, Any]) -> web.Response:
        return json_response({"retCode": 0, "retMsg": "OK", "result": result,
                              "retExtInfo": {}, "time": self.clock(symbol)})

    def _symbol(self, request: web.Request) -> str | web.Response:
        if request.query.get("category") != "linear":
            return json_response({"retCode": 10001, "retMsg": "category must be linear",
                                  "result": {}, "time": 0})
        symbol = request.query.get("symbol", "")
        if symbol not in self.bars:
            return json_response({"retCode": 10001, "retMsg": "Not supported symbols",
                                  "result": {}, "time": 0})
        return symbol

    async def _kline(self, request: web.Request) -> web.Response:
        symbol = self._symbol(request)
        if isinstance(symbol, web.Response):
            return symbol
        if request.query.get("interval") != self.code:
            return json_response({"retCode": 10001, "retMsg": "Invalid period", "result": {},
                                  "time": 0})
        bars = self.bars[symbol]
        start = int(request.query.get("start", "0"))
        end = int(request.query.get("end", str(bars.open_time[bars.index])))
        limit = min(int(request.query.get("limit", "200")), 1000)
        rows = []
        for i in range(bars.index + 1):  # closed bars and the one forming
            if start <= bars.open_time[i] <= end:
                o, h, low, c, v = bars.ohlcv[i]
                rows.append([str(bars.open_time[i]), decimal_text(o), decimal_text(h),
                             decimal_text(low), decimal_text(c), decimal_text(v),
                             decimal_text(v * c)])
        rows = rows[::-1][:limit]  # newest first; the newest `limit` of the range
        return self._answer(symbol, {"symbol": symbol, "category": "linear", "list": rows})

    async def _tickers(self, request: web.Request) -> web.Response:
        symbol = self._symbol(request)
        if isinstance(symbol, web.Response):
            return symbol
        return self._answer(symbol, {"category": "linear", "list": [self.ticker(symbol)]})

    async def _funding(self, request: web.Request) -> web.Response:
        symbol = self._symbol(request)
        if isinstance(symbol, web.Response):
            return symbol
        limit = min(int(request.query.get("limit", "200")), 200)
        settled = self.funding_history(symbol, self.clock(symbol))[::-1][:limit]
        rows = [{"symbol": symbol, "fundingRate": decimal_text(rate),
                 "fundingRateTimestamp": str(t)} for t, rate in settled]
        return self._answer(symbol, {"category": "linear", "list": rows})
