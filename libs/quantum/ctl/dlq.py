"""Reading and replaying the dead-letter stream (``quantum:stream:dlq``).

A DLQ entry (see :func:`quantum.bus.runner.dead_letter_fields`) records the stream and id
an entry came from, the consumer group, the reason and the original fields as JSON. Replay
puts those original fields back on their stream and deletes the DLQ entry in one
``MULTI/EXEC`` under ``WATCH``, so an entry is replayed once even if two operators replay at
the same time, and is never lost between the two steps. The consumer groups then see it as a
new entry; the envelope's event id is unchanged, so services that drop duplicates still do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from quantum.bus.streams import DLQ
from quantum.contracts.streams import CATALOGUE
from quantum.ctl.entries import as_entries, text

ENTRY_ID = re.compile(r"^\d+-\d+$")
_PAGE = 100


@dataclass
class ReplayOutcome:
    """What a replay did: (DLQ id, stream key, new id) per replayed entry, and the rest."""

    replayed: list[tuple[str, str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (DLQ id, why)


def describe(entry_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A DLQ entry as plain data; ``original`` parsed when it is valid JSON."""
    fields_text = {text(k): text(v) for k, v in fields.items()}
    original: Any = fields_text.get("original")
    if original is not None:
        try:
            original = orjson.loads(original)
        except orjson.JSONDecodeError:
            pass
    return {
        "id": entry_id,
        "stream": fields_text.get("stream"),
        "entry_id": fields_text.get("entry_id"),
        "group": fields_text.get("group"),
        "reason": fields_text.get("reason"),
        "ts": int(fields_text["ts"]) if fields_text.get("ts", "").isdigit() else None,
        "original": original,
    }


def list_entries(client: redis.Redis, count: int) -> list[dict[str, Any]]:
    """The oldest ``count`` DLQ entries."""
    return [describe(entry_id, fields)
            for entry_id, fields in as_entries(client.xrange(DLQ.key, count=count))]


def _replay_target(entry: dict[str, Any]) -> tuple[str, int, dict[str, str]] | str:
    """(stream key, maxlen, fields) to re-publish, or why the entry cannot be replayed."""
    specs = {spec.key: spec for spec in CATALOGUE.values() if spec.key != DLQ.key}
    spec = specs.get(entry["stream"] or "")
    if spec is None:
        return f"its stream {entry['stream']!r} is not a catalogue stream"
    original = entry["original"]
    if not isinstance(original, dict) or not original or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in original.items()
    ):
        return "its original fields are not a JSON object of strings"
    return spec.key, spec.maxlen, original


def replay_one(client: redis.Redis, dlq_id: str, outcome: ReplayOutcome) -> None:
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(DLQ.key)
                found = as_entries(pipe.xrange(DLQ.key, min=dlq_id, max=dlq_id))
                if not found:
                    outcome.missing.append(dlq_id)
                    return
                target = _replay_target(describe(*found[0]))
                if isinstance(target, str):
                    outcome.refused.append((dlq_id, target))
                    return
                key, maxlen, original = target
                pipe.multi()
                pipe.xadd(key, original, maxlen=maxlen, approximate=True)
                pipe.xdel(DLQ.key, dlq_id)
                new_id, _ = pipe.execute()
            except redis.WatchError:
                continue  # the DLQ changed under us: look again
            outcome.replayed.append((dlq_id, key, text(new_id)))
            return


def replay(client: redis.Redis, ids: list[str] | None) -> ReplayOutcome:
    """Replay the given DLQ ids, or (``None``) every entry present when the replay began —
    not the ones that arrive meanwhile, which may be the same poison event failing again."""
    outcome = ReplayOutcome()
    if ids is not None:
        for dlq_id in ids:
            replay_one(client, dlq_id, outcome)
        return outcome
    newest = as_entries(client.xrevrange(DLQ.key, count=1))
    if not newest:
        return outcome
    end, start = newest[0][0], "-"
    while True:
        page = as_entries(client.xrange(DLQ.key, min=start, max=end, count=_PAGE))
        for entry_id, _ in page:
            replay_one(client, entry_id, outcome)
        if len(page) < _PAGE:
            return outcome
        start = "(" + page[-1][0]
