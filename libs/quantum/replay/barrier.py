"""The replay barrier: wait until the fleet has fully handled what was published.

Replay runs in event time. Outcomes must not depend on how fast each service happens to
run, so the replay source publishes one step, then waits until every consumer group of
every stream is *quiescent*: nothing undelivered (its last-delivered id is the stream's
last id) and nothing pending (delivered, not acked). Because a runner writes its outputs
and its acks in one ``MULTI/EXEC``, a quiescent fleet has no work in flight anywhere: the
consequences of the step, however many hops long, have all been handled.

The check is one pipelined round trip of ``XINFO GROUPS`` plus ``XREVRANGE … COUNT 1`` per
stream. Waiting polls with a short, growing sleep.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import redis


class BarrierTimeout(RuntimeError):
    """The fleet did not drain in time; names the groups still busy."""


@dataclass(frozen=True)
class GroupState:
    stream: str
    group: str
    pending: int
    undelivered: bool


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Barrier:
    """Quiescence of a set of (stream key, group) pairs."""

    def __init__(self, client: redis.Redis, pairs: Iterable[tuple[str, str]]) -> None:
        self.client = client
        self.pairs = sorted(set(pairs))
        self.streams = sorted({stream for stream, _ in self.pairs})
        self.checks = 0
        self.wait_seconds = 0.0

    def states(self) -> list[GroupState]:
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_groups(stream)
            pipe.xrevrange(stream, count=1)
        replies = pipe.execute(raise_on_error=False)
        wanted = set(self.pairs)
        out: list[GroupState] = []
        for index, stream in enumerate(self.streams):
            groups, last = replies[2 * index], replies[2 * index + 1]
            if isinstance(groups, Exception):
                groups = []
            last_id = _id_tuple(_text(last[0][0])) if last and not isinstance(last, Exception) else (0, 0)
            seen = set()
            for g in groups:
                name = _text(g["name"])
                if (stream, name) not in wanted:
                    continue
                seen.add(name)
                delivered = _id_tuple(_text(g["last-delivered-id"]))
                out.append(GroupState(stream, name, int(g["pending"]), delivered < last_id))
            for stream_key, group in self.pairs:
                if stream_key == stream and group not in seen:
                    out.append(GroupState(stream, group, 0, True))  # group missing: not ready
        return out

    def busy(self) -> list[GroupState]:
        self.checks += 1
        return [s for s in self.states() if s.pending or s.undelivered]

    def wait(self, timeout: float = 120.0) -> None:
        """Block until quiescent; raise :class:`BarrierTimeout` after ``timeout`` seconds."""
        started = time.perf_counter()
        sleep = 0.0
        while True:
            busy = self.busy()
            if not busy:
                self.wait_seconds += time.perf_counter() - started
                return
            elapsed = time.perf_counter() - started
            if elapsed > timeout:
                names = ", ".join(f"{s.group}@{s.stream}(pending={s.pending})" for s in busy)
                raise BarrierTimeout(f"fleet did not drain within {timeout:.0f}s: {names}")
            if sleep:
                time.sleep(sleep)
            sleep = min(0.002, sleep * 2 if sleep else 0.0001)
