"""A local Binance USDⓈ-M futures *trading* venue: signed REST and the user data stream.

The execution adapter and reconcile talk to this over loopback through the real
python-binance client, so signatures, parameter encoding, error handling and the algo
order routing are exercised as they are against the exchange. It checks what Binance
checks — the API key header, the HMAC-SHA256 signature over the exact parameter text,
the timestamp against ``recvWindow`` — and answers with Binance's codes and HTTP statuses:

* ``-1021`` timestamp outside the window (400); ``-1022`` bad signature (400);
  ``-2015`` unknown API key (401); ``-1121`` unknown symbol; ``-1111`` precision over
  the symbol's step or tick; ``-4164`` notional too small; ``-2019`` margin insufficient;
  ``-2022`` reduce-only rejected; ``-2013`` unknown order; ``-4046`` margin type unchanged;
* ``429`` with ``Retry-After`` when told to (a rate-limit storm), and ``418`` for any
  request sent during the ``Retry-After`` window, as Binance bans an IP that keeps going.

The account is one-way mode: market orders fill at the symbol's price (set by the test)
with the taker fee, in full or — when told — in part, the rest on
:meth:`FuturesVenue.complete_partial_fills`. Protective algo orders rest until a price
set by :meth:`FuturesVenue.set_price` crosses their trigger. Every fill is pushed on the
user data stream (``ORDER_TRADE_UPDATE``, ``ACCOUNT_UPDATE``) at ``/ws/<listenKey>``.

Public market data for the universe service: ``ticker/24hr`` and ``ticker/bookTicker`` of
the symbols given with :meth:`FuturesVenue.set_market` (which also lists a symbol, with its
``onboardDate``).

Fault and drift injection for tests: :meth:`~FuturesVenue.fail_next`,
:meth:`~FuturesVenue.rate_limit`, :meth:`~FuturesVenue.stall_orders` (a new order is placed
and filled, but its answer is held past the client's timeout),
:meth:`~FuturesVenue.hide_orders` (queries answer ``-2013`` for orders that exist, as a
query lagging the matching engine does),
:meth:`~FuturesVenue.skew_clock`, :meth:`~FuturesVenue.drop_user_streams`,
:meth:`~FuturesVenue.open_position_behind`, :meth:`~FuturesVenue.close_position_behind`.

Income history (``GET /fapi/v1/income``): every fill books its ``COMMISSION`` and, when it
closes, its ``REALIZED_PNL`` (Binance's trade id in ``tradeId``);
:meth:`~FuturesVenue.settle_funding` books a ``FUNDING_FEE``. Drift in it for the ledger's
tests: :meth:`~FuturesVenue.shift_income` (a record books more or less than the fill did),
:meth:`~FuturesVenue.drop_income` (records vanish).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from quantum.exchange.venues.binance.filters import SymbolFilters, text
from quantum.standin._loop import LoopThread
from quantum.standin.binance_ws import _loopback_socket, binance_error

log = structlog.get_logger(component="binance-trading-standin")
T = TypeVar("T")
TAKER_FEE = Decimal("0.0004")
WEIGHT_LIMIT = 2400

# (tick size, step size, minimum notional) of the symbols the sample data holds.
DEFAULT_RULES: dict[str, tuple[str, str, str]] = {
    "BTCUSDT": ("0.10", "0.001", "100"),
    "ETHUSDT": ("0.01", "0.001", "20"),
    "SOLUSDT": ("0.0100", "1", "5"),
    "BNBUSDT": ("0.010", "0.01", "5"),
    "XRPUSDT": ("0.0001", "0.1", "5"),
}


def exchange_info_entry(symbol: str, tick: str, step: str, notional: str) -> dict[str, Any]:
    """One ``exchangeInfo.symbols`` element in Binance's shape."""
    return {
        "symbol": symbol, "pair": symbol, "contractType": "PERPETUAL", "status": "TRADING",
        "baseAsset": symbol.removesuffix("USDT"), "quoteAsset": "USDT", "marginAsset": "USDT",
        "pricePrecision": _decimals(tick),
        "quantityPrecision": _decimals(step),
        "orderTypes": ["LIMIT", "MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET"],
        "filters": [
            {"filterType": "PRICE_FILTER", "tickSize": tick, "minPrice": tick,
             "maxPrice": "4529764"},
            {"filterType": "LOT_SIZE", "stepSize": step, "minQty": step, "maxQty": "1000000"},
            {"filterType": "MARKET_LOT_SIZE", "stepSize": step, "minQty": step,
             "maxQty": "100000"},
            {"filterType": "MIN_NOTIONAL", "notional": notional},
        ],
    }


@dataclass
class Fault:
    status: int
    code: int
    message: str
    retry_after: int | None = None


@dataclass
class VenueOrder:
    symbol: str
    client_order_id: str
    order_id: int
    side: str
    quantity: Decimal
    reduce_only: bool
    status: str = "NEW"
    executed: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)  # Σ price × quantity filled
    update_time: int = 0

    def rest(self) -> dict[str, Any]:
        average = self.cost / self.executed if self.executed else Decimal(0)
        return {
            "symbol": self.symbol, "clientOrderId": self.client_order_id,
            "orderId": self.order_id, "status": self.status, "side": self.side,
            "type": "MARKET", "origType": "MARKET", "positionSide": "BOTH",
            "reduceOnly": self.reduce_only, "origQty": text(self.quantity),
            "executedQty": text(self.executed), "cumQuote": text(self.cost),
            "avgPrice": text(average), "price": "0", "timeInForce": "GTC",
            "updateTime": self.update_time, "time": self.update_time,
        }


@dataclass
class AlgoOrder:
    symbol: str
    client_algo_id: str
    algo_id: int
    order_type: str
    side: str
    trigger: Decimal
    status: str = "NEW"

    def rest(self) -> dict[str, Any]:
        return {
            "algoId": self.algo_id, "clientAlgoId": self.client_algo_id, "algoType":
            "CONDITIONAL", "orderType": self.order_type, "symbol": self.symbol, "side":
            self.side, "positionSide": "BOTH", "triggerPrice": text(self.trigger),
            "closePosition": True, "workingType": "MARK_PRICE", "algoStatus": self.status,
            "quantity": "0",
        }


@dataclass
class VenuePosition:
    amount: Decimal = Decimal(0)  # signed
    entry: Decimal = Decimal(0)


@dataclass
class Account:
    """The venue's state. Touched only from the venue's event loop."""

    api_key: str
    api_secret: str
    balance: Decimal
    rules: dict[str, SymbolFilters]
    info: list[dict[str, Any]]
    prices: dict[str, Decimal] = field(default_factory=dict)
    tickers: dict[str, dict[str, Any]] = field(default_factory=dict)  # public 24 h and book
    leverage: dict[str, int] = field(default_factory=dict)
    margin_type: dict[str, str] = field(default_factory=dict)
    positions: dict[str, VenuePosition] = field(default_factory=dict)
    orders: dict[str, VenueOrder] = field(default_factory=dict)  # by client order id
    algo: dict[str, AlgoOrder] = field(default_factory=dict)  # by client algo id
    listen_keys: set[str] = field(default_factory=set)
    faults: list[Fault] = field(default_factory=list)
    partial_fraction: Decimal | None = None
    stall_seconds: float = 0.0
    hidden_queries: int = 0  # the next this many queries of existing orders answer -2013
    skew_ms: int = 0
    banned_until_ms: int = 0
    storm_remaining: int = 0
    storm_retry_after: int = 1
    weight_minute: int = 0
    weight_used: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    order_log: list[dict[str, Any]] = field(default_factory=list)  # every accepted order
    income: list[dict[str, Any]] = field(default_factory=list)  # /fapi/v1/income, oldest first
    ids: Iterable[int] = field(default_factory=lambda: itertools.count(8_000_000))

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.skew_ms

    def book_income(self, symbol: str, income_type: str, amount: Decimal,
                    trade_id: int | None = None) -> None:
        """One income record, as ``/fapi/v1/income`` answers it."""
        self.income.append({
            "symbol": symbol, "incomeType": income_type, "income": text(amount),
            "asset": "USDT", "info": str(trade_id or income_type), "time": self.now_ms(),
            "tranId": next(iter(self.ids)), "tradeId": str(trade_id) if trade_id else ""})

    def position(self, symbol: str) -> VenuePosition:
        return self.positions.setdefault(symbol, VenuePosition())

    def used_margin(self) -> Decimal:
        total = Decimal(0)
        for symbol, p in self.positions.items():
            total += abs(p.amount) * p.entry / self.leverage.get(symbol, 20)
        return total

    def apply_fill(self, symbol: str, side: str, quantity: Decimal, price: Decimal) -> Decimal:
        """Move the position; returns the realised PnL (fee charged separately)."""
        position = self.position(symbol)
        signed = quantity if side == "BUY" else -quantity
        realised = Decimal(0)
        if position.amount == 0 or (position.amount > 0) == (signed > 0):
            total = position.amount + signed
            position.entry = (position.entry * abs(position.amount) + price * quantity) / abs(total)
            position.amount = total
        else:
            closing = min(abs(signed), abs(position.amount))
            direction = Decimal(1) if position.amount > 0 else Decimal(-1)
            realised = (price - position.entry) * closing * direction
            position.amount += signed
            if position.amount == 0:
                position.entry = Decimal(0)
        self.balance += realised
        return realised


class FuturesVenue(LoopThread):
    """The trading stand-in on ``host`` (loopback by default), in a background thread with
    its own loop.

    Point the adapter at :attr:`rest_url` (it appends ``/fapi``) and the user data stream
    at :attr:`ws_url`. Control methods are thread-safe (they run on the venue's loop).
    """

    def __init__(self, *, api_key: str = "standin-key", api_secret: str = "standin-secret",
                 balance: float = 10_000.0, rules: dict[str, tuple[str, str, str]] | None = None,
                 prices: dict[str, float] | None = None, timeout: float = 10.0,
                 host: str = "127.0.0.1") -> None:
        table = rules or DEFAULT_RULES
        info = [exchange_info_entry(s, *r) for s, r in table.items()]
        self.account = Account(
            api_key=api_key, api_secret=api_secret, balance=Decimal(str(balance)),
            rules={e["symbol"]: SymbolFilters.from_exchange_info(e) for e in info}, info=info,
            prices={s: Decimal(str(p)) for s, p in (prices or {}).items()},
        )
        super().__init__(timeout=timeout, thread_name="binance-venue", what="venue")
        self.host = host
        self.rest_url = ""
        self.ws_url = ""
        self._runner: web.AppRunner | None = None
        self._ws_server: Server | None = None
        self._streams: set[ServerConnection] = set()
        self.stream_connections_accepted = 0
        self._release: asyncio.Event | None = None  # ends stalled answers early

    # --- lifecycle ------------------------------------------------------------------------

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._gate])
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = _loopback_socket(self.host)
        await web.SockSite(self._runner, sock).start()
        self.rest_url = f"http://{self.host}:{sock.getsockname()[1]}"
        self._ws_server = await serve(self._user_stream, self.host, 0, ping_interval=None)
        self.ws_url = f"ws://{self.host}:{self._ws_server.sockets[0].getsockname()[1]}/"

    async def _stop(self) -> None:
        if self._release is not None:
            self._release.set()
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()


    def _do(self, action: Callable[[Account], T]) -> T:
        async def run() -> T:
            return action(self.account)

        return self._call(run)

    # --- control (tests) ------------------------------------------------------------------

    def set_price(self, symbol: str, price: float) -> None:
        """Move the mark price; protective orders whose trigger it crosses fire."""
        async def run() -> None:
            self.account.prices[symbol] = Decimal(str(price))
            await self._trigger_algo(symbol)
        self._call(run)

    def set_market(self, symbol: str, *, quote_volume: float, high: float, low: float,
                   bid: float, ask: float, onboard_ms: int | None = None,
                   status: str = "TRADING") -> None:
        """A symbol's public market data (``ticker/24hr``, ``ticker/bookTicker``) and its
        listing (``onboardDate``, ``status``); a symbol not yet listed is listed."""
        def run(a: Account) -> None:
            entry = next((e for e in a.info if e["symbol"] == symbol), None)
            if entry is None:
                entry = exchange_info_entry(symbol, "0.0001", "1", "5")
                a.info.append(entry)
                a.rules[symbol] = SymbolFilters.from_exchange_info(entry)
            entry["status"] = status
            if onboard_ms is not None:
                entry["onboardDate"] = onboard_ms
            last = (bid + ask) / 2
            a.tickers[symbol] = {
                "symbol": symbol, "priceChange": "0", "priceChangePercent": "0",
                "lastPrice": repr(last), "highPrice": repr(high), "lowPrice": repr(low),
                "volume": repr(quote_volume / last), "quoteVolume": repr(quote_volume),
                "count": 1000, "bidPrice": repr(bid), "askPrice": repr(ask),
                "closeTime": a.now_ms(),
            }
        self._do(run)

    def fail_next(self, status: int, code: int, message: str, *, count: int = 1) -> None:
        self._do(lambda a: a.faults.extend(Fault(status, code, message) for _ in range(count)))

    def rate_limit(self, requests: int, retry_after_s: int = 1) -> None:
        """The next ``requests`` requests get 429; any request inside the wait gets 418."""
        def set_storm(a: Account) -> None:
            a.storm_remaining = requests
            a.storm_retry_after = retry_after_s
        self._do(set_storm)

    def partial_fills(self, fraction: float | None) -> None:
        """Fill market orders only to ``fraction`` until :meth:`complete_partial_fills`."""
        self._do(lambda a: setattr(a, "partial_fraction",
                                   None if fraction is None else Decimal(str(fraction))))

    def complete_partial_fills(self) -> int:
        async def run() -> int:
            done = 0
            for order in list(self.account.orders.values()):
                if order.status == "PARTIALLY_FILLED":
                    await self._fill(order, order.quantity - order.executed)
                    done += 1
            return done
        return self._call(run)

    def stall_orders(self, seconds: float) -> None:
        """Accept (and fill) new orders, then hold the HTTP answer for ``seconds``;
        ``0`` ends the stall and releases answers still held."""
        async def run() -> None:
            self.account.stall_seconds = seconds
            if seconds <= 0 and self._release is not None:
                self._release.set()
                self._release = None
        self._call(run)

    def hide_orders(self, queries: int) -> None:
        """Answer "unknown order" (``-2013``) to the next ``queries`` order queries, even for
        orders that exist."""
        self._do(lambda a: setattr(a, "hidden_queries", queries))

    def skew_clock(self, milliseconds: int) -> None:
        self._do(lambda a: setattr(a, "skew_ms", milliseconds))

    def drop_user_streams(self) -> int:
        async def run() -> int:
            dropped = list(self._streams)
            self._streams.clear()
            for connection in dropped:
                connection.transport.abort()
            return len(dropped)
        return self._call(run)

    def open_position_behind(self, symbol: str, amount: float, entry: float) -> None:
        """Drift: a position appears that no order of the fleet made."""
        def run(a: Account) -> None:
            a.positions[symbol] = VenuePosition(Decimal(str(amount)), Decimal(str(entry)))
        self._do(run)

    def close_position_behind(self, symbol: str) -> None:
        """Drift: a position vanishes (closed by hand on the exchange's web page)."""
        self._do(lambda a: a.positions.pop(symbol, None))

    def settle_funding(self, symbol: str, rate: float) -> float:
        """A funding settlement at ``rate`` on the symbol's open position (longs pay a
        positive rate): booked to the wallet and the income history; returns the income."""
        def run(a: Account) -> float:
            position = a.positions.get(symbol)
            if position is None or position.amount == 0:
                return 0.0
            mark = a.prices.get(symbol, position.entry)
            income = -position.amount * mark * Decimal(str(rate))
            a.balance += income
            a.book_income(symbol, "FUNDING_FEE", income)
            return float(income)
        return self._do(run)

    def shift_income(self, income_type: str, delta: float, *, symbol: str | None = None) -> bool:
        """Drift: the newest record of ``income_type`` (on ``symbol``) books ``delta`` more
        than the fills did (a fee charged at another rate, a PnL the fleet did not see)."""
        def run(a: Account) -> bool:
            for row in reversed(a.income):
                if row["incomeType"] == income_type and symbol in (None, row["symbol"]):
                    row["income"] = text(Decimal(row["income"]) + Decimal(str(delta)))
                    return True
            return False
        return self._do(run)

    def drop_income(self, income_type: str, *, symbol: str | None = None) -> int:
        """Drift: every record of ``income_type`` (on ``symbol``) vanishes from the history
        (a funding fee the exchange never booked); returns how many."""
        def run(a: Account) -> int:
            kept = [row for row in a.income if not (
                row["incomeType"] == income_type and symbol in (None, row["symbol"]))]
            dropped = len(a.income) - len(kept)
            a.income[:] = kept
            return dropped
        return self._do(run)

    def income(self) -> list[dict[str, Any]]:
        """The income history as ``/fapi/v1/income`` holds it (for assertions)."""
        return self._do(lambda a: [dict(row) for row in a.income])

    def snapshot(self) -> dict[str, Any]:
        """What the venue holds now (for assertions)."""
        def run(a: Account) -> dict[str, Any]:
            return {
                "positions": {s: float(p.amount) for s, p in a.positions.items() if p.amount},
                "orders": [o.rest() for o in a.orders.values()],
                "algo": [o.rest() for o in a.algo.values() if o.status == "NEW"],
                "order_log": list(a.order_log),
                "balance": float(a.balance),
                "requests": list(a.requests),
            }
        return self._do(run)

    # --- HTTP plumbing --------------------------------------------------------------------

    @web.middleware
    async def _gate(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        """Weight header, bans, storms and injected faults, ahead of every route."""
        a = self.account
        a.requests.append((request.method, request.path))
        now = a.now_ms()
        minute = now // 60_000
        if minute != a.weight_minute:
            a.weight_minute, a.weight_used = minute, 0
        a.weight_used += 5 if request.path.endswith(("positionRisk", "balance", "account")) else 1
        a.weight_used += 29 if request.path.endswith("/income") else 0
        headers = {"X-MBX-USED-WEIGHT-1M": str(a.weight_used)}
        if now < a.banned_until_ms:
            wait = max(1, (a.banned_until_ms - now + 999) // 1000)
            a.banned_until_ms = max(a.banned_until_ms, now + 2000)
            return _error(418, -1003, "Way too many requests; IP banned.", headers, wait)
        if a.storm_remaining > 0:
            a.storm_remaining -= 1
            a.banned_until_ms = now + a.storm_retry_after * 1000
            return _error(429, -1003, "Too many requests; current limit of IP is "
                          f"{WEIGHT_LIMIT} requests per minute.", headers, a.storm_retry_after)
        if a.faults and request.path not in ("/fapi/v1/time", "/fapi/v1/exchangeInfo"):
            fault = a.faults.pop(0)
            return _error(fault.status, fault.code, fault.message, headers, fault.retry_after)
        response = await handler(request)
        response.headers.update(headers)
        return response

    async def _params(self, request: web.Request, *, signed: bool) -> dict[str, str] | web.Response:
        """The request's parameters, after the key, signature and timestamp checks."""
        body = (await request.text()) if request.can_read_body else ""
        query = request.query_string
        total = query + body if not (query and body) else f"{query}&{body}"
        params: dict[str, str] = {}
        for pair in filter(None, total.split("&")):
            name, _, value = pair.partition("=")
            params[name] = value
        if request.headers.get("X-MBX-APIKEY") != self.account.api_key:
            return binance_error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        if not signed:
            return params
        signed_text, marker, signature = total.rpartition("&signature=")
        if not marker:
            return binance_error(400, -1102, "Mandatory parameter 'signature' was not sent, "
                                 "was empty/null, or malformed.")
        expected = hmac.new(self.account.api_secret.encode(), signed_text.encode(),
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return binance_error(400, -1022, "Signature for this request is not valid.")
        try:
            stamp = int(params["timestamp"])
            window = int(params.get("recvWindow", "5000"))
        except (KeyError, ValueError):
            return binance_error(400, -1102, "Mandatory parameter 'timestamp' was not sent, "
                                 "was empty/null, or malformed.")
        server = self.account.now_ms()
        if stamp >= server + 1000 or server - stamp > window:
            return binance_error(400, -1021, "Timestamp for this request is outside of the "
                                 "recvWindow.")
        return params

    def _symbol(self, params: dict[str, str]) -> SymbolFilters | web.Response:
        rules = self.account.rules.get(params.get("symbol", ""))
        if rules is None:
            return binance_error(400, -1121, "Invalid symbol.")
        return rules

    # --- routes ---------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        a = self.account

        async def ping(_: web.Request) -> web.Response:
            return web.json_response({})

        async def server_time(_: web.Request) -> web.Response:
            return web.json_response({"serverTime": a.now_ms()})

        async def exchange_info(_: web.Request) -> web.Response:
            return web.json_response({"timezone": "UTC", "serverTime": a.now_ms(),
                                      "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT",
                                                      "interval": "MINUTE", "intervalNum": 1,
                                                      "limit": WEIGHT_LIMIT}],
                                      "symbols": a.info})

        async def leverage(request: web.Request) -> web.Response:
            params = await self._params(request, signed=True)
            if isinstance(params, web.Response):
                return params
            rules = self._symbol(params)
            if isinstance(rules, web.Response):
                return rules
            a.leverage[rules.symbol] = int(params.get("leverage", "1"))
            return web.json_response({"leverage": a.leverage[rules.symbol],
                                      "maxNotionalValue": "1000000", "symbol": rules.symbol})

        async def margin_type(request: web.Request) -> web.Response:
            params = await self._params(request, signed=True)
            if isinstance(params, web.Response):
                return params
            rules = self._symbol(params)
            if isinstance(rules, web.Response):
                return rules
            wanted = params.get("marginType", "")
            if a.margin_type.get(rules.symbol, "CROSSED") == wanted:
                return binance_error(400, -4046, "No need to change margin type.")
            a.margin_type[rules.symbol] = wanted
            return web.json_response({"code": 200, "msg": "success"})

        app.router.add_get("/fapi/v1/ping", ping)
        app.router.add_get("/fapi/v1/time", server_time)
        app.router.add_get("/fapi/v1/exchangeInfo", exchange_info)
        app.router.add_get("/fapi/v1/ticker/24hr", self._ticker_24hr)
        app.router.add_get("/fapi/v1/ticker/bookTicker", self._book_ticker)
        app.router.add_post("/fapi/v1/leverage", leverage)
        app.router.add_post("/fapi/v1/marginType", margin_type)
        app.router.add_post("/fapi/v1/order", self._new_order)
        app.router.add_get("/fapi/v1/order", self._get_order)
        app.router.add_delete("/fapi/v1/order", self._cancel_order)
        app.router.add_get("/fapi/v1/openOrders", self._open_orders)
        app.router.add_post("/fapi/v1/algoOrder", self._new_algo)
        app.router.add_get("/fapi/v1/algoOrder", self._get_algo)
        app.router.add_delete("/fapi/v1/algoOrder", self._cancel_algo)
        app.router.add_get("/fapi/v1/openAlgoOrders", self._open_algo)
        app.router.add_get("/fapi/v3/positionRisk", self._position_risk)
        app.router.add_get("/fapi/v3/balance", self._balance)
        app.router.add_get("/fapi/v2/account", self._account)
        app.router.add_get("/fapi/v1/income", self._income)
        app.router.add_post("/fapi/v1/listenKey", self._listen_key)
        app.router.add_put("/fapi/v1/listenKey", self._listen_key)
        app.router.add_delete("/fapi/v1/listenKey", self._listen_key)

    async def _ticker_24hr(self, _: web.Request) -> web.Response:
        """``GET /fapi/v1/ticker/24hr`` without a symbol: every symbol set by ``set_market``."""
        keys = ("symbol", "priceChange", "priceChangePercent", "lastPrice", "highPrice",
                "lowPrice", "volume", "quoteVolume", "count", "closeTime")
        rows = self.account.tickers.values()
        return web.json_response([{k: row[k] for k in keys} for row in rows])

    async def _book_ticker(self, _: web.Request) -> web.Response:
        """``GET /fapi/v1/ticker/bookTicker`` without a symbol: best bid and ask of each."""
        return web.json_response([
            {"symbol": row["symbol"], "bidPrice": row["bidPrice"], "bidQty": "10",
             "askPrice": row["askPrice"], "askQty": "10", "time": row["closeTime"]}
            for row in self.account.tickers.values()])

    async def _new_order(self, request: web.Request) -> web.Response:
        a = self.account
        params = await self._params(request, signed=True)
        if isinstance(params, web.Response):
            return params
        rules = self._symbol(params)
        if isinstance(rules, web.Response):
            return rules
        if params.get("type") != "MARKET":
            return binance_error(400, -1116, "Invalid orderType.")
        client_id = params.get("newClientOrderId", "")
        if client_id in a.orders:
            return binance_error(400, -4116, "ClientOrderId is duplicated.")
        try:
            quantity = Decimal(params.get("quantity", ""))
        except InvalidOperation:
            return binance_error(400, -1100, "Illegal characters found in parameter 'quantity'.")
        price = a.prices.get(rules.symbol)
        if price is None:
            return binance_error(400, -1121, "Invalid symbol.")
        reduce_only = params.get("reduceOnly", "false").lower() == "true"
        side = params.get("side", "")
        refusal = self._refusal(rules, side, quantity, price, reduce_only)
        if refusal is not None:
            return refusal
        order = VenueOrder(rules.symbol, client_id, next(iter(a.ids)), side, quantity,
                           reduce_only, update_time=a.now_ms())
        a.orders[client_id] = order
        a.order_log.append({"clientOrderId": client_id, "symbol": rules.symbol, "side": side,
                            "quantity": params.get("quantity"), "reduceOnly": reduce_only,
                            "price_at_entry": str(price)})
        fill = quantity if a.partial_fraction is None else rules.round_quantity(
            quantity * a.partial_fraction)
        if fill > 0:
            await self._fill(order, fill)
        if a.stall_seconds > 0:
            self._release = self._release or asyncio.Event()
            try:
                await asyncio.wait_for(self._release.wait(), a.stall_seconds)
            except TimeoutError:
                pass
        return web.json_response(order.rest())

    def _refusal(self, rules: SymbolFilters, side: str, quantity: Decimal, price: Decimal,
                 reduce_only: bool) -> web.Response | None:
        """Filters, reduce-only and margin checks of a market order, as Binance answers."""
        a = self.account
        problems = rules.violations(quantity=quantity, price=None, market=True,
                                    reduce_only=reduce_only, reference_price=price)
        if problems:
            if "notional" in problems[0]:
                return binance_error(400, -4164, "Order's notional must be no smaller than "
                                     + text(rules.min_notional))
            return binance_error(400, -1111, "Precision is over the maximum defined for this "
                                 "asset.")
        position = a.position(rules.symbol)
        if reduce_only and (position.amount == 0 or (position.amount > 0) == (side == "BUY")
                            or quantity > abs(position.amount)):
            return binance_error(400, -2022, "ReduceOnly Order is rejected.")
        leverage = a.leverage.get(rules.symbol, 20)
        if not reduce_only:
            free = a.balance - a.used_margin()
            if quantity * price / leverage + quantity * price * TAKER_FEE > free:
                return binance_error(400, -2019, "Margin is insufficient.")
        return None

    async def _fill(self, order: VenueOrder, quantity: Decimal) -> None:
        a = self.account
        price = a.prices[order.symbol]
        realised = a.apply_fill(order.symbol, order.side, quantity, price)
        fee = quantity * price * TAKER_FEE
        a.balance -= fee
        trade_id = next(iter(a.ids))
        if realised:
            a.book_income(order.symbol, "REALIZED_PNL", realised, trade_id)
        a.book_income(order.symbol, "COMMISSION", -fee, trade_id)
        order.executed += quantity
        order.cost += quantity * price
        order.status = "FILLED" if order.executed >= order.quantity else "PARTIALLY_FILLED"
        order.update_time = a.now_ms()
        average = order.cost / order.executed
        position = a.position(order.symbol)
        await self._push({
            "e": "ORDER_TRADE_UPDATE", "E": a.now_ms(), "T": a.now_ms(),
            "o": {"s": order.symbol, "c": order.client_order_id, "S": order.side, "o": "MARKET",
                  "q": text(order.quantity), "ap": text(average), "x": "TRADE",
                  "X": order.status, "i": order.order_id, "l": text(quantity),
                  "z": text(order.executed), "L": text(price), "N": "USDT", "n": text(fee),
                  "T": a.now_ms(), "R": order.reduce_only, "ps": "BOTH", "rp": text(realised)},
        })
        await self._push({
            "e": "ACCOUNT_UPDATE", "E": a.now_ms(), "T": a.now_ms(),
            "a": {"m": "ORDER", "B": [{"a": "USDT", "wb": text(a.balance), "cw": text(a.balance),
                                       "bc": "0"}],
                  "P": [{"s": order.symbol, "pa": text(position.amount), "ep": text(position.entry),
                         "cr": "0", "up": "0", "mt": "isolated", "iw": "0", "ps": "BOTH"}]},
        })

    async def _get_order(self, request: web.Request) -> web.Response:
        params = await self._params(request, signed=True)
        if isinstance(params, web.Response):
            return params
        order = self.account.orders.get(params.get("origClientOrderId", ""))
        if order is None or order.symbol != params.get("symbol"):
            return binance_error(400, -2013, "Order does not exist.")
        if self.account.hidden_queries > 0:
            self.account.hidden_queries -= 1
            return binance_error(400, -2013, "Order does not exist.")
        return web.json_response(order.rest())

    async def _cancel_order(self, request: web.Request) -> web.Response:
        params = await self._params(request, signed=True)
        if isinstance(params, web.Response):
            return params
        order = self.account.orders.get(params.get("origClientOrderId", ""))
        if order is None or order.status not in ("NEW", "PARTIALLY_FILLED"):
            return binance_error(400, -2011, "Unknown order sent.")
        order.status = "CANCELED"
        return web.json_response(order.rest())

    async def _open_orders(self, request: web.Request) -> web.Response:
        params = await self._params(request, signed=True)
        if isinstance(params, web.Response):
            return params
        return web.json_response([o.rest() for o in self.account.orders.values()
                                  if o.status in ("NEW", "PARTIALLY_FILLED")])

    async def _new_algo(self, request: web.Request) -> web.Response:
        a = self.account
        params = await self._params(request, signed=True)
        if isinstance(params, web.Response):
            return params
        rules = self._symbol(params)
        if isinstance(rules, web.Response):
            return rules
        if params.get("orderType") not in ("STOP_MARKET", "TAKE_PROFIT_MARKET") and params.get(
                "type") not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            return binance_error(400, -1116, "Invalid orderType.")
        try:
            trigger = Decimal(params.get("triggerPrice", ""))
        except InvalidOperation:
            return binance_error(400, -1100, "Illegal characters found in parameter "
                                 "'triggerPrice'.")
        if rules.violations(quantity=None, price=trigger, market=False, reduce_only=True):
            return binance_error(400, -1111, "Precision is over the maximum defined for this "
                                 "asset.")
        client_id = params.get("clientAlgoId", "")
        if client_id in a.algo and a.algo[client_id].status == "NEW":
            return binance_error(400, -4116, "ClientOrderId is duplicated.")
        order = AlgoOrder(rules.symbol, client_id, next(iter(a.ids)),
                          params.get("type") or params.get("orderType", ""),
                          params.get("side", ""), trigger)
        a.algo[client_id] = order
        return web.json_response(order.rest())

    async def _get_algo(self, request: web.Request) -> web.Response:
        params = await self._params(request, signed=True)
        if isinstance(params, web.Response):
            return params
        order = self.account.algo.get(params.get("clientAlgoId", ""))
        if order is None:
            return binance_error(400, -2013, "Order does not exist.")
        return web.json_response(order.rest())

    async def _cancel_algo(self, request: web.Request) -> web.Response:
        params = await self._params(request, signed=True)
        if isinstance(params, web.Response):
            return params
        order = self.account.algo.get(params.get("clientAlgoId", ""))
        if order is None or order.status != "NEW":
            return binance_error(400, -2011, "Unknown order sent.")
        order.status = "CANCELED"
        return web.json_response(order.rest())

    async def _open_algo(self, request: web.Request) -> web.Response:
        params = await self._params(request, signed=True)
        if isinstance(params, web.Response):
            return params
        return web.json_response([o.rest() for o in self.account.algo.values()
                                  if o.status == "NEW"])

    async def _trigger_algo(self, symbol: str) -> None:
        a = self.account
        price = a.prices[symbol]
        for order in list(a.algo.values()):
            if order.symbol != symbol or order.status != "NEW":
                continue
            rising = (order.order_type == "STOP_MARKET") == (order.side == "BUY")
            if (price >= order.trigger) if rising else (price <= order.trigger):
                order.status = "FINISHED"
                position = a.position(symbol)
                if position.amount == 0:
                    continue
                market = VenueOrder(symbol, f"algo-{order.algo_id}", next(iter(a.ids)),
                                    order.side, abs(position.amount), True,
                                    update_time=a.now_ms())
                a.orders[market.client_order_id] = market
                await self._fill(market, market.quantity)

    async def _position_risk(self, request: web.Request) -> web.Response:
        params = await self._params(request, signed=True)
        if isinstance(params, web.Response):
            return params
        rows = []
        for symbol, position in sorted(self.account.positions.items()):
            mark = self.account.prices.get(symbol, position.entry)
            rows.append({"symbol": symbol, "positionSide": "BOTH",
                         "positionAmt": text(position.amount), "entryPrice": text(position.entry),
                         "markPrice": text(mark), "liquidationPrice": "0",
                         "unRealizedProfit": text((mark - position.entry) * position.amount),
                         "isolatedMargin": "0", "notional": text(mark * position.amount)})
        return web.json_response(rows)

    async def _account(self, request: web.Request) -> web.Response:
        """``GET /fapi/v2/account``: wallet balance, and leverage per symbol."""
        params = await self._params(request, signed=True)
        if isinstance(params, web.Response):
            return params
        a = self.account
        balance = text(a.balance)
        positions = []
        for symbol in sorted(a.rules):
            position = a.positions.get(symbol, VenuePosition())
            positions.append({
                "symbol": symbol, "positionSide": "BOTH", "positionAmt": text(position.amount),
                "entryPrice": text(position.entry), "leverage": str(a.leverage.get(symbol, 20)),
                "isolated": a.margin_type.get(symbol, "CROSSED") == "ISOLATED",
                "unrealizedProfit": "0", "initialMargin": "0", "maintMargin": "0",
            })
        return web.json_response({
            "totalWalletBalance": balance, "totalMarginBalance": balance,
            "availableBalance": balance, "canTrade": True, "updateTime": a.now_ms(),
            "assets": [{"asset": "USDT", "walletBalance": balance, "marginBalance": balance,
                        "availableBalance": balance, "unrealizedProfit": "0"}],
            "positions": positions,
        })

    async def _balance(self, request: web.Request) -> web.Response:
        params = await self._params(request, signed=True)
        if isinstance(params, web.Response):
            return params
        balance = text(self.account.balance)
        return web.json_response([{"accountAlias": "standin", "asset": "USDT",
                                   "balance": balance, "crossWalletBalance": balance,
                                   "availableBalance": balance, "crossUnPnl": "0",
                                   "maxWithdrawAmount": balance, "marginAvailable": True,
                                   "updateTime": self.account.now_ms()}])

    async def _income(self, request: web.Request) -> web.Response:
        """``GET /fapi/v1/income``: the income history, oldest first, filtered by symbol,
        type and time, at most ``limit`` (default 100, at most 1000) records."""
        params = await self._params(request, signed=True)
        if isinstance(params, web.Response):
            return params
        try:
            limit = int(params.get("limit", "100"))
            start = int(params["startTime"]) if "startTime" in params else None
            end = int(params["endTime"]) if "endTime" in params else None
        except ValueError:
            return binance_error(400, -1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= 1000:
            return binance_error(400, -1130, "Data sent for parameter 'limit' is not valid.")
        rows = [row for row in sorted(self.account.income, key=lambda r: (r["time"], r["tranId"]))
                if params.get("symbol", row["symbol"]) == row["symbol"]
                and params.get("incomeType", row["incomeType"]) == row["incomeType"]
                and (start is None or row["time"] >= start)
                and (end is None or row["time"] <= end)]
        return web.json_response(rows[:limit])

    async def _listen_key(self, request: web.Request) -> web.Response:
        params = await self._params(request, signed=False)
        if isinstance(params, web.Response):
            return params
        keys = self.account.listen_keys
        if request.method == "POST":
            key = secrets.token_hex(32)
            keys.add(key)
            return web.json_response({"listenKey": key})
        key = params.get("listenKey", "")
        if key not in keys:
            return binance_error(400, -1125, "This listenKey does not exist.")
        if request.method == "DELETE":
            keys.discard(key)
        return web.json_response({})

    # --- user data stream -----------------------------------------------------------------

    async def _user_stream(self, connection: ServerConnection) -> None:
        path = connection.request.path if connection.request is not None else ""
        key = path.rstrip("/").rsplit("/", 1)[-1]
        if key not in self.account.listen_keys:
            await connection.close(1008, "invalid listen key")
            return
        self._streams.add(connection)
        self.stream_connections_accepted += 1
        try:
            async for _ in connection:
                pass
        except ConnectionClosed:
            pass
        finally:
            self._streams.discard(connection)

    async def _push(self, event: dict[str, Any]) -> None:
        text_frame = orjson.dumps(event).decode()
        for connection in list(self._streams):
            try:
                await connection.send(text_frame)
            except ConnectionClosed:
                self._streams.discard(connection)


def _error(status: int, code: int, message: str, headers: dict[str, str],
           retry_after: int | None) -> web.Response:
    response = binance_error(status, code, message)
    response.headers.update(headers)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _decimals(increment: str) -> int:
    """Decimal places of a tick or step size such as ``"0.001"`` (3)."""
    exponent = Decimal(increment).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0
