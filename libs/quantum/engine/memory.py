"""The in-process bus: state, streams and consumer-group cursors in one process's memory.

It implements the state and history ports (:mod:`quantum.bus.ports`) and commits an
:class:`~quantum.bus.runner.Outbox` with the same checks and the same effect as the Redis
commit script: guards refuse a duplicate (``DUPLICATE``), a compare-and-set whose key moved
refuses the whole commit (``STALE``), and nothing is written unless every check passes.
Values are kept as the bytes a service wrote, so a service reads back exactly what it would
read from Redis.

Streams keep a bounded window (what warm-up and look-ups read); what a report needs in full
(closed trades, the equity curve) is recorded beside them. Envelopes are passed as objects:
they are frozen, and the fleet's encoding round-trips them exactly (orjson floats).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from quantum.bus.envelope import Envelope
from quantum.bus.runner import CommitRefused, Outbox
from quantum.bus.streams import StreamSpec

DEFAULT_RETAIN = 2048  # entries kept per stream: above every warm-up and look-up depth


class MemoryStream:
    """One stream: the newest entries, how many were ever added, and per-group cursors."""

    __slots__ = ("added", "cursors", "entries", "last_ts")

    def __init__(self, retain: int) -> None:
        self.entries: deque[Envelope[Any]] = deque(maxlen=retain)
        self.added = 0
        self.cursors: dict[str, int] = {}  # group -> entries delivered (absolute count)
        self.last_ts: int | None = None

    def append(self, envelope: Envelope[Any]) -> None:
        self.entries.append(envelope)
        self.added += 1
        self.last_ts = envelope.ts

    def undelivered(self, group: str) -> int:
        return self.added - self.cursors.get(group, 0)

    def take(self, group: str, count: int) -> list[Envelope[Any]]:
        """The next ``count`` entries for ``group`` (delivered and acked at once: a batch the
        engine hands over is handled, or the run fails)."""
        start = self.cursors.get(group, 0)
        first_kept = self.added - len(self.entries)
        if start < first_kept:
            raise RuntimeError(f"group {group} fell {first_kept - start} entries behind the "
                               "stream's retention window")
        n = min(count, self.added - start)
        offset = start - first_kept
        self.cursors[group] = start + n
        return [self.entries[offset + i] for i in range(n)]


class MemoryBus:
    """State keys, lists, sorted sets and streams of one in-process run."""

    def __init__(self, retain: int = DEFAULT_RETAIN) -> None:
        self.retain = retain
        self.values: dict[str, bytes] = {}
        self.lists: dict[str, list[bytes]] = {}
        self.zsets: dict[str, dict[str, int]] = {}
        self.streams: dict[str, MemoryStream] = {}
        self.recorded: dict[str, list[Envelope[Any]]] = {}  # stream key -> every entry
        self.commits = 0
        self.consumers: dict[str, list[int]] = {}  # stream key -> ranks of its consumers
        self.touched: set[int] = set()  # ranks that may have entries to take

    # --- streams --------------------------------------------------------------------------

    def stream(self, spec: StreamSpec) -> MemoryStream:
        found = self.streams.get(spec.key)
        if found is None:
            found = self.streams[spec.key] = MemoryStream(self.retain)
        return found

    def record(self, spec: StreamSpec) -> None:
        """Keep every entry of ``spec`` (for the report), not only the retention window."""
        self.recorded.setdefault(spec.key, [])

    def publish(self, items: Sequence[tuple[StreamSpec, Envelope[Any]]]) -> None:
        consumers, touched = self.consumers, self.touched
        for spec, envelope in items:
            self.stream(spec).append(envelope)
            kept = self.recorded.get(spec.key)
            if kept is not None:
                kept.append(envelope)
            ranks = consumers.get(spec.key)
            if ranks:
                touched.update(ranks)

    # --- the state port -------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return self.values.get(key)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values = self.values
        return [values.get(key) for key in keys]

    def exists(self, key: str) -> bool:
        return key in self.values or key in self.lists or key in self.zsets

    def scores(self, key: str) -> dict[str, int]:
        return dict(self.zsets.get(key, {}))

    def items(self, key: str, start: int = 0, stop: int = -1) -> list[bytes]:
        found = self.lists.get(key, [])
        return found[start:] if stop == -1 else found[start:stop + 1]

    def set(self, key: str, value: object) -> None:
        """Seed a key before the run (the fleet's ``quantumctl init`` and policy write)."""
        self.values[key] = value if isinstance(value, bytes) else orjson.dumps(value)

    # --- the history port -----------------------------------------------------------------

    def handled(self, stream: StreamSpec, group: str, count: int) -> list[Envelope[Any]]:
        found = self.streams.get(stream.key)
        if found is None or count <= 0:
            return []
        delivered = found.cursors.get(group, 0)
        first_kept = found.added - len(found.entries)
        upto = delivered - first_kept
        if upto <= 0:
            return []
        return list(found.entries)[max(0, upto - count):upto]

    def newest(self, stream: StreamSpec, depth: int) -> Iterator[Envelope[Any]]:
        found = self.streams.get(stream.key)
        if found is None:
            return
        for i, envelope in enumerate(reversed(found.entries)):
            if i >= depth:
                return
            yield envelope

    def length(self, stream: StreamSpec) -> int:
        found = self.streams.get(stream.key)
        return len(found.entries) if found is not None else 0

    def last_arrival_ms(self, stream: StreamSpec) -> int | None:
        found = self.streams.get(stream.key)
        return found.last_ts if found is not None else None

    # --- the commit -----------------------------------------------------------------------

    def commit(self, out: Outbox) -> None:
        """Check, then write, as the Redis commit script does; refusals raise
        :class:`CommitRefused` before anything changed."""
        for key, member, _, _ in out.guards:
            if member in self.zsets.get(key, {}):
                raise CommitRefused("DUPLICATE", f"{key} {member}")
        for key, (expected, _) in out.swaps.items():
            if self.values.get(key) != expected:
                raise CommitRefused("STALE", f"{key} changed since it was read")
        self._write(out)
        self.commits += 1

    def _write(self, out: Outbox) -> None:
        if out.events:
            self.publish(out.events)
        values = self.values
        for key, value in out.state.items():
            values[key] = value
        for key in out.deletes:
            values.pop(key, None)
            self.lists.pop(key, None)
            self.zsets.pop(key, None)
        for key, (_, value) in out.swaps.items():
            values[key] = value
        for key, value, keep in out.appends:
            items = self.lists.setdefault(key, [])
            items.insert(0, value)
            del items[keep:]
        for key, member, score, keep in out.guards:
            members = self.zsets.setdefault(key, {})
            members[member] = score
            horizon = score - keep
            if len(members) % 1024 == 0:  # pruned in bulk: the same bound, amortised
                for old in [m for m, s in members.items() if s < horizon]:
                    del members[old]
