"""Cross-exchange extras: computed from what is at or before the bar's close, each absent
(never zero) with a reason when its venue, price or settlement is missing or stale."""

from __future__ import annotations

import pytest

from quantum.contracts.events import VenueFunding, VenueKline, VenueTick
from quantum.features.crossvenue import (
    BASIS_BYBIT,
    EXTRA_NAMES,
    FUNDING_SPREAD_BYBIT,
    PREMIUM_COINBASE,
    CrossVenue,
)

CLOSE = 1_756_685_099_999


def tick(venue: str, ts: int, price: float) -> VenueTick:
    instrument = "BTCUSDT" if venue == "bybit" else "BTC-USD"
    return VenueTick(venue=venue, instrument=instrument, symbol="BTCUSDT", ts=ts, open=price,
                     high=price, low=price, close=price)


def test_no_other_venue_means_every_extra_absent_with_a_reason() -> None:
    values, missing = CrossVenue().derive("BTCUSDT", CLOSE, 100.0)
    assert values == {}
    assert set(missing) == set(EXTRA_NAMES)
    assert missing[BASIS_BYBIT] == "bybit price: no data"


def test_values_from_the_newest_observation_at_or_before_the_close() -> None:
    cross = CrossVenue()
    cross.observe(tick("bybit", CLOSE - 2_000, 101.0))
    cross.observe(tick("bybit", CLOSE + 500, 150.0))  # after the close: not this bar's
    cross.observe(tick("coinbase", CLOSE - 1_000, 99.0))
    cross.observe(VenueFunding(venue="bybit", instrument="BTCUSDT", symbol="BTCUSDT",
                               funding_time=CLOSE - 3_600_000, funding_rate=0.0003))
    cross.observe_binance_funding("BTCUSDT", CLOSE - 3_600_000, 0.0001)
    values, missing = cross.derive("BTCUSDT", CLOSE, 100.0)
    assert missing == {}
    assert values[BASIS_BYBIT] == pytest.approx(0.01)
    assert values[PREMIUM_COINBASE] == pytest.approx(-0.01)
    assert values[FUNDING_SPREAD_BYBIT] == pytest.approx(0.0002)


def test_a_stale_or_missing_venue_is_absent_not_zero() -> None:
    cross = CrossVenue(price_max_age_ms=60_000)
    cross.observe(tick("bybit", CLOSE - 120_000, 101.0))  # two minutes old at the close
    cross.observe(VenueKline(venue="coinbase", instrument="BTC-USD", symbol="BTCUSDT",
                             interval="5m", open_time=CLOSE - 299_999, close_time=CLOSE,
                             open=99, high=99, low=99, close=99, volume=1))
    values, missing = cross.derive("BTCUSDT", CLOSE, 100.0)
    assert BASIS_BYBIT not in values and "120 s old" in missing[BASIS_BYBIT]
    assert values[PREMIUM_COINBASE] == pytest.approx(-0.01)
    assert missing[FUNDING_SPREAD_BYBIT] == "bybit funding: no data"
    other = cross.derive("ETHUSDT", CLOSE, 100.0)
    assert other[0] == {} and set(other[1]) == set(EXTRA_NAMES)
