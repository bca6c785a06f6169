"""The ports of :mod:`quantum.bus.ports` on Redis: what a service of the fleet is handed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import redis

from quantum.bus.envelope import Envelope, EventTypes, InvalidEvent, decode
from quantum.bus.ports import Clock, Ports
from quantum.bus.streams import StreamSpec


class RedisState:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def get(self, key: str) -> bytes | None:
        value: bytes | None = self.client.get(key)
        return value

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return list(self.client.mget(list(keys))) if keys else []

    def exists(self, key: str) -> bool:
        return bool(self.client.exists(key))

    def scores(self, key: str) -> dict[str, int]:
        return {
            _text(member): int(score)
            for member, score in self.client.zrange(key, 0, -1, withscores=True)
        }

    def items(self, key: str, start: int = 0, stop: int = -1) -> list[bytes]:
        return list(self.client.lrange(key, start, stop))


class RedisHistory:
    def __init__(self, client: redis.Redis, types: EventTypes) -> None:
        self.client = client
        self.types = types

    def handled(self, stream: StreamSpec, group: str, count: int) -> list[Envelope[Any]]:
        """The entries up to the group's last delivered id, less those still pending."""
        try:
            groups = self.client.xinfo_groups(stream.key)
        except redis.ResponseError:
            return []
        delivered = next(
            (_text(g["last-delivered-id"]) for g in groups if _text(g["name"]) == group), "0-0"
        )
        if delivered == "0-0" or count <= 0:
            return []
        pending = {
            _text(p["message_id"])
            for p in self.client.xpending_range(stream.key, group, min="-", max="+",
                                                count=10_000)
        }
        entries = self.client.xrevrange(stream.key, max=delivered, count=count)
        out: list[Envelope[Any]] = []
        for entry_id, fields in reversed(entries or []):
            if entry_id is None or fields is None or _text(entry_id) in pending:
                continue
            try:
                out.append(decode(fields, self.types))
            except InvalidEvent:
                continue
        return out

    def newest(self, stream: StreamSpec, depth: int) -> Iterator[Envelope[Any]]:
        upper, seen = "+", 0
        while seen < depth:
            entries = self.client.xrevrange(stream.key, max=upper, count=min(64, depth - seen))
            if not entries:
                return
            for _entry_id, fields in entries:
                try:
                    yield decode(fields, self.types)
                except InvalidEvent:
                    continue
            seen += len(entries)
            upper = "(" + _text(entries[-1][0])

    def length(self, stream: StreamSpec) -> int:
        return int(self.client.xlen(stream.key)) if self.client.exists(stream.key) else 0

    def last_arrival_ms(self, stream: StreamSpec) -> int | None:
        last = self.client.xrevrange(stream.key, count=1)
        return int(_text(last[0][0]).split("-")[0]) if last else None


def redis_ports(client: redis.Redis, types: EventTypes, *, event_clock: bool,
                settle_channel: str | None = None) -> Ports:
    """The ports of one service of the fleet. On the event clock, ``settle()`` waits until
    the settling groups (execution, exit-brain) are quiescent (:class:`Settlement`)."""
    from quantum.registry.fleet import settlement_pairs
    from quantum.replay.barrier import Settlement
    from quantum.risk import fleetstate

    made: list[Settlement] = []

    def settle() -> None:  # built on first use: only sizing and risk ever wait
        if not made:
            made.append(Settlement(client, settlement_pairs(), enabled=True,
                                   channel=settle_channel))
        made[0].wait()

    return Ports(
        state=RedisState(client),
        clock=Clock(event=event_clock, settle=settle if event_clock else None),
        history=RedisHistory(client, types),
        alarm=lambda service, detail: fleetstate.declare_lost(client, service, detail),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
