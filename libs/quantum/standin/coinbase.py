"""A local Coinbase Exchange spot market: the public WebSocket feed and REST candles.

WebSocket ``/``: a ``subscribe`` with ``product_ids`` and ``channels`` (``ticker``,
``heartbeat``) is answered by a ``subscriptions`` message, or an ``error`` for an unknown
product; when a bar closes each product gets a ``ticker`` at the close (a per-product
``sequence``, ``price``, ``best_bid``/``best_ask``, ``time`` in ISO 8601) and, ten seconds of
venue time later, a ``heartbeat``. REST: ``/products/<id>/candles?granularity=&start=&end=``
(rows ``[time (s), low, high, open, close, volume]``, newest first, at most 300; a wider
range is refused with 400, as Coinbase does).

Products are the fleet symbols' base assets in USD (``BTCUSDT`` → ``BTC-USD``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from websockets.asyncio.server import ServerConnection

from quantum.standin.venue import Bars, VenueStandIn, decimal_text, json_response

PRICE_FACTOR = 0.9990  # Coinbase's prices here = Binance's recorded ones × this
HEARTBEAT_AFTER_MS = 10_000
MAX_CANDLES = 300
GRANULARITIES = (60, 300, 900, 3600, 21600, 86400)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def product_of(symbol: str) -> str:
    for quote in ("USDT", "USDC"):
        if symbol.endswith(quote):
            return f"{symbol[: -len(quote)]}-USD"
    raise ValueError(f"not a fleet symbol: {symbol!r}")


class CoinbaseStandIn(VenueStandIn):
    name = "coinbase"
    ws_path = "/"

    def __init__(self, data_dir: Path, symbols: list[str], interval: str = "5m",
                 **kwargs: Any) -> None:
        kwargs.setdefault("factor", PRICE_FACTOR)
        super().__init__(data_dir, symbols, interval, **kwargs)
        self.products = {product_of(s): s for s in symbols}
        self.sequence: dict[str, int] = dict.fromkeys(self.products, 1000)

    def close_bar(self, bars: Bars) -> list[tuple[str, dict[str, Any]]]:
        product = product_of(bars.symbol)
        o, h, low, c, _ = bars.ohlcv[bars.index]
        close_ts = bars.open_time[bars.index] + self.interval_ms
        self.sequence[product] += 1
        ticker = {
            "type": "ticker", "sequence": self.sequence[product], "product_id": product,
            "price": decimal_text(c), "open_24h": decimal_text(o), "volume_24h": "0",
            "low_24h": decimal_text(low), "high_24h": decimal_text(h), "volume_30d": "0",
            "best_bid": decimal_text(c * 0.9999), "best_bid_size": "1",
            "best_ask": decimal_text(c * 1.0001), "best_ask_size": "1", "side": "buy",
            "time": iso(close_ts), "trade_id": self.sequence[product], "last_size": "0.01",
        }
        heartbeat = {"type": "heartbeat", "sequence": self.sequence[product],
                     "last_trade_id": self.sequence[product], "product_id": product,
                     "time": iso(close_ts + HEARTBEAT_AFTER_MS)}
        return [(f"ticker:{product}", ticker), (f"heartbeat:{product}", heartbeat)]

    async def on_client_message(self, connection: ServerConnection, message: Any) -> None:
        if not isinstance(message, dict) or message.get("type") != "subscribe":
            return
        products = message.get("product_ids") or []
        channels = [c if isinstance(c, str) else c.get("name") for c in
                    message.get("channels") or []]
        unknown = [p for p in products if p not in self.products]
        if unknown or not products:
            await self.send(connection, {"type": "error", "message": "Failed to subscribe",
                                         "reason": f"{unknown} is not a valid product"})
            return
        topics = self.clients.setdefault(connection, set())
        topics.update(f"{c}:{p}" for c in channels for p in products)
        await self.send(connection, {"type": "subscriptions", "channels": [
            {"name": c, "product_ids": products} for c in channels]})

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/products/{product}/candles", self._candles)

    async def _candles(self, request: web.Request) -> web.Response:
        product = request.match_info["product"]
        symbol = self.products.get(product)
        if symbol is None:
            return json_response({"message": "NotFound"}, 404)
        try:
            granularity = int(request.query.get("granularity", "0"))
            start = _parse_time(request.query["start"])
            end = _parse_time(request.query["end"])
        except (KeyError, ValueError):
            return json_response({"message": "start, end and granularity required"}, 400)
        if granularity * 1000 != self.interval_ms or granularity not in GRANULARITIES:
            return json_response({"message": "Unsupported granularity"}, 400)
        if (end - start) // self.interval_ms + 1 > MAX_CANDLES:
            return json_response({"message": "granularity too small for the requested "
                                  "time range"}, 400)
        bars = self.bars[symbol]
        rows = []
        for i in range(bars.index + 1):  # closed bars and the one forming
            if start <= bars.open_time[i] <= end:
                o, h, low, c, v = bars.ohlcv[i]
                rows.append([bars.open_time[i] // 1000, low, h, o, c, v])
        return json_response(rows[::-1])


def _parse_time(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
