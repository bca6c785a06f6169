"""Warm-up history: the entries of a stream that a consumer group has already handled.

A service that keeps rolling state in memory (feature windows) rebuilds it at start from
what its group acknowledged before: the entries up to the group's last delivered id, less
those still pending (they will be handled again). Entries that no longer decode (a poison
entry the group dead-lettered and acked) are skipped, never raised: a warm-up must not turn
one bad entry into a service that cannot start.
"""

from __future__ import annotations

from typing import Any

import redis

from quantum.bus.envelope import Envelope, EventTypes, InvalidEvent, decode


def handled_entries(
    client: redis.Redis, stream_key: str, group: str, types: EventTypes, count: int
) -> list[Envelope[Any]]:
    """Up to ``count`` of the newest entries ``group`` has handled, oldest first, decoded."""
    try:
        groups = client.xinfo_groups(stream_key)
    except redis.ResponseError:
        return []
    delivered = next(
        (_text(g["last-delivered-id"]) for g in groups if _text(g["name"]) == group), "0-0"
    )
    if delivered == "0-0" or count <= 0:
        return []
    pending = {
        _text(p["message_id"])
        for p in client.xpending_range(stream_key, group, min="-", max="+", count=10_000)
    }
    entries = client.xrevrange(stream_key, max=delivered, count=count)
    out: list[Envelope[Any]] = []
    for entry_id, fields in reversed(entries or []):
        if entry_id is None or fields is None or _text(entry_id) in pending:
            continue
        try:
            out.append(decode(fields, types))
        except InvalidEvent:
            continue
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
