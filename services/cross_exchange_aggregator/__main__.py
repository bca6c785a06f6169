"""cross-exchange-aggregator: Bybit and Coinbase public market data on ``exchange.normalized``.

Off by default: with no venue configured it stays up idle (heartbeat, watchdog, READY), so
the unit can be installed everywhere and switched on by its env file. Each venue runs in
its own task; one that fails reconnects with back-off while the others keep publishing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from quantum.app import PublisherLease, start, wait_for_redis
from quantum.bus.runner import bus_unavailable
from quantum.config import ConfigError
from quantum.crossexchange.bybit import BybitFeed
from quantum.crossexchange.coinbase import CoinbaseFeed
from quantum.crossexchange.feed import VenueFeed, run_feeds
from quantum.crossexchange.sink import RedisSink, resume_points
from quantum.observability.heartbeat import Beacon
from services.cross_exchange_aggregator.config import Settings

NAME = "cross-exchange-aggregator"
VENUES = ("bybit", "coinbase")


def venues_of(settings: Settings) -> list[str]:
    venues = [v.strip().lower() for v in settings.venues.split(",") if v.strip()]
    unknown = sorted(set(venues) - set(VENUES))
    if unknown:
        raise ConfigError(f"bad setting QT_VENUES: unknown venue(s) {', '.join(unknown)}; "
                          f"use {', '.join(VENUES)}")
    return list(dict.fromkeys(venues))


def symbols_of(settings: Settings) -> list[str]:
    symbols = [s.strip().upper() for s in settings.symbols.split(",") if s.strip()]
    if venues_of(settings) and not symbols:
        raise ConfigError("bad setting QT_SYMBOLS: no symbols")
    return symbols


def build_feeds(settings: Settings, client: object = None) -> list[VenueFeed]:
    """The configured feeds, resuming from what ``exchange.normalized`` already holds."""
    venues, symbols = venues_of(settings), symbols_of(settings)
    points = resume_points(client) if client is not None and venues else None
    feeds: list[VenueFeed] = []
    try:
        if "bybit" in venues:
            feeds.append(BybitFeed(
                symbols, settings.interval, ws_url=settings.bybit_ws_url,
                rest_url=settings.bybit_rest_url, source_name=NAME,
                resume_from=points.klines.get("bybit") if points else None,
                funding_from=points.funding.get("bybit") if points else None))
        if "coinbase" in venues:
            feeds.append(CoinbaseFeed(
                symbols, settings.interval, ws_url=settings.coinbase_ws_url,
                rest_url=settings.coinbase_rest_url, quote=settings.coinbase_quote,
                source_name=NAME,
                resume_from=points.klines.get("coinbase") if points else None))
    except ValueError as e:
        raise ConfigError(f"bad cross-exchange setting: {e}") from None
    return feeds


def _check(settings: Settings) -> None:
    build_feeds(settings)


def main() -> None:
    started = start(NAME, Settings, _check)
    if started is None:
        return
    settings, log, client, stop = started.settings, started.log, started.client, started.stop
    beacon = Beacon(client, NAME, f"{NAME}-{settings.consumer_instance}",
                    settings.heartbeat_ttl_s)
    beacon.notifier.ready()
    lease = PublisherLease(started, NAME, beacon)

    def alive() -> None:
        try:
            beacon.beat()
        except Exception as e:
            if not bus_unavailable(e):
                raise
        lease.keep()

    # The standby waits in hold() until the active one's lease lapses.
    lease.hold(lambda: _serve(settings, client, stop, alive, log))


def _serve(settings: Settings, client: Any, stop: threading.Event,
           alive: Callable[[], None], log: Any) -> None:
    feeds = build_feeds(settings, client)
    if not feeds:
        log.info("idle", reason="no venue configured (QT_VENUES is empty)")
        _idle(stop, alive)
    else:
        log.info("starting", venues=[f.venue for f in feeds],
                 symbols=[i.symbol for i in feeds[0].instruments], interval=settings.interval)
        sink = RedisSink(client, NAME, lambda: wait_for_redis(client, NAME, stop.is_set),
                         alive)
        run_feeds(feeds, sink, stop, alive)


def _idle(stop: threading.Event, alive: Callable[[], None]) -> None:
    """No venue: stay up, beating, until stopped."""
    while not stop.is_set():
        alive()
        stop.wait(1.0)


if __name__ == "__main__":
    main()
