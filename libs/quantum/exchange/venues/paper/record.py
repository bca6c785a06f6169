"""The paper book's durable record of its own: one local JSON file, replaced atomically.

The paper exchange has no venue to rebuild from, so when its state key is gone (Redis came
back empty) the book comes from here. The file is written only when the book changed
(fills, closes, funding, orders; not on every mark-to-market tick) and only *after* the
Redis transaction holding that book committed: the file is never ahead of what the fleet
published, at worst one change behind when the process died between commit and write.

Writing: a temporary file in the same directory, flushed and ``fsync``-ed, then renamed over
the record (``os.replace`` is atomic on POSIX) and the directory ``fsync``-ed, so a crash
leaves either the old record or the new one, never half of one. A record belongs to the
fleet on one Redis: its name carries a hash of the Redis address (without credentials), so
two fleets (or test sessions) sharing a directory never read each other's book.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog

log = structlog.get_logger(component="book-record")
VERSION = 1


def redis_identity(url: str) -> str:
    """The Redis a fleet runs on, as ``host:port/db`` (no credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or parts.path or "localhost"
    port = parts.port or 6379
    return f"{host}:{port}{parts.path if parts.hostname else ''}"


@dataclass(frozen=True)
class Loaded:
    """What was found: the book, or none (``existed`` tells absent from unreadable)."""

    book: dict[str, Any] | None
    existed: bool
    saved_at: int = 0
    problem: str = ""


class BookRecord:
    """The record file of one fleet's paper book."""

    def __init__(self, directory: Path, redis_url: str) -> None:
        digest = hashlib.sha256(redis_identity(redis_url).encode()).hexdigest()[:12]
        self.path = directory / f"execution-paper-{digest}.json"

    def load(self) -> Loaded:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Loaded(None, existed=False)
        except OSError as e:
            return Loaded(None, existed=True, problem=f"cannot read {self.path}: {e}")
        try:
            document = orjson.loads(raw)
            book = document["book"]
            if document.get("version") != VERSION or not isinstance(book, dict):
                raise ValueError(f"unknown record version {document.get('version')!r}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            return Loaded(None, existed=True, problem=f"unreadable record {self.path}: {e!r}")
        return Loaded(book, existed=True, saved_at=int(document.get("saved_at", 0)))

    def save(self, book: dict[str, Any]) -> None:
        """Replace the record atomically and durably."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"version": VERSION, "saved_at": int(time.time() * 1000), "book": book}
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with temporary.open("wb") as handle:
            handle.write(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
