"""Stream specifications: a name, its key and its retention. The bus knows no trading."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "quantum:stream:"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A stream's name and how many entries Redis keeps (``XADD MAXLEN ~``)."""

    name: str
    maxlen: int
    description: str

    @property
    def key(self) -> str:
        return PREFIX + self.name


DLQ = StreamSpec("dlq", 100_000, "Entries that failed validation or their delivery limit")
