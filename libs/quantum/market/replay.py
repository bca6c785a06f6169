"""Replay of kline files as market events, identical in shape to the live source's.

For every bar time (a *step*) the source publishes, per symbol, a ``market.tick`` carrying
the bar (open/high/low/close, mark price, and the funding rate when a funding settlement
falls at the bar's close) and a ``market.kline``. Replay runs in event time, so the
outcome is the same at any speed:

* The ticks let execution fill orders queued on the previous bar, settle funding and mark
  positions, and the exit-brain act on open positions (its exits go back to execution).
* The klines drive features → ai-engine → sizing → risk → apply-layer, whose orders queue
  for the next bar. Sizing and risk read the portfolio, so on the event clock they first
  wait until the bar's settlement (execution and exit-brain) is quiescent: they see the
  portfolio after the bar, exactly as if the ticks had been drained first.

The source then waits (the barrier) until every consumer group has handled everything, and
only then publishes the next bar. After the last step a ``market.end_of_data`` event lets the
exit-brain close what is still open.

The barrier also bounds the streams: nothing is published while the fleet is behind.

A killed source resumes exactly where it was: a step (its ticks and klines, and the progress
record of the step before) is written in one ``MULTI``/``EXEC``, so a step is on the streams
whole or not at all, and a restarted source continues after the newest kline on the stream
(or the recorded position, whichever is later), waiting for the barrier first. Nothing is
published twice, so the restarted run gives the same events and trades as an uninterrupted one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis
import structlog

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.runner import publish
from quantum.bus.streams import StreamSpec
from quantum.contracts.events import EndOfData, Kline, Tick
from quantum.contracts.streams import MARKET_KLINES, MARKET_TICK
from quantum.replay.barrier import Barrier
from quantum.replay.data import INTERVAL_MS, SymbolData, load_symbol, mark_at

log = structlog.get_logger(component="replay")


def kline_event(
    symbol: str, interval: str, open_time: int, bar: Sequence[float], source: str, origin: str
) -> Envelope[Any]:
    close_time = open_time + INTERVAL_MS[interval] - 1
    payload = Kline(
        symbol=symbol,
        interval=interval,
        open_time=open_time,
        close_time=close_time,
        open=bar[0],
        high=bar[1],
        low=bar[2],
        close=bar[3],
        volume=bar[4],
        source=origin,
    )
    return new_envelope(
        payload, ts=close_time, source=source, key=f"{symbol}:{interval}:{open_time}"
    )


def tick_event(
    symbol: str,
    ts: int,
    bar: Sequence[float],
    source: str,
    origin: str,
    mark_price: float | None = None,
    funding_rate: float | None = None,
) -> Envelope[Any]:
    payload = Tick(
        symbol=symbol,
        ts=ts,
        open=bar[0],
        high=bar[1],
        low=bar[2],
        close=bar[3],
        mark_price=mark_price,
        funding_rate=funding_rate,
        source=origin,
    )
    return new_envelope(payload, ts=ts, source=source, key=f"{symbol}:{ts}")


@dataclass(frozen=True)
class Step:
    open_time: int
    ticks: list[tuple[StreamSpec, Envelope[Any]]]
    klines: list[tuple[StreamSpec, Envelope[Any]]]


class ReplaySource:
    """Steps through the data of several symbols in event time."""

    def __init__(
        self,
        data_dir: Path,
        symbols: Sequence[str],
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        interval: str = "5m",
        source_name: str = "market-publisher",
        loaded: dict[str, SymbolData] | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("no symbols to replay")
        self.interval = interval
        self.source_name = source_name
        self.data: dict[str, SymbolData] = {
            s: loaded[s] if loaded is not None and s in loaded
            else load_symbol(data_dir, s, start_ms=start_ms, end_ms=end_ms, interval=interval)
            for s in sorted(symbols)
        }
        empty = [s for s, d in self.data.items() if d.open_time.size == 0]
        if empty:
            raise ValueError(f"no bars in the requested range for {', '.join(empty)}")
        self.times = np.unique(np.concatenate([d.open_time for d in self.data.values()]))
        self._index = {
            s: {int(t): i for i, t in enumerate(d.open_time)} for s, d in self.data.items()
        }

    @property
    def total_klines(self) -> int:
        return sum(int(d.open_time.size) for d in self.data.values())

    def step(self, open_time: int) -> Step:
        step_ms = INTERVAL_MS[self.interval]
        ticks: list[tuple[StreamSpec, Envelope[Any]]] = []
        klines: list[tuple[StreamSpec, Envelope[Any]]] = []
        for symbol, data in self.data.items():
            i = self._index[symbol].get(open_time)
            if i is None:
                continue
            bar = data.ohlcv[i].tolist()
            close_time = open_time + step_ms - 1
            funding = data.funding.get(open_time + step_ms)
            ticks.append(
                (
                    MARKET_TICK,
                    tick_event(
                        symbol,
                        close_time,
                        bar,
                        self.source_name,
                        "replay",
                        mark_price=mark_at(data, close_time),
                        funding_rate=funding,
                    ),
                )
            )
            klines.append(
                (
                    MARKET_KLINES,
                    kline_event(symbol, self.interval, open_time, bar, self.source_name, "replay"),
                )
            )
        return Step(open_time, ticks, klines)

    def klines_through(self, open_time: int) -> int:
        """How many klines the steps up to and including ``open_time`` hold."""
        return sum(
            int(np.searchsorted(d.open_time, open_time, side="right")) for d in self.data.values()
        )

    def end_event(self) -> Envelope[Any]:
        last = int(self.times[-1]) + INTERVAL_MS[self.interval] - 1
        payload = EndOfData(symbols=tuple(self.data), last_ts=last)
        return new_envelope(payload, ts=last, source=self.source_name, key=f"end:{last}")


@dataclass
class ReplayStats:
    steps: int = 0
    klines: int = 0
    barrier_seconds: float = 0.0
    publish_seconds: float = 0.0


def _never() -> bool:
    return False


def _pause(seconds: float, stop: threading.Event | None,
           tick: Callable[[], None] | None) -> bool:
    """Sleep ``seconds`` (none if not positive) in short steps, ticking; False when
    ``stop`` cut it short."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if tick is not None:
            tick()
        if stop is None:
            time.sleep(min(0.5, remaining))
        elif stop.wait(min(0.5, remaining)):
            return False
    return True


def drive(
    source: ReplaySource,
    client: redis.Redis,
    barrier: Barrier,
    *,
    state_key: str,
    speed: float | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    barrier_timeout: float = 120.0,
    tick: Callable[[], None] | None = None,
) -> ReplayStats:
    """Publish every step behind the barrier; resume after the last completed step.

    ``tick`` (the watchdog) is called while waiting, on the barrier and between paced
    steps; a ``stop`` set meanwhile ends those waits at once and the replay returns with
    the last completed step recorded, to resume from there."""
    stats = ReplayStats()
    total = source.total_klines
    resume_after = _resume_point(client, source, state_key)
    if resume_after is None:
        log.info("replay already complete")
        return stats
    progress_state: dict[str, Any] = {}
    if resume_after >= 0:
        stats.klines = source.klines_through(resume_after)
        progress_state = {
            "status": "running",
            "last_open_time": resume_after,
            "klines_done": stats.klines,
            "klines_total": total,
        }
        log.warning("replay resuming", after_open_time=resume_after, klines_done=stats.klines)

    stopped: Callable[[], bool] = stop.is_set if stop is not None else _never
    settle = partial(barrier.wait, barrier_timeout, tick=tick, stop=stopped)

    if not settle():  # every consumer group exists and is idle
        return stats
    wall_start = time.monotonic()
    first_time = int(source.times[0])
    for open_time in source.times.tolist():
        if stopped():
            break
        if open_time <= resume_after:
            continue
        step = source.step(open_time)
        if speed is not None and not _pause(
            wall_start + (open_time - first_time) / 1000.0 / speed - time.monotonic(), stop, tick
        ):
            break
        started = time.perf_counter()
        pipe = client.pipeline(transaction=True)
        # Ticks before klines, in one transaction: when a kline (and so any intent it causes)
        # exists, its bar's ticks exist too, and sizing and risk wait for them to settle; a
        # source killed mid-publish leaves the whole step or none of it.
        publish(client, step.ticks + step.klines, pipe=pipe)
        if progress_state:  # the previous step is complete: record it with this publish
            pipe.set(state_key, orjson.dumps(progress_state))
        pipe.execute()
        stats.publish_seconds += time.perf_counter() - started
        if not settle():
            break  # not recorded as complete: a resumed replay starts after the last recorded step
        stats.steps += 1
        stats.klines += len(step.klines)
        progress_state = {
            "status": "running",
            "last_open_time": open_time,
            "klines_done": stats.klines,
            "klines_total": total,
        }
        if progress is not None:
            progress(stats.klines, total)
    if not stopped():
        _finish(client, source, barrier, settle, state_key, stats)
    stats.barrier_seconds = barrier.wait_seconds
    return stats


def _finish(client: redis.Redis, source: ReplaySource, barrier: Barrier,
            settle: Callable[[], bool], state_key: str, stats: ReplayStats) -> None:
    """Publish the end of data, wait for the fleet to handle it and record the replay done
    (unless stopped meanwhile)."""
    end = source.end_event()
    if not _is_newest(client, MARKET_TICK, end):  # not published before a restart
        publish(client, [(MARKET_TICK, end)])
    if not settle():
        return
    stats.barrier_seconds = barrier.wait_seconds
    client.set(
        state_key,
        orjson.dumps(
            {
                "status": "done",
                "first_open_time": int(source.times[0]),
                "last_open_time": int(source.times[-1]),
                "klines_done": stats.klines,
                "klines_total": source.total_klines,
                "steps": stats.steps,
                "barrier_checks": barrier.checks,
                "barrier_seconds": stats.barrier_seconds,
                "publish_seconds": stats.publish_seconds,
            }
        ),
    )


def _resume_point(client: redis.Redis, source: ReplaySource, state_key: str) -> int | None:
    """The open time of the last step already published (-1: none); None when done."""
    resume_after = -1
    raw = client.get(state_key)
    if raw is not None:
        previous = orjson.loads(raw)
        if previous.get("status") == "done":
            return None
        resume_after = int(previous.get("last_open_time", -1))
    # The newest step on the stream may be one the progress record does not name yet (it
    # is recorded with the next step's publish): it is whole, so carry on after it.
    return max(resume_after, _newest_open_time(client, source.source_name))


def _newest_open_time(client: redis.Redis, source_name: str) -> int:
    """The open time of the newest kline this source put on the stream; -1 when none."""
    for _, fields in client.xrevrange(MARKET_KLINES.key, count=1):
        if fields.get(b"source") != source_name.encode():
            return -1
        try:
            return int(orjson.loads(fields[b"payload"])["open_time"])
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
            return -1  # not one of ours: start from the recorded position
    return -1


def _is_newest(client: redis.Redis, stream: StreamSpec, envelope: Envelope[Any]) -> bool:
    """Whether ``envelope`` is the newest entry of ``stream`` (published before a restart)."""
    newest = client.xrevrange(stream.key, count=1)
    return bool(newest) and newest[0][1].get(b"id") == envelope.id.encode()
