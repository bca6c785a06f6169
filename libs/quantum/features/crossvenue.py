"""Cross-exchange values for a Binance bar: basis to Bybit, funding spread, Coinbase premium.

They are *extras*, outside the model's feature schema (:mod:`quantum.features.schema`):
adding them to the schema would change its hash and refuse every trained model, and a
venue that is not configured (the aggregator is off by default) or is down would leave
the models without inputs they were trained on. The feature-publisher attaches them to
each :class:`~quantum.contracts.events.FeatureVector` in ``extras`` when they are
available, and names each one that is not in ``extras_missing`` with the reason. A missing
venue is therefore absent, never zero. A model or a study that wants them reads them from
there and decides what absence means.

For a bar of ``symbol`` closing at ``close_time`` with Binance's last price ``close``:

* ``xex_basis_bybit`` = Bybit's last price / Binance's − 1, Bybit's price being the newest
  observed at or before ``close_time`` and at most ``price_max_age_ms`` older;
* ``xex_premium_coinbase`` = Coinbase's spot price (USD) / Binance's (USDT) − 1, likewise;
  it includes USDT's own deviation from the dollar, as the usual "Coinbase premium" does;
* ``xex_funding_spread_bybit`` = Bybit's last settled funding rate − Binance's, each the
  newest settlement at or before ``close_time`` and within ``funding_max_age_ms``.

Only observations at or before the bar's close are used, so the values of a bar do not
depend on when the feature-publisher happened to read the other venue's stream.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from quantum.contracts.events import VenueFunding, VenueKline, VenueTick

BASIS_BYBIT = "xex_basis_bybit"
FUNDING_SPREAD_BYBIT = "xex_funding_spread_bybit"
PREMIUM_COINBASE = "xex_premium_coinbase"
EXTRA_NAMES = (BASIS_BYBIT, FUNDING_SPREAD_BYBIT, PREMIUM_COINBASE)

PRICE_MAX_AGE_MS = 60_000
FUNDING_MAX_AGE_MS = 24 * 3_600_000
KEEP_POINTS = 2_000  # observations kept per venue and symbol (ticks come about once a second)


@dataclass
class _Series:
    """Observations of one quantity in time order: (time, value)."""

    times: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, ts: int, value: float) -> None:
        if not self.times or ts > self.times[-1]:
            self.times.append(ts)
            self.values.append(value)
        else:
            i = bisect.bisect_left(self.times, ts)
            if i < len(self.times) and self.times[i] == ts:
                self.values[i] = value
            else:
                self.times.insert(i, ts)
                self.values.insert(i, value)
        if len(self.times) > KEEP_POINTS:
            del self.times[: len(self.times) - KEEP_POINTS]
            del self.values[: len(self.values) - KEEP_POINTS]

    def at(self, ts: int, max_age_ms: int) -> tuple[float | None, str]:
        """The newest value at or before ``ts`` no older than ``max_age_ms``, or None and why."""
        i = bisect.bisect_right(self.times, ts)
        if i == 0:
            return None, "none at or before the bar's close"
        age = ts - self.times[i - 1]
        if age > max_age_ms:
            return None, f"newest is {age // 1000} s old (limit {max_age_ms // 1000} s)"
        return self.values[i - 1], ""


class CrossVenue:
    """The other venues' prices and funding, and the extras they give a Binance bar."""

    def __init__(self, price_max_age_ms: int = PRICE_MAX_AGE_MS,
                 funding_max_age_ms: int = FUNDING_MAX_AGE_MS) -> None:
        self.price_max_age_ms = price_max_age_ms
        self.funding_max_age_ms = funding_max_age_ms
        self._prices: dict[tuple[str, str], _Series] = {}
        self._funding: dict[tuple[str, str], _Series] = {}

    def observe(self, payload: object) -> None:
        """Take in an ``exchange.normalized`` payload (other types are ignored)."""
        if isinstance(payload, VenueTick):
            self._series(self._prices, payload.venue, payload.symbol).add(payload.ts,
                                                                          payload.close)
        elif isinstance(payload, VenueKline):
            self._series(self._prices, payload.venue, payload.symbol).add(payload.close_time,
                                                                          payload.close)
        elif isinstance(payload, VenueFunding):
            self._series(self._funding, payload.venue, payload.symbol).add(
                payload.funding_time, payload.funding_rate)

    def observe_all(self, payloads: Iterable[object]) -> None:
        for payload in payloads:
            self.observe(payload)

    def observe_binance_funding(self, symbol: str, ts: int, rate: float | None) -> None:
        """A Binance settlement (a ``market.tick`` carrying a funding rate)."""
        if rate is not None:
            self._series(self._funding, "binance", symbol).add(ts, rate)

    def derive(self, symbol: str, close_time: int,
               close: float) -> tuple[dict[str, float], dict[str, str]]:
        """(available extras, missing extra → reason) for a Binance bar."""
        values: dict[str, float] = {}
        missing: dict[str, str] = {}
        for name, venue in ((BASIS_BYBIT, "bybit"), (PREMIUM_COINBASE, "coinbase")):
            price, why = self._at(self._prices, venue, symbol, close_time,
                                  self.price_max_age_ms)
            if price is None:
                missing[name] = f"{venue} price: {why}"
            else:
                values[name] = price / close - 1.0
        bybit, why_bybit = self._at(self._funding, "bybit", symbol, close_time,
                                    self.funding_max_age_ms)
        binance, why_binance = self._at(self._funding, "binance", symbol, close_time,
                                        self.funding_max_age_ms)
        if bybit is None:
            missing[FUNDING_SPREAD_BYBIT] = f"bybit funding: {why_bybit}"
        elif binance is None:
            missing[FUNDING_SPREAD_BYBIT] = f"binance funding: {why_binance}"
        else:
            values[FUNDING_SPREAD_BYBIT] = bybit - binance
        return values, missing

    @staticmethod
    def _series(table: dict[tuple[str, str], _Series], venue: str, symbol: str) -> _Series:
        series = table.get((venue, symbol))
        if series is None:
            series = table[(venue, symbol)] = _Series()
        return series

    @staticmethod
    def _at(table: dict[tuple[str, str], _Series], venue: str, symbol: str, ts: int,
            max_age_ms: int) -> tuple[float | None, str]:
        series = table.get((venue, symbol))
        if series is None:
            return None, "no data"
        return series.at(ts, max_age_ms)
