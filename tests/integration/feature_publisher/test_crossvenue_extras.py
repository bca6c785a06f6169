"""The feature-publisher attaches the cross-exchange extras to each vector from what
``exchange.normalized`` brought: present when the venue is, absent (never zero) with the
reason when it is not, and the model's schema values untouched either way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from quantum.bus.envelope import new_envelope
from quantum.contracts.events import FeatureVector, Kline, Tick, VenueFunding, VenueTick
from quantum.features import SCHEMA_HASH
from quantum.features.crossvenue import BASIS_BYBIT, FUNDING_SPREAD_BYBIT, PREMIUM_COINBASE

OPEN = 1_756_684_800_000
CLOSE = OPEN + 299_999
SCHEMA_VALUES = {"ret_1": 0.001}


def kline(symbol: str, close: float) -> Any:
    payload = Kline(symbol=symbol, interval="5m", open_time=OPEN, close_time=CLOSE, open=close,
                    high=close, low=close, close=close, volume=1.0, source="binance")
    return new_envelope(payload, ts=CLOSE, source="market-publisher", key=f"{symbol}:{OPEN}")


def venue_tick(venue: str, symbol: str, ts: int, price: float) -> Any:
    instrument = symbol if venue == "bybit" else symbol.removesuffix("USDT") + "-USD"
    payload = VenueTick(venue=venue, instrument=instrument, symbol=symbol, ts=ts, open=price,
                        high=price, low=price, close=price)
    return new_envelope(payload, ts=ts, source="cross-exchange-aggregator",
                        key=f"{venue}:{symbol}:{ts}")


def vector(out: Any) -> FeatureVector:
    (stream, envelope), = out.events
    assert stream.name == "features"
    payload: FeatureVector = envelope.payload
    assert payload.values == SCHEMA_VALUES and payload.schema_hash == SCHEMA_HASH
    return payload


def test_extras_present_with_both_venues_and_absent_without(
        on_bus: Callable[..., Any]) -> None:
    publisher = on_bus("feature-publisher", restore_bars=0)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        publisher.service.prime(symbol, {OPEN: dict(SCHEMA_VALUES)})
    funding = VenueFunding(venue="bybit", instrument="BTCUSDT", symbol="BTCUSDT",
                           funding_time=OPEN, funding_rate=0.0003)
    binance_settlement = Tick(symbol="BTCUSDT", ts=OPEN, open=100, high=100, low=100,
                              close=100, funding_rate=0.0001, source="binance")
    out = publisher.deliver(
        venue_tick("bybit", "BTCUSDT", CLOSE - 1_000, 101.0),
        venue_tick("coinbase", "BTCUSDT", CLOSE - 500, 99.5),
        new_envelope(funding, ts=OPEN, source="cross-exchange-aggregator", key="f"),
        new_envelope(binance_settlement, ts=OPEN, source="market-publisher", key="t"),
        kline("BTCUSDT", 100.0))
    btc = vector(out)
    assert btc.extras == pytest.approx({BASIS_BYBIT: 0.01, PREMIUM_COINBASE: -0.005,
                                        FUNDING_SPREAD_BYBIT: 0.0002})
    assert btc.extras_missing == {}
    out = publisher.deliver(kline("ETHUSDT", 2000.0))  # no other venue for ETH
    eth = vector(out)
    assert eth.extras == {}
    assert set(eth.extras_missing) == {BASIS_BYBIT, PREMIUM_COINBASE, FUNDING_SPREAD_BYBIT}
    assert eth.extras_missing[BASIS_BYBIT] == "bybit price: no data"
