"""What both reference docs share; this module writes nothing itself.

Markdown helpers (a table cell, a heading's anchor) and the stream topology read from the
registry: who produces each stream and which consumer groups read it. ``docs/streams.md``
and ``docs/services.md`` both name producers, so the check that a stream has only one
lives here, once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from quantum.registry.fleet import ServiceSpec
from quantum.registry.generate.common import GenerationError


def cell(text: str) -> str:
    """``text`` made safe for one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def anchor(heading: str) -> str:
    """A Markdown heading's link anchor (GitHub's rule: lower case, punctuation dropped,
    spaces to hyphens)."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def producers_of(services: Sequence[ServiceSpec]) -> dict[str, str]:
    """Stream → its producer; ``GenerationError`` when two services produce one stream."""
    out: dict[str, str] = {}
    for spec in services:
        for stream in spec.produces:
            if stream.name in out:
                raise GenerationError(
                    f"stream {stream.name} has two producers: {out[stream.name]}, {spec.name}"
                )
            out[stream.name] = spec.name
    return out


def groups_on(services: Sequence[ServiceSpec]) -> dict[str, tuple[str, ...]]:
    """Stream → the consumer groups on it, in registry order."""
    out: dict[str, list[str]] = {}
    for spec in services:
        for stream in spec.consumes:
            out.setdefault(stream.name, []).append(spec.group)
    return {name: tuple(groups) for name, groups in out.items()}
