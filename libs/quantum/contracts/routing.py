"""Which event types travel on which stream.

The envelope carries an event's ``type``, not its stream, and a stream may carry more than
one type (``market.tick`` also carries the replay's ``market.end_of_data``). This table is
the declaration a reader (and ``docs/streams.md``) needs to know what to expect on a
stream; tests hold it to the contracts: every type in ``EVENT_TYPES`` travels on exactly one
stream, and every stream a service produces has its types listed here.

``bus.dead_letter`` is not an envelope: the runner writes a dead letter as flat stream
fields (:func:`quantum.bus.runner.dead_letter_fields`) so an entry that could not be decoded
is kept verbatim. Its fields are described in :data:`DEAD_LETTER_FIELDS`.
"""

from __future__ import annotations

DEAD_LETTER_TYPE = "bus.dead_letter"

STREAM_EVENTS: dict[str, tuple[str, ...]] = {
    "market.tick": ("market.tick", "market.end_of_data"),
    "market.klines": ("market.kline",),
    "features": ("features.computed",),
    "ai.signal_generated": ("ai.signal",),
    "ai.decision.made": ("ai.decision",),
    "trade.intent": ("trade.intent",),
    "apply.plan": ("apply.plan",),
    "risk.decision": ("risk.decision",),
    "risk.events": ("risk.event",),
    "apply.result": ("order.request",),
    "harvest.intent": ("harvest.intent", "exit.levels"),
    "execution.result": ("execution.report",),
    "trade.closed": ("trade.closed",),
    "portfolio.state": ("portfolio.state",),
    "reconcile.events": ("reconcile.event",),
    "ai.supervisor": ("ai.supervisor",),
    "policy.updated": ("policy.updated",),
    "learning.events": ("learning.retraining.started", "learning.retraining.completed",
                        "learning.shadow.completed"),
    "rl_rewards": ("rl.reward",),
    "policy.sizing": ("rl.policy.promoted",),
    "ledger.events": ("ledger.difference",),
    "meta.regime": ("meta.regime",),
    "universe.updated": ("universe.updated",),
    "exchange.normalized": ("exchange.kline", "exchange.tick", "exchange.funding"),
    "dlq": (DEAD_LETTER_TYPE,),
}

# field → (type, meaning) of a dead-letter entry, besides ``type`` = ``bus.dead_letter``.
DEAD_LETTER_FIELDS: dict[str, tuple[str, str]] = {
    "stream": ("str", "full key of the stream the entry was read from"),
    "entry_id": ("str", "its Redis entry id on that stream"),
    "group": ("str", "the consumer group that gave up on it"),
    "reason": ("str", "why: the decode error, or the handler's last error at the limit"),
    "ts": ("int", "when it was dead-lettered, milliseconds since the Unix epoch (UTC)"),
    "original": ("JSON object", "the entry's original fields, verbatim, as a JSON object"),
}


def stream_of(event_type: str) -> str:
    """The stream an event type travels on; ``KeyError`` naming it when none is declared."""
    for stream, types in STREAM_EVENTS.items():
        if event_type in types:
            return stream
    raise KeyError(f"event type {event_type!r} is routed to no stream in STREAM_EVENTS")
