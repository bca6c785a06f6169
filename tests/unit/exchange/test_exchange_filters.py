"""Property tests: every order the adapter would send passes the symbol's filters."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantum.exchange.venues.binance.filters import ExchangeDataError, OrderRefused, SymbolFilters
from quantum.exchange.venues.binance.weights import RateLimited, WeightBudget
from quantum.standin.binance_rest import DEFAULT_RULES, exchange_info_entry

FILTERS = {s: SymbolFilters.from_exchange_info(exchange_info_entry(s, *r))
           for s, r in DEFAULT_RULES.items()}
prices = st.floats(min_value=0.0001, max_value=200_000, allow_nan=False, allow_infinity=False)
quantities = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=400, deadline=None)
@given(symbol=st.sampled_from(sorted(FILTERS)), quantity=quantities, price=prices,
       reduce_only=st.booleans())
def test_prepared_orders_pass_every_filter(symbol: str, quantity: float, price: float,
                                           reduce_only: bool) -> None:
    filters = FILTERS[symbol]
    try:
        prepared = filters.prepare(quantity, price, reduce_only=reduce_only)
    except OrderRefused as e:
        assert e.code in (-4003, -4164)
        return
    assert prepared <= Decimal(str(quantity))  # never more than sized
    assert filters.violations(quantity=prepared, price=None, market=True,
                              reduce_only=reduce_only, reference_price=Decimal(str(price))) == []


@settings(max_examples=400, deadline=None)
@given(symbol=st.sampled_from(sorted(FILTERS)), price=prices)
def test_rounded_prices_pass_the_price_filter(symbol: str, price: float) -> None:
    filters = FILTERS[symbol]
    rounded = filters.round_price(price)
    assert filters.violations(quantity=None, price=rounded, market=False,
                              reduce_only=True) == []
    assert abs(rounded - Decimal(str(price))) <= filters.tick_size or rounded == filters.min_price


def test_malformed_exchange_info_names_the_field() -> None:
    entry = exchange_info_entry("BTCUSDT", "0.10", "0.001", "100")
    entry["filters"] = [f for f in entry["filters"] if f["filterType"] != "PRICE_FILTER"]
    with pytest.raises(ExchangeDataError, match="PRICE_FILTER missing"):
        SymbolFilters.from_exchange_info(entry)
    entry = exchange_info_entry("BTCUSDT", "0.10", "0.001", "100")
    entry["filters"][1]["stepSize"] = ["0.001"]
    with pytest.raises(ExchangeDataError, match=r"LOT_SIZE\.stepSize"):
        SymbolFilters.from_exchange_info(entry)


def test_weight_budget_refuses_past_headroom_and_during_a_ban() -> None:
    now = [1000.0]
    budget = WeightBudget(limit=10, headroom=0.5, clock=lambda: now[0], wall=lambda: 60.0)
    for _ in range(5):
        budget.acquire(1)
    with pytest.raises(RateLimited):
        budget.acquire(1)
    budget.used = 0
    assert budget.ban(429, "7") == 7.0
    with pytest.raises(RateLimited) as caught:
        budget.acquire(1)
    assert caught.value.retry_after == pytest.approx(7.0)
    now[0] += 7.5
    budget.acquire(1)
