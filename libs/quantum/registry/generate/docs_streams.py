"""The stream reference: ``docs/streams.md``.

One table of every stream in the catalogue (key, retention, producer, consumer groups,
event types), then a section per stream with the payload table of each event type routed
to it, the dead-letter stream's flat fields, and the records nested in payloads. Sources:
the catalogue (:mod:`quantum.contracts.streams`), the registry, the event contracts
(:mod:`quantum.contracts.events`) and their routing (:mod:`quantum.contracts.routing`), so
the doc cannot drift from what the bus carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from quantum.bus.streams import StreamSpec
from quantum.contracts.events import EVENT_TYPES
from quantum.contracts.routing import DEAD_LETTER_FIELDS, DEAD_LETTER_TYPE, STREAM_EVENTS
from quantum.contracts.streams import CATALOGUE
from quantum.registry.fleet import ServiceSpec, consumer_groups
from quantum.registry.generate.common import DO_NOT_EDIT, GENERATED_BY
from quantum.registry.generate.docs_common import anchor, producers_of
from quantum.registry.generate.docs_fields import doc_first_paragraph, field_rows, nested_models


@dataclass(frozen=True)
class _Topology:
    """Who writes and reads each stream, as the doc names them."""

    producer_of: dict[str, str]
    groups_of: dict[str, tuple[str, ...]]
    consumers: list[str]

    def producer(self, stream: str) -> str:
        if stream == "dlq":
            return "the runner of every consumer (" + ", ".join(self.consumers) + ")"
        return self.producer_of.get(stream, "none yet")

    def groups(self, stream: str) -> str:
        return ", ".join(self.groups_of.get(stream, ())) or "none"


def render_streams_doc(services: Sequence[ServiceSpec]) -> str:
    topology = _Topology(
        producer_of=producers_of(services),
        groups_of=consumer_groups(services),
        consumers=[spec.name for spec in services if spec.consumes],
    )
    lines = [
        "# Streams",
        "",
        f"{GENERATED_BY} {DO_NOT_EDIT}",
        "",
        "Sources: the catalogue (`quantum.contracts.streams`), the registry, the event",
        "contracts (`quantum.contracts.events`) and their routing",
        "(`quantum.contracts.routing`).",
        "",
        "Every entry is one envelope: `type`, `version`, `id`, `ts` (event time, ms since the",
        "Unix epoch, UTC), `source`, `trace_id`, `causation_id` and `payload` (JSON of the",
        "payload model below). Retention is `XADD MAXLEN ~`: Redis keeps about that many",
        "entries.",
        "",
        "| stream | key | retention | producer | consumer groups | event types |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, spec in CATALOGUE.items():
        events = ", ".join(f"`{t}`" for t in STREAM_EVENTS.get(name, ())) or "none yet"
        lines.append(
            f"| [{name}](#{anchor(name)}) | `{spec.key}` | {spec.maxlen:,} | "
            f"{topology.producer(name)} | {topology.groups(name)} | {events} |"
        )
    nested: dict[str, type[BaseModel]] = {}
    for name, spec in CATALOGUE.items():
        lines += _stream_section(name, spec, topology, nested)
    return "\n".join([*lines, *_nested_records(nested)]) + "\n"


def _stream_section(
    name: str, spec: StreamSpec, topology: _Topology, nested: dict[str, type[BaseModel]]
) -> list[str]:
    """One stream's section; the records its payloads nest are added to ``nested``."""
    lines = [
        "",
        f"## {name}",
        "",
        f"{spec.description}.",
        "",
        f"- key: `{spec.key}`",
        f"- retention: about {spec.maxlen:,} entries",
        f"- producer: {topology.producer(name)}",
        f"- consumer groups: {topology.groups(name)}",
    ]
    event_types = STREAM_EVENTS.get(name, ())
    if not event_types:
        lines += ["", "No event type is routed to this stream yet (reserved in the catalogue)."]
    for event_type in event_types:
        if event_type == DEAD_LETTER_TYPE:
            lines += ["", *_dead_letter_section()]
        else:
            lines += ["", *_event_section(event_type, nested)]
    return lines


def _event_section(event_type: str, nested: dict[str, type[BaseModel]]) -> list[str]:
    model = dict(EVENT_TYPES)[event_type]
    for field in model.model_fields.values():
        for sub in nested_models(field.annotation):
            _collect_nested(sub, nested)
    return [
        f"### `{event_type}` (version {model.event_version}, `{model.__name__}`)",
        "",
        doc_first_paragraph(model),
        "",
        *field_rows(model),
    ]


def _nested_records(nested: dict[str, type[BaseModel]]) -> list[str]:
    if not nested:
        return []
    lines = ["", "## Nested records", ""]
    lines.append("Records used inside payloads; frozen, unknown fields refused.")
    for record_name in sorted(nested):
        record = nested[record_name]
        lines += ["", f"### `{record_name}`", ""]
        summary = doc_first_paragraph(record)
        if summary:
            lines += [summary, ""]
        lines += field_rows(record)
    return lines


def _collect_nested(model: type[BaseModel], found: dict[str, type[BaseModel]]) -> None:
    if model.__name__ in found:
        return
    found[model.__name__] = model
    for field in model.model_fields.values():
        for sub in nested_models(field.annotation):
            _collect_nested(sub, found)


def _dead_letter_section() -> list[str]:
    lines = [
        f"### `{DEAD_LETTER_TYPE}` (flat fields, not an envelope)",
        "",
        "Written by the runner of any consuming service when an entry cannot be decoded or",
        "fails its delivery limit, so the consumer carries on. `type` is",
        f"`{DEAD_LETTER_TYPE}`; inspect with `quantumctl dlq`.",
        "",
        "| field | type | meaning |",
        "| --- | --- | --- |",
    ]
    for field, (kind, meaning) in DEAD_LETTER_FIELDS.items():
        lines.append(f"| `{field}` | {kind} | {meaning} |")
    return lines
