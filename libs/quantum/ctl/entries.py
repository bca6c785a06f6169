"""Stream replies in one shape: redis-py types them loosely (optional ids and fields, str or
bytes), so the commands normalise once here instead of guarding at every use."""

from __future__ import annotations

from typing import Any

Entry = tuple[str, dict[bytes, bytes]]


def text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def as_entries(reply: Any) -> list[Entry]:
    """``XRANGE``/``XREVRANGE`` reply → [(id, fields)]; entries without fields are dropped
    (``XAUTOCLAIM``-style tombstones), ids become text, fields stay bytes."""
    return [(text(entry_id), dict(fields)) for entry_id, fields in reply or [] if fields]


def as_stream_entries(reply: Any) -> list[Entry]:
    """``XREAD`` reply for one or more streams → the entries of all, in order."""
    return [entry for _, entries in reply or [] for entry in as_entries(entries)]
