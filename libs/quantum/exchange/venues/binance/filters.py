"""Symbol filters from ``exchangeInfo`` and the rounding every order goes through.

Binance refuses an order whose price is not a multiple of the tick size (``PRICE_FILTER``),
whose quantity is not a multiple of the step size (``LOT_SIZE`` for limit and stop
orders, ``MARKET_LOT_SIZE`` for market orders) or whose notional is below
``MIN_NOTIONAL``. Rounding is done in :class:`~decimal.Decimal`, never in floats, because
``0.1 + 0.2`` style residues are exactly what makes an exchange answer ``-1111``
("Precision is over the maximum defined for this asset"). Quantities are always rounded
*down* (never more risk than sized); prices to the nearest tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any


class ExchangeDataError(ValueError):
    """An exchange answer missing a field or holding an unexpected type; names which."""


class OrderRefused(ValueError):
    """An order that cannot satisfy the symbol's filters even after rounding."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decimal_of(value: Any, where: str) -> Decimal:
    """A Decimal from an exchange field (a string or number); the error names the field."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ExchangeDataError(f"{where}: expected a decimal, got {type(value).__name__}")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise ExchangeDataError(f"{where}: {value!r} is not a decimal") from None
    if not result.is_finite():
        raise ExchangeDataError(f"{where}: {value!r} is not finite")
    return result


def text(value: Decimal) -> str:
    """A Decimal as Binance wants it: positional, no exponent, no trailing zeros."""
    formatted = format(value.normalize(), "f")
    return formatted if formatted not in ("-0", "") else "0"


@dataclass(frozen=True)
class SymbolFilters:
    """The trading rules of one symbol.

    Attributes:
        symbol: the symbol these rules apply to.
        tick_size: prices must be a multiple of it (``PRICE_FILTER``).
        min_price / max_price: price bounds (0 = unbounded).
        step_size / min_quantity / max_quantity: ``LOT_SIZE``, for limit and stop orders.
        market_step_size / market_min_quantity / market_max_quantity: ``MARKET_LOT_SIZE``.
        min_notional: smallest price × quantity accepted (``MIN_NOTIONAL``).
    """

    symbol: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_quantity: Decimal
    max_quantity: Decimal
    market_step_size: Decimal
    market_min_quantity: Decimal
    market_max_quantity: Decimal
    min_notional: Decimal

    @classmethod
    def from_exchange_info(cls, entry: Any) -> SymbolFilters:
        """Parse one element of ``exchangeInfo.symbols``; refuses a malformed one by name."""
        if not isinstance(entry, dict):
            raise ExchangeDataError(f"exchangeInfo symbol entry is {type(entry).__name__}")
        symbol = entry.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise ExchangeDataError("exchangeInfo symbol entry without a 'symbol' string")
        raw = entry.get("filters")
        if not isinstance(raw, list):
            raise ExchangeDataError(f"{symbol}: 'filters' missing or not a list")
        by_type = {f.get("filterType"): f for f in raw if isinstance(f, dict)}

        def field(filter_type: str, name: str) -> Decimal:
            block = by_type.get(filter_type)
            if block is None:
                raise ExchangeDataError(f"{symbol}: filter {filter_type} missing")
            if name not in block:
                raise ExchangeDataError(f"{symbol}: {filter_type}.{name} missing")
            return decimal_of(block[name], f"{symbol}: {filter_type}.{name}")

        lot = ("LOT_SIZE", "stepSize"), ("LOT_SIZE", "minQty"), ("LOT_SIZE", "maxQty")
        market = "MARKET_LOT_SIZE" if "MARKET_LOT_SIZE" in by_type else "LOT_SIZE"
        filters = cls(
            symbol=symbol,
            tick_size=field("PRICE_FILTER", "tickSize"),
            min_price=field("PRICE_FILTER", "minPrice"),
            max_price=field("PRICE_FILTER", "maxPrice"),
            step_size=field(*lot[0]),
            min_quantity=field(*lot[1]),
            max_quantity=field(*lot[2]),
            market_step_size=field(market, "stepSize"),
            market_min_quantity=field(market, "minQty"),
            market_max_quantity=field(market, "maxQty"),
            min_notional=field("MIN_NOTIONAL", "notional"),
        )
        if filters.tick_size <= 0 or filters.step_size <= 0 or filters.market_step_size <= 0:
            raise ExchangeDataError(f"{symbol}: tick or step size is not positive")
        return filters

    # --- rounding -------------------------------------------------------------------------

    def round_price(self, price: float | Decimal) -> Decimal:
        """The nearest multiple of the tick size, kept inside the price bounds."""
        value = Decimal(str(price))
        ticks = (value / self.tick_size).to_integral_value(rounding=ROUND_HALF_EVEN)
        rounded = max(ticks, Decimal(1)) * self.tick_size
        if self.max_price > 0:
            rounded = min(rounded, (self.max_price / self.tick_size).to_integral_value(
                rounding=ROUND_DOWN) * self.tick_size)
        if rounded < self.min_price:
            rounded = self.min_price
        return rounded

    def round_quantity(self, quantity: float | Decimal, *, market: bool = True) -> Decimal:
        """Down to a multiple of the step size, capped at the maximum quantity."""
        step = self.market_step_size if market else self.step_size
        cap = self.market_max_quantity if market else self.max_quantity
        value = Decimal(str(quantity))
        steps = (value / step).to_integral_value(rounding=ROUND_DOWN)
        rounded = steps * step
        if cap > 0:
            rounded = min(rounded, (cap / step).to_integral_value(rounding=ROUND_DOWN) * step)
        return rounded

    def prepare(self, quantity: float, reference_price: float, *, market: bool = True,
                reduce_only: bool = False) -> Decimal:
        """A quantity ready to send, or :class:`OrderRefused` with Binance's code.

        Reduce-only orders are exempt from the minimum notional, as on Binance, so an exit
        of a small remainder is never refused."""
        rounded = self.round_quantity(quantity, market=market)
        minimum = self.market_min_quantity if market else self.min_quantity
        if rounded <= 0 or rounded < minimum:
            raise OrderRefused(-4003, f"{self.symbol}: quantity {quantity} rounds to {rounded}, "
                               f"below the minimum {text(minimum)}")
        notional = rounded * Decimal(str(reference_price))
        if not reduce_only and notional < self.min_notional:
            raise OrderRefused(-4164, f"{self.symbol}: order's notional {notional:.4f} must be "
                               f"no smaller than {text(self.min_notional)}")
        return rounded

    # --- checking (the stand-in and the tests hold orders to this) -------------------------

    def violations(self, *, quantity: Decimal | None, price: Decimal | None, market: bool,
                   reduce_only: bool, reference_price: Decimal | None = None) -> list[str]:
        """Every filter the order breaks (empty: it passes)."""
        problems: list[str] = []
        if price is not None:
            if price % self.tick_size != 0:
                problems.append(f"price {price} is not a multiple of tick {self.tick_size}")
            if price < self.min_price or (self.max_price > 0 and price > self.max_price):
                problems.append(f"price {price} outside [{self.min_price}, {self.max_price}]")
        if quantity is not None:
            step = self.market_step_size if market else self.step_size
            low = self.market_min_quantity if market else self.min_quantity
            high = self.market_max_quantity if market else self.max_quantity
            if quantity % step != 0:
                problems.append(f"quantity {quantity} is not a multiple of step {step}")
            if quantity < low or (high > 0 and quantity > high):
                problems.append(f"quantity {quantity} outside [{low}, {high}]")
            basis = price if price is not None else reference_price
            if basis is not None and not reduce_only and quantity * basis < self.min_notional:
                problems.append(f"notional {quantity * basis} below {self.min_notional}")
        return problems
