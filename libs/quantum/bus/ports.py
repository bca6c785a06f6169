"""What a handler may see of the world: its ports.

A service is handed its ports when it is built and never holds a Redis client of its own,
so the same handlers run on the bus (:mod:`quantum.bus.redisports`, one process per service)
and in the in-process engine (:mod:`quantum.engine`, every service in one process):

* :class:`State` reads declared state keys (its own and others'): the bytes a key holds,
  exactly as committed. Writes never go here: they go into the :class:`~quantum.bus.runner.
  Outbox` and are committed with the acks of the batch that caused them.
* :class:`Clock` says what time it is for this service: the wall clock live, or on the
  event clock the newest event time it has handled. ``settle()`` is the replay's promise
  that a bar's fills, funding and exits are in the portfolio before sizing and risk read it:
  on the fleet a wait on the settling consumer groups, in the engine nothing at all, since
  the engine delivers a bar's settlement before anything else.
* :class:`History` reads recent entries of a stream (warm-up, looking a bar up).
* ``alarm`` declares the fleet's state lost (the runner's, never a handler's, business:
  it is used at restore, where there is no outbox).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from quantum.bus.envelope import Envelope
from quantum.bus.streams import StreamSpec


class State(Protocol):
    """Committed state, read-only."""

    def get(self, key: str) -> bytes | None: ...

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    def exists(self, key: str) -> bool: ...

    def scores(self, key: str) -> dict[str, int]:
        """A sorted set as member → score (a guard's members and their event times)."""
        ...

    def items(self, key: str, start: int = 0, stop: int = -1) -> list[bytes]:
        """A list's items from ``start`` to ``stop`` (inclusive, as ``LRANGE``): an
        :meth:`~quantum.bus.runner.Outbox.append` trail, newest first."""
        ...


class History(Protocol):
    """Recent entries of streams, decoded."""

    def handled(self, stream: StreamSpec, group: str, count: int) -> list[Envelope[Any]]:
        """Up to ``count`` of the newest entries ``group`` has handled (acked), oldest first.
        Entries that no longer decode are skipped: a warm-up never fails on a bad entry."""
        ...

    def newest(self, stream: StreamSpec, depth: int) -> Iterator[Envelope[Any]]:
        """Up to ``depth`` entries of ``stream``, newest first."""
        ...

    def length(self, stream: StreamSpec) -> int: ...

    def last_arrival_ms(self, stream: StreamSpec) -> int | None:
        """When the newest entry reached the bus (wall ms), or None for an empty stream."""
        ...


class Clock:
    """Wall time, or on the event clock the newest event time observed.

    The runner (bus or engine) calls :meth:`observe` with every event's time before the
    handler sees it, so "now" for a handler is the same on both engines.
    """

    def __init__(self, event: bool, settle: Callable[[], None] | None = None) -> None:
        self.event = event
        self.latest_ms = 0
        self._settle = settle

    def observe(self, ts_ms: int) -> None:
        if ts_ms > self.latest_ms:
            self.latest_ms = ts_ms

    def now_ms(self) -> int:
        return self.latest_ms if self.event else int(time.time() * 1000)

    def wall(self) -> float:
        """Seconds on the wall clock, for timers that are about real time (schedules, polls)."""
        return time.time()

    def settle(self) -> None:
        """Return once the current bar's settlement is in the portfolio (event clock)."""
        if self.event and self._settle is not None:
            self._settle()


def wall_clock() -> Clock:
    return Clock(event=False)


class Standing:
    """Whether this instance may act outside the bus right now (send an order, place a
    stop): ``standing()``. True unless the bus runner binds it to its service's lease
    (:meth:`bind`), where it is true only while the lease is held and was renewed within its
    TTL; the in-process engine runs one instance of each service, so there it stays true.
    A venue asks before each request it signs, so an instance that lost its lease during a
    long idle hook stops sending at the next order, not at the next turn."""

    def __init__(self) -> None:
        self._check: Callable[[], bool] = lambda: True

    def bind(self, check: Callable[[], bool]) -> None:
        self._check = check

    def __call__(self) -> bool:
        return self._check()


@dataclass
class Ports:
    """Everything a service is handed."""

    state: State
    clock: Clock
    history: History
    alarm: Callable[[str, str], None]  # (service, detail): declare the fleet's state lost
    standing: Standing = field(default_factory=Standing)  # may it act outside the bus now
