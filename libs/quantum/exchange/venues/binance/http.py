"""The Binance USDⓈ-M futures adapter over python-binance's REST client.

What it adds to the bare client, and why:

* **Filters.** ``exchangeInfo`` is cached (``filters_ttl_s``) and every price and
  quantity goes through :class:`~quantum.exchange.venues.binance.filters.SymbolFilters`,
  so the exchange never sees a ``-1111`` precision error from us. A symbol the exchange
  does not list is refused locally with ``-1121``, naming it.
* **Weight.** Every call reserves its weight in a :class:`WeightBudget`; a 429 or 418 bans
  all calls until ``Retry-After`` has passed (:class:`RateLimited`, never a sleep).
* **Clock.** The offset to the server clock is measured at start and again on ``-1021``
  (timestamp outside ``recvWindow``), after which the call is retried once.
* **Bounded calls.** Each request has a timeout; a timeout or broken connection is
  :class:`ExchangeUnavailable`, meaning *the outcome is unknown* — the caller must query
  the client order id before sending again, never re-send blind.
* **Typed answers.** Responses are parsed into frozen records; a missing field or wrong
  type is an :class:`~quantum.exchange.venues.binance.filters.ExchangeDataError` naming
  the field.

Conditional orders (``STOP_MARKET``, ``TAKE_PROFIT_MARKET``) go to the algo-order API, as
python-binance ≥ 1.0.33 routes them; their ids are ``clientAlgoId``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests
from binance import Client
from binance.exceptions import BinanceAPIException, BinanceRequestException

from quantum.exchange.income import IncomeRecord
from quantum.exchange.venues.binance.filters import (
    ExchangeDataError,
    OrderRefused,
    SymbolFilters,
    decimal_of,
    text,
)
from quantum.exchange.venues.binance.weights import ENDPOINT_WEIGHTS, RateLimited, WeightBudget

TIMESTAMP_OUTSIDE_WINDOW = -1021
UNKNOWN_ORDER = -2013
DUPLICATE_CLIENT_ORDER_ID = -4116
# Answers that say nothing about whether an order was placed: the backend timed out or the
# message bus answered oddly ("execution status unknown"), or the id is already taken (the
# order exists). An order given one of these is queried, never booked as a reject.
OUTCOME_UNKNOWN_CODES = frozenset({-1006, -1007, DUPLICATE_CLIENT_ORDER_ID})
CANCEL_REJECTED = -2011
NO_NEED_TO_CHANGE_MARGIN_TYPE = -4046
INVALID_SYMBOL = -1121
FINAL_STATUSES = frozenset({"FILLED", "CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH"})
_ALGO_UNKNOWN = frozenset({UNKNOWN_ORDER, -2011, -4500, -20110})
INCOME_PAGE = 1000  # the most records /fapi/v1/income answers in one call


class ExchangeRejected(RuntimeError):
    """The exchange answered with an error code (``-2019`` margin, ``-1111`` precision…)."""

    def __init__(self, code: int, message: str, status: int) -> None:
        super().__init__(f"Binance error {code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class ExchangeUnavailable(RuntimeError):
    """No answer (timeout, connection refused or cut): the outcome of the call is unknown."""


def _field(data: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(data, dict):
        raise ExchangeDataError(f"{where}: expected an object, got {type(data).__name__}")
    if name not in data:
        raise ExchangeDataError(f"{where}: field {name!r} missing")
    value = data[name]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ExchangeDataError(f"{where}: field {name!r} is a bool")
    if not isinstance(value, kind):
        raise ExchangeDataError(f"{where}: field {name!r} is {type(value).__name__}")
    return value


def _number(data: Any, name: str, where: str) -> float:
    return float(decimal_of(_field(data, name, (str, int, float), where), f"{where}.{name}"))


@dataclass(frozen=True)
class OrderState:
    """An order as the exchange reports it (REST or user data stream)."""

    symbol: str
    client_order_id: str
    order_id: int
    status: str
    side: str
    reduce_only: bool
    quantity: float
    executed_quantity: float
    average_price: float
    update_time: int

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_rest(cls, data: Any) -> OrderState:
        where = "order"
        return cls(
            symbol=_field(data, "symbol", str, where),
            client_order_id=_field(data, "clientOrderId", str, where),
            order_id=_field(data, "orderId", int, where),
            status=_field(data, "status", str, where),
            side=_field(data, "side", str, where),
            reduce_only=bool(data.get("reduceOnly", False)),
            quantity=_number(data, "origQty", where),
            executed_quantity=_number(data, "executedQty", where),
            average_price=_number(data, "avgPrice", where),
            update_time=int(data.get("updateTime") or data.get("time") or 0),
        )


@dataclass(frozen=True)
class ConditionalOrder:
    """A protective algo order (stop or take-profit) resting on the exchange."""

    symbol: str
    client_algo_id: str
    algo_id: int
    order_type: str
    side: str
    trigger_price: float
    status: str

    @classmethod
    def from_rest(cls, data: Any) -> ConditionalOrder:
        where = "algoOrder"
        return cls(
            symbol=_field(data, "symbol", str, where),
            client_algo_id=_field(data, "clientAlgoId", str, where),
            algo_id=_field(data, "algoId", int, where),
            order_type=_field(data, "orderType", str, where),
            side=_field(data, "side", str, where),
            trigger_price=_number(data, "triggerPrice", where),
            status=_field(data, "algoStatus", str, where),
        )


@dataclass(frozen=True)
class ExchangePosition:
    """A non-zero position on the exchange (one-way mode: ``amount`` is signed)."""

    symbol: str
    amount: float
    entry_price: float
    mark_price: float
    liquidation_price: float

    @property
    def side(self) -> str:
        return "LONG" if self.amount > 0 else "SHORT"

    @classmethod
    def from_rest(cls, data: Any) -> ExchangePosition:
        where = "positionRisk"
        return cls(
            symbol=_field(data, "symbol", str, where),
            amount=_number(data, "positionAmt", where),
            entry_price=_number(data, "entryPrice", where),
            mark_price=_number(data, "markPrice", where),
            liquidation_price=_number(data, "liquidationPrice", where),
        )


@dataclass(frozen=True)
class AccountState:
    """The futures account: wallet balance and the leverage set per symbol."""

    wallet_balance: float
    leverage: dict[str, int]

    @classmethod
    def from_rest(cls, data: Any, asset: str = "USDT") -> AccountState:
        where = "account"
        balance: float | None = None
        for row in _field(data, "assets", list, where):
            if _field(row, "asset", str, f"{where}.assets") == asset:
                balance = _number(row, "walletBalance", f"{where}.assets")
        if balance is None:
            balance = _number(data, "totalWalletBalance", where)
        leverage: dict[str, int] = {}
        for row in _field(data, "positions", list, where):
            symbol = _field(row, "symbol", str, f"{where}.positions")
            leverage[symbol] = int(_number(row, "leverage", f"{where}.positions"))
        return cls(wallet_balance=balance, leverage=leverage)


def income_from_rest(data: Any) -> IncomeRecord:
    """One element of ``/fapi/v1/income``; a missing or malformed field names itself."""
    where = "income"
    time_ms = _field(data, "time", int, where)
    trade_id = data.get("tradeId") or ""
    return IncomeRecord(symbol=_field(data, "symbol", str, where),
                        income_type=_field(data, "incomeType", str, where),
                        amount=_number(data, "income", where),
                        asset=_field(data, "asset", str, where), time_ms=time_ms,
                        tran_id=str(_field(data, "tranId", (int, str), where)),
                        trade_id=str(trade_id))


@dataclass
class CallTiming:
    """Where the time of the last call went: in python-binance and the network, or here."""

    total_seconds: float = 0.0
    client_seconds: float = 0.0
    calls: int = 0


class BinanceFutures:
    """Synchronous USDⓈ-M futures calls with filters, weight, clock and bounded timeouts."""

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        testnet: bool = True,
        rest_url: str | None = None,
        recv_window_ms: int = 5000,
        timeout_s: float = 5.0,
        budget: WeightBudget | None = None,
        filters_ttl_s: float = 3600.0,
    ) -> None:
        self.client = Client(api_key, api_secret, testnet=testnet, ping=False,
                             requests_params={"timeout": timeout_s})
        self.client.REQUEST_RECVWINDOW = recv_window_ms
        if rest_url:
            base = rest_url.rstrip("/") + "/fapi"
            self.client.FUTURES_URL = base
            self.client.FUTURES_TESTNET_URL = base
        self.budget = budget or WeightBudget()
        self.filters_ttl_s = filters_ttl_s
        self._filters: dict[str, SymbolFilters] = {}
        self._filters_loaded = -1e18
        self._configured: dict[str, tuple[int, str]] = {}
        self.timing = CallTiming()
        self.clock_offset_ms = 0

    # --- plumbing -------------------------------------------------------------------------

    def _observe(self, response: Any) -> None:
        headers = getattr(response, "headers", None)
        if headers is not None:
            self.budget.observe(headers)

    def _call(self, endpoint: str, method: Callable[..., Any], **params: Any) -> Any:
        weight = ENDPOINT_WEIGHTS.get(endpoint, 1)
        for attempt in range(2):
            self.budget.acquire(weight)
            started = time.perf_counter()
            try:
                result = method(**dict(params))
            except BinanceAPIException as e:
                self._observe(e.response)
                if e.status_code in (429, 418):
                    headers = getattr(e.response, "headers", {}) or {}
                    retry = headers.get("Retry-After")
                    wait = self.budget.ban(e.status_code, retry)
                    raise RateLimited(f"{endpoint}: HTTP {e.status_code} ({e.message}); "
                                      f"retry in {wait:.0f}s", wait) from None
                if e.code == TIMESTAMP_OUTSIDE_WINDOW and attempt == 0:
                    self.sync_time()
                    continue
                raise ExchangeRejected(int(e.code or 0), str(e.message), e.status_code) from None
            except (requests.Timeout, requests.ConnectionError) as e:
                raise ExchangeUnavailable(f"{endpoint}: no answer ({type(e).__name__})") from None
            except BinanceRequestException as e:
                raise ExchangeDataError(f"{endpoint}: {e.message}") from None
            except KeyError as e:  # python-binance indexing an answer that lacks a field
                raise ExchangeDataError(f"{endpoint}: field {e} missing") from None
            finally:
                self.timing.client_seconds += time.perf_counter() - started
                self.timing.calls += 1
            self._observe(self.client.response)
            return result
        raise AssertionError("unreachable: the retry loop returns or raises")

    def sync_time(self) -> int:
        """Measure the offset to the server clock (half the round trip corrected)."""
        before = time.time()
        answer = self._call("time", self.client.futures_time)
        after = time.time()
        server = int(_number(answer, "serverTime", "time"))
        self.clock_offset_ms = int(server - (before + after) / 2 * 1000)
        self.client.timestamp_offset = self.clock_offset_ms
        return self.clock_offset_ms

    # --- symbols --------------------------------------------------------------------------

    def load_filters(self, *, force: bool = False) -> dict[str, SymbolFilters]:
        if force or time.monotonic() - self._filters_loaded > self.filters_ttl_s:
            info = self._call("exchangeInfo", self.client.futures_exchange_info)
            symbols = _field(info, "symbols", list, "exchangeInfo")
            self._filters = {f.symbol: f for f in map(SymbolFilters.from_exchange_info, symbols)}
            self._filters_loaded = time.monotonic()
        return self._filters

    def listing(self) -> list[dict[str, Any]]:
        """Every symbol of ``exchangeInfo`` as the exchange describes it (status, contract
        type, quote asset, ``onboardDate``); also refreshes the cached filters."""
        info = self._call("exchangeInfo", self.client.futures_exchange_info)
        symbols = _field(info, "symbols", list, "exchangeInfo")
        self._filters = {f.symbol: f for f in map(SymbolFilters.from_exchange_info, symbols)}
        self._filters_loaded = time.monotonic()
        return [s for s in symbols if isinstance(s, dict)]

    def tickers_24h(self) -> list[dict[str, Any]]:
        """``GET /fapi/v1/ticker/24hr`` for every symbol (weight 40)."""
        answer = self._call("ticker24hr", self.client.futures_ticker)
        if not isinstance(answer, list):
            raise ExchangeDataError(f"ticker/24hr: expected a list, got {type(answer).__name__}")
        return answer

    def book_tickers(self) -> list[dict[str, Any]]:
        """``GET /fapi/v1/ticker/bookTicker`` for every symbol: best bid and ask (weight 5)."""
        answer = self._call("bookTicker", self.client.futures_orderbook_ticker)
        if not isinstance(answer, list):
            raise ExchangeDataError(
                f"ticker/bookTicker: expected a list, got {type(answer).__name__}")
        return answer

    def filters(self, symbol: str) -> SymbolFilters:
        found = self.load_filters().get(symbol)
        if found is None:
            raise OrderRefused(INVALID_SYMBOL, f"Invalid symbol: {symbol} is not listed by the "
                               "exchange")
        return found

    def configure(self, symbol: str, leverage: int, margin_type: str) -> None:
        """Set leverage and margin type once per symbol and value (both are idempotent)."""
        if self._configured.get(symbol) == (leverage, margin_type):
            return
        self._call("leverage", self.client.futures_change_leverage, symbol=symbol,
                   leverage=leverage)
        try:
            self._call("marginType", self.client.futures_change_margin_type, symbol=symbol,
                       marginType=margin_type)
        except ExchangeRejected as e:
            if e.code != NO_NEED_TO_CHANGE_MARGIN_TYPE:
                raise
        self._configured[symbol] = (leverage, margin_type)

    # --- orders ---------------------------------------------------------------------------

    def place_market(self, *, symbol: str, side: str, quantity: Decimal, client_order_id: str,
                     reduce_only: bool) -> OrderState:
        """Send a market order (the quantity already rounded by the symbol's filters)."""
        params: dict[str, Any] = {
            "symbol": symbol, "side": side, "type": "MARKET", "quantity": text(quantity),
            "newClientOrderId": client_order_id, "newOrderRespType": "RESULT",
        }
        if reduce_only:
            params["reduceOnly"] = "true"
        return OrderState.from_rest(self._call("order", self.client.futures_create_order,
                                               **params))

    def query_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        """The order with this client id, or ``None`` when the exchange has none."""
        try:
            answer = self._call("order", self.client.futures_get_order, symbol=symbol,
                                origClientOrderId=client_order_id)
        except ExchangeRejected as e:
            if e.code == UNKNOWN_ORDER:
                return None
            raise
        return OrderState.from_rest(answer)

    def ensure_market(self, *, symbol: str, side: str, quantity: Decimal, client_order_id: str,
                      reduce_only: bool) -> tuple[OrderState, bool]:
        """Query by client id, send when the query does not find it: ``(order, sent_now)``.

        Reduce-only orders only (reconcile's close of a position the book does not know).
        A query can miss an order that exists (a request that timed out may still land, and
        a fresh order may not be visible yet), so sending on a miss can make a second order:
        for a reduce-only order that is harmless, as it cannot open or grow a position (the
        exchange refuses it with ``-2022`` once the position is closed). Entry orders never
        come here: the live venue resolves an uncertain entry by querying until it is known
        (:mod:`quantum.exchange.venues.binance.execution`)."""
        if not reduce_only:
            raise ValueError("ensure_market sends on a query miss: reduce-only orders only")
        existing = self.query_order(symbol, client_order_id)
        if existing is not None:
            return existing, False
        return self.place_market(symbol=symbol, side=side, quantity=quantity,
                                 client_order_id=client_order_id, reduce_only=reduce_only), True

    def cancel_order(self, symbol: str, client_order_id: str) -> bool:
        try:
            self._call("order", self.client.futures_cancel_order, symbol=symbol,
                       origClientOrderId=client_order_id)
        except ExchangeRejected as e:
            if e.code in (UNKNOWN_ORDER, CANCEL_REJECTED):
                return False
            raise
        return True

    def open_orders(self) -> list[OrderState]:
        answer = self._call("openOrders", self.client.futures_get_open_orders)
        if not isinstance(answer, list):
            raise ExchangeDataError(f"openOrders: expected a list, got {type(answer).__name__}")
        return [OrderState.from_rest(o) for o in answer]

    # --- protective (conditional) orders --------------------------------------------------

    def place_protective(self, *, symbol: str, side: str, order_type: str, trigger: float,
                         client_algo_id: str) -> ConditionalOrder:
        """A reduce-only ``STOP_MARKET``/``TAKE_PROFIT_MARKET`` closing the whole position,
        triggered on the mark price: it works while the fleet is down."""
        price = self.filters(symbol).round_price(trigger)
        answer = self._call(
            "algoOrder", self.client.futures_create_order, symbol=symbol, side=side,
            type=order_type, stopPrice=text(price), closePosition="true",
            workingType="MARK_PRICE", clientAlgoId=client_algo_id,
        )
        return ConditionalOrder.from_rest(answer)

    def cancel_protective(self, symbol: str, client_algo_id: str) -> bool:
        try:
            self._call("algoOrder", self.client.futures_cancel_order, symbol=symbol,
                       clientAlgoId=client_algo_id)
        except ExchangeRejected as e:
            if e.code in _ALGO_UNKNOWN:
                return False
            raise
        return True

    def open_protective(self) -> list[ConditionalOrder]:
        answer = self._call("openAlgoOrders", self.client.futures_get_open_orders,
                            conditional=True)
        if not isinstance(answer, list):
            raise ExchangeDataError(f"openAlgoOrders: expected a list, got "
                                    f"{type(answer).__name__}")
        return [ConditionalOrder.from_rest(o) for o in answer]

    # --- account --------------------------------------------------------------------------

    def positions(self) -> list[ExchangePosition]:
        answer = self._call("positionRisk", self.client.futures_position_information)
        if not isinstance(answer, list):
            raise ExchangeDataError(f"positionRisk: expected a list, got {type(answer).__name__}")
        parsed = (ExchangePosition.from_rest(p) for p in answer)
        return [p for p in parsed if p.amount != 0]

    def account(self) -> AccountState:
        """Wallet balance and per-symbol leverage (``GET /fapi/v2/account``)."""
        return AccountState.from_rest(self._call("account", self.client.futures_account))

    def wallet_balance(self, asset: str = "USDT") -> float:
        answer = self._call("balance", self.client.futures_account_balance)
        if not isinstance(answer, list):
            raise ExchangeDataError(f"balance: expected a list, got {type(answer).__name__}")
        for row in answer:
            if _field(row, "asset", str, "balance") == asset:
                return _number(row, "balance", "balance")
        raise ExchangeDataError(f"balance: no {asset} row")

    def income(self, start_ms: int, end_ms: int, *, page: int = INCOME_PAGE,
               max_pages: int = 50) -> list[IncomeRecord]:
        """The income history from ``start_ms`` to ``end_ms`` (inclusive), oldest first
        (``GET /fapi/v1/income``, weight 30 a page).

        Binance answers at most ``limit`` (1000) records per call, oldest first; the next
        page starts at the last record's time (records sharing that millisecond come again
        and are dropped by ``(incomeType, tranId)``). More than ``max_pages`` pages is an
        :class:`ExchangeDataError`: the window is too wide for one pass."""
        seen: set[tuple[str, str]] = set()
        records: list[IncomeRecord] = []
        since = start_ms
        for _ in range(max_pages):
            answer = self._call("income", self.client.futures_income_history,
                                startTime=since, endTime=end_ms, limit=page)
            if not isinstance(answer, list):
                raise ExchangeDataError(f"income: expected a list, got {type(answer).__name__}")
            fresh = 0
            for record in map(income_from_rest, answer):
                key = (record.income_type, record.tran_id)
                if key not in seen:
                    seen.add(key)
                    records.append(record)
                    fresh += 1
            if len(answer) < page:
                return sorted(records, key=lambda r: (r.time_ms, r.tran_id))
            last = max(record.time_ms for record in records)
            since = last if fresh and last > since else since + 1
        raise ExchangeDataError(f"income: more than {max_pages} pages of {page} from "
                                f"{start_ms} to {end_ms}; shorten the window")

    def start_user_stream(self) -> str:
        answer = self._call("listenKey", self.client.futures_stream_get_listen_key)
        if not isinstance(answer, str) or not answer:
            raise ExchangeDataError("listenKey: missing or not a string")
        return answer

    def keepalive_user_stream(self, listen_key: str) -> None:
        self._call("listenKey", self.client.futures_stream_keepalive, listenKey=listen_key)
