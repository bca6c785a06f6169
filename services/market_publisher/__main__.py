"""market-publisher: replay of data files or live Binance futures, publishing identical events."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from quantum.app import COMMIT_CHANNEL, PublisherLease, start, wait_for_redis
from quantum.bus.runner import bus_unavailable, publish
from quantum.config import ConfigError
from quantum.observability.heartbeat import Beacon
from quantum.registry.fleet import REPLAY_KEY, replay_barrier_pairs
from services.market_publisher.config import Settings

NAME = "market-publisher"


def _ms(text: str | None, key: str) -> int | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"bad setting {key}: not an ISO time: {text!r}") from None
    if moment.tzinfo is None:
        raise ConfigError(f"bad setting {key}: give a time zone (e.g. 2025-10-01T00:00Z): {text!r}")
    return int(moment.timestamp() * 1000)


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ConfigError(f"bad setting QT_REPLAY_SPEED: 'max' or a positive factor, got {text!r}")
    return value


def last_published(client: Any, symbols: list[str], scan: int = 5000) -> dict[str, int]:
    """The open time of the newest kline already on the stream per symbol, so a restarted
    live source back-fills exactly what closed while it was down."""
    from quantum.bus.envelope import decode
    from quantum.contracts.events import EVENT_TYPES
    from quantum.contracts.streams import MARKET_KLINES

    found: dict[str, int] = {}
    for _, fields in client.xrevrange(MARKET_KLINES.key, count=scan):
        kline = decode(fields, EVENT_TYPES).payload
        if kline.symbol in symbols and kline.symbol not in found:
            found[kline.symbol] = kline.open_time
            if len(found) == len(symbols):
                break
    return found


def universe_symbols(client: Any) -> list[str] | None:
    """The universe service's selection in force, or None (none published, Redis away)."""
    import orjson

    from quantum.registry.fleet import UNIVERSE_KEY

    try:
        raw = client.get(UNIVERSE_KEY)
    except Exception as e:
        if not bus_unavailable(e):
            raise
        return None
    if raw is None:
        return None
    symbols = list(orjson.loads(raw)["symbols"])
    return symbols or None  # an empty selection streams what was streamed (no data is no help)


class UniverseFollower:
    """Live: streams what the universe says, re-read every ``period_s``, with no restart."""

    def __init__(self, client: Any, live: Any, log: Any, period_s: float = 5.0) -> None:
        self.client, self.live, self.log, self.period_s = client, live, log, period_s
        self.next_read = 0.0

    def poll(self) -> None:
        import time

        from quantum.exchange.venues.binance.market import InvalidSymbol

        now = time.monotonic()
        if now < self.next_read:
            return
        self.next_read = now + self.period_s
        wanted = universe_symbols(self.client)
        if wanted is None:
            return
        try:
            if self.live.resubscribe(wanted):
                self.log.info("following the universe", symbols=len(wanted))
        except InvalidSymbol as e:
            self.log.error("universe symbol refused", error=str(e))


def _symbols(settings: Settings) -> list[str]:
    symbols = [s.strip().upper() for s in settings.symbols.split(",") if s.strip()]
    if not symbols:
        raise ConfigError("bad setting QT_SYMBOLS: no symbols")
    return symbols


def _run_live(settings: Settings, client: Any, symbols: list[str], stop: Any, beacon: Any,
              log: Any, alive: Any) -> None:
    """Live: python-binance's futures sockets until stopped, following the universe."""
    from quantum.exchange.venues.binance.market import LiveSource

    if settings.follow_universe:
        symbols = universe_symbols(client) or symbols
    live = LiveSource(
        symbols,
        settings.interval,
        testnet=settings.binance_testnet,
        ws_url=settings.binance_ws_url,
        rest_url=settings.binance_rest_url,
        source_name=NAME,
        resume_from=last_published(client, symbols),
    )

    def publish_batch(items: list) -> None:  # type: ignore[type-arg]
        # A bus outage holds the batch (and the source) until Redis answers again; a
        # batch sent twice is harmless: event ids derive from the bar, and consumers
        # drop a bar they have seen.
        while not stop.is_set():
            try:
                publish(client, items)
                beacon.beat()
                return
            except Exception as e:
                if not bus_unavailable(e):
                    raise
                wait_for_redis(client, NAME, stop.is_set)

    follow = UniverseFollower(client, live, log) if settings.follow_universe else None

    def alive_and_following() -> None:
        alive()
        if follow is not None:
            follow.poll()

    live.run(publish_batch, stop, alive_and_following)


def main() -> None:
    started = start(NAME, Settings, _symbols)
    if started is None:
        return
    settings, log, client, stop = started.settings, started.log, started.client, started.stop
    symbols = _symbols(settings)
    beacon = Beacon(client, NAME, f"{NAME}-{settings.consumer_instance}",
                    settings.heartbeat_ttl_s)
    lease = PublisherLease(started, NAME, beacon) if settings.source != "replay" else None
    if lease is None:
        beacon.beat(force=True)
    beacon.notifier.ready()

    def alive() -> None:
        """The loop turns: ping the watchdog (and the heartbeat, while Redis answers)
        whether or not there is data: waiting on a connection, a back-off or the barrier
        is alive. Live, the lease is renewed too."""
        try:
            beacon.beat()
        except Exception as e:
            if not bus_unavailable(e):
                raise
        if lease is not None:
            lease.keep()

    if settings.source == "replay":
        from quantum.market.replay import ReplaySource, drive
        from quantum.replay.barrier import Barrier

        start_ms = _ms(settings.replay_start, "QT_REPLAY_START")
        end_ms = _ms(settings.replay_end, "QT_REPLAY_END")
        speed = _speed(settings.replay_speed)
        try:
            source = ReplaySource(
                Path(settings.data_dir),
                symbols,
                start_ms=start_ms,
                end_ms=end_ms,
                interval=settings.interval,
                source_name=NAME,
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None
        log.info(
            "replay starting",
            symbols=symbols,
            klines=source.total_klines,
            speed=settings.replay_speed,
        )

        def progress(done: int, total: int) -> None:
            beacon.beat()

        stats = drive(
            source,
            client,
            Barrier(client, replay_barrier_pairs(), COMMIT_CHANNEL),
            state_key=REPLAY_KEY,
            speed=speed,
            stop=stop,
            progress=progress,
            tick=alive,
        )
        log.info(
            "replay finished",
            steps=stats.steps,
            klines=stats.klines,
            barrier_seconds=round(stats.barrier_seconds, 3),
        )
        beacon.notifier.stopping()
    elif lease is not None:  # only the instance holding the lease streams
        lease.hold(lambda: _run_live(settings, client, symbols, stop, beacon, log, alive))


if __name__ == "__main__":
    main()
