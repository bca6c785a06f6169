"""What both reference docs share; this module writes nothing itself.

Markdown helpers (a table cell, a heading's anchor) and the stream topology read from the
registry: who produces each stream and which consumer groups read it. ``docs/streams.md``
and ``docs/services.md`` both name producers, so the check that a stream has only one
lives here, once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from quantum.registry.fleet import ServiceSpec, producers
from quantum.registry.generate.common import GenerationError


def cell(text: str) -> str:
    """``text`` made safe for one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def anchor(heading: str) -> str:
    """A Markdown heading's link anchor (GitHub's rule: lower case, punctuation dropped,
    spaces to hyphens)."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def producers_of(services: Sequence[ServiceSpec]) -> dict[str, str]:
    """The registry's :func:`~quantum.registry.fleet.producers`, its refusal of a stream with
    two producers turned into a :class:`GenerationError` (one line from the generator)."""
    try:
        return producers(services)
    except ValueError as e:
        raise GenerationError(str(e)) from None
