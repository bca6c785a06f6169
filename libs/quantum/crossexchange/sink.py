"""The feeds' way onto the bus: events published to ``exchange.normalized``, unusable frames
dead-lettered, and the resume points (what is already on the stream) read at start."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from quantum.bus.envelope import InvalidEvent, decode
from quantum.bus.runner import bus_unavailable, publish
from quantum.bus.streams import DLQ
from quantum.contracts.events import EVENT_TYPES, VenueFunding, VenueKline
from quantum.contracts.streams import EXCHANGE_NORMALIZED
from quantum.crossexchange.feed import Item, preview
from quantum.observability import metrics

RESUME_SCAN = 20_000  # newest entries of the stream read at start for the watermarks


class RedisSink:
    """Publishes to Redis; a bus outage holds the feed (``wait`` returns once Redis answers,
    False when stopping). Publishing twice is harmless: event ids derive from the data."""

    def __init__(self, client: redis.Redis, service: str,
                 wait: Callable[[], bool], beat: Callable[[], None] = lambda: None) -> None:
        self.client = client
        self.service = service
        self.wait = wait
        self.beat = beat

    def _retry(self, action: Callable[[], Any]) -> None:
        while True:
            try:
                action()
                return
            except Exception as e:
                if not bus_unavailable(e):
                    raise
                if not self.wait():
                    return

    def publish(self, items: list[Item]) -> None:
        if not items:
            return
        self._retry(lambda: publish(self.client, items))
        metrics.PRODUCED.labels(self.service, EXCHANGE_NORMALIZED.name).inc(len(items))
        self.beat()

    def dead_letter(self, venue: str, where: str, reason: str, frame: object) -> None:
        """A dead-letter entry with the fields the runner writes (``dead_letter_fields``):
        ``stream`` says which venue connection the frame came from, ``original`` holds the
        frame verbatim (``{"frame": …}``); no entry id exists on a venue's socket."""
        fields: dict[str, str | bytes] = {
            "type": "bus.dead_letter",
            "stream": f"{venue}:{where}",
            "entry_id": "",
            "group": self.service,
            "reason": reason,
            "ts": str(int(time.time() * 1000)),
            "original": orjson.dumps({"frame": preview(frame, 100_000)}),
        }
        self._retry(lambda: self.client.xadd(DLQ.key, fields, maxlen=DLQ.maxlen,
                                             approximate=True))
        metrics.DLQ.labels(self.service, f"venue:{venue}").inc()


@dataclass
class ResumePoints:
    """Per venue and fleet symbol: the newest candle's open time and funding time published."""

    klines: dict[str, dict[str, int]] = field(default_factory=dict)
    funding: dict[str, dict[str, int]] = field(default_factory=dict)


def resume_points(client: redis.Redis, scan: int = RESUME_SCAN) -> ResumePoints:
    """Read the newest ``scan`` entries of ``exchange.normalized`` for the watermarks, so a
    restarted aggregator back-fills exactly what closed while it was down."""
    points = ResumePoints()
    for _, fields in client.xrevrange(EXCHANGE_NORMALIZED.key, count=scan):
        try:
            payload = decode(fields, EVENT_TYPES).payload
        except InvalidEvent:
            continue
        if isinstance(payload, VenueKline):
            points.klines.setdefault(payload.venue, {}).setdefault(payload.symbol,
                                                                   payload.open_time)
        elif isinstance(payload, VenueFunding):
            points.funding.setdefault(payload.venue, {}).setdefault(payload.symbol,
                                                                    payload.funding_time)
    return points
