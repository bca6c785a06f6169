"""Order round trip against the local venue stand-in, and the adapter's own overhead.

``run(quick)`` places market orders through :class:`BinanceFutures` (the real
python-binance client over loopback) and reports the round trip's p50/p99, and the time
per order spent in the adapter itself (rounding, weight accounting, parsing) rather than
in python-binance, HTTP and the stand-in.
"""

from __future__ import annotations

import time

import numpy as np

from quantum.exchange.venues.binance.http import BinanceFutures
from quantum.standin.binance_rest import FuturesVenue


def run(quick: bool) -> dict[str, float | int | str]:
    orders = 100 if quick else 1000
    round_trips: list[float] = []
    overheads: list[float] = []
    with FuturesVenue(balance=1e12, prices={"BTCUSDT": 60_000.0}) as venue:
        adapter = BinanceFutures(api_key=venue.account.api_key,
                                 api_secret=venue.account.api_secret, rest_url=venue.rest_url)
        adapter.sync_time()
        adapter.configure("BTCUSDT", 5, "ISOLATED")
        adapter.budget.limit = 10**9  # measure the venue, not the budget's refusals
        filters = adapter.filters("BTCUSDT")
        for i in range(orders):
            client_before = adapter.timing.client_seconds
            started = time.perf_counter()
            quantity = filters.prepare(0.0123456, 60_000.0)
            adapter.place_market(symbol="BTCUSDT", side="BUY" if i % 2 == 0 else "SELL",
                                 quantity=quantity, client_order_id=f"bench-{i}",
                                 reduce_only=False)
            elapsed = time.perf_counter() - started
            round_trips.append(elapsed)
            overheads.append(elapsed - (adapter.timing.client_seconds - client_before))
    trips = np.array(round_trips) * 1000
    own = np.array(overheads) * 1e6
    return {
        "orders": orders,
        "round_trip_p50_ms": round(float(np.percentile(trips, 50)), 3),
        "round_trip_p99_ms": round(float(np.percentile(trips, 99)), 3),
        "adapter_overhead_p50_us": round(float(np.percentile(own, 50)), 1),
        "adapter_overhead_p99_us": round(float(np.percentile(own, 99)), 1),
        "note": "loopback; the stand-in fills synchronously",
    }


if __name__ == "__main__":
    print(run(quick=True))
