"""journal: write every signal, decision, risk decision and event, order, fill, closed trade
and portfolio snapshot to the SQL journal.

Delivery: the runner acks a batch only after ``on_batch_end`` returns, and ``on_batch_end``
commits the batch's rows; an error there (the database is gone) fails the batch, so nothing
is acked. :class:`JournalRunner` then stops reading: entries wait in the streams (unread or
pending) while the database is unreachable, instead of being retried into the dead-letter
stream, and the service reports itself unhealthy in ``quantum:state:journal`` and the
``quantum_journal_database_up`` gauge. When the database answers again, the pending entries
are reclaimed and written; the event-id ledger makes that replay harmless.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram

from quantum.bus.envelope import Envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import CommitRefused, Outbox, Runner, ServiceBase
from quantum.contracts.events import ExecutionReport, OrderRequest
from quantum.journal.database import (
    UNAVAILABLE_ERRORS,
    backend,
    make_engine,
    probe,
    redact,
    resolve_url,
    upgrade,
)
from quantum.journal.writer import Journal
from quantum.registry.fleet import JOURNAL_KEY
from services.journal.config import Settings

NAME = "journal"
HEALTH_INTERVAL_S = 1.0
_LATENCY_MEMORY = 10_000  # order requests remembered for the latency histogram

WRITTEN = Counter("quantum_journal_events_written_total", "Events written to the journal",
                  ["type"])
DUPLICATES = Counter("quantum_journal_duplicates_total",
                     "Redelivered events dropped by the event-id ledger")
DATABASE_UP = Gauge("quantum_journal_database_up", "1 while the journal database answers")
FLUSH_SECONDS = Histogram("quantum_journal_flush_seconds", "Time to write one batch",
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
ORDER_LATENCY = Histogram(
    "quantum_journal_order_report_latency_seconds",
    "Exchange latency as the journal sees it: execution report time minus order request time",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class JournalService(ServiceBase):
    name = NAME

    def __init__(self, settings: Settings, ports: Ports | None = None) -> None:
        self.url = resolve_url(settings.database_url.get_secret_value())
        self.engine = make_engine(self.url)
        self.journal = Journal(self.engine)
        self.retry_s = settings.database_retry_s
        self.log = structlog.get_logger(service=NAME)
        self.healthy = False
        self.reason: str | None = "not checked yet"
        self.migrated = False
        self._last_probe = 0.0
        self._last_health = 0.0
        self._health_due = True  # a change of health is written at the next commit
        self._written = 0
        self._last_event_ts: int | None = None
        self._requests: OrderedDict[str, int] = OrderedDict()

    @property
    def database_label(self) -> str:
        return redact(self.url)

    # --- database availability --------------------------------------------------------------

    def database_available(self, now: float) -> bool:
        """True when the journal may read: the database answered (and is migrated). While it
        is down, probe it every ``database_retry_s`` seconds."""
        if self.healthy:
            return True
        if now - self._last_probe < self.retry_s:
            return False
        self._last_probe = now
        reason = probe(self.engine)
        if reason is None and not self.migrated:
            try:
                upgrade(self.engine)
                self.migrated = True
            except UNAVAILABLE_ERRORS as e:
                reason = f"migration failed: {e}"[:300]
        self._set_health(reason is None, reason)
        return self.healthy

    def _set_health(self, healthy: bool, reason: str | None) -> None:
        changed = healthy != self.healthy or reason != self.reason
        self.healthy, self.reason = healthy, reason
        DATABASE_UP.set(1 if healthy else 0)
        if changed:
            if healthy:
                self.log.info("journal database available", database=self.database_label)
            else:
                self.log.error("journal database unavailable; reading paused",
                               database=self.database_label, reason=reason)
            self._health_due = True

    def health_document(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "reason": self.reason,
            "backend": backend(self.url),
            "database": self.database_label,
            "checked_at": time.time(),
            "events_written": self._written,
            "last_event_ts": self._last_event_ts,
            "buffered": self.journal.buffered,
        }

    def health(self, out: Outbox, now: float) -> None:
        """Put the health document in ``out`` when it changed or once a second. While the
        database is down no batch commits, so :class:`JournalRunner` commits this outbox
        on its own."""
        if self._health_due or now - self._last_health >= HEALTH_INTERVAL_S:
            self._health_due = False
            self._last_health = now
            out.put_state(JOURNAL_KEY, self.health_document())

    # --- runner hooks -----------------------------------------------------------------------

    def restore(self) -> None:
        """After a failed batch the runner retries its events: drop what was buffered."""
        self.journal.discard()

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        payload = event.payload
        if isinstance(payload, ExecutionReport) and payload.kind == "book":
            # Where execution's book came from after a state loss: not an order. Logged,
            # never written as an order row.
            self.log.warning("execution started a book without its state key",
                             source=payload.reason, detail=payload.message)
            return
        self.journal.add(event)
        if isinstance(payload, OrderRequest):
            self._requests[payload.client_order_id] = event.ts
            while len(self._requests) > _LATENCY_MEMORY:
                self._requests.popitem(last=False)
        elif isinstance(payload, ExecutionReport) and payload.kind in ("ack", "fill", "reject"):
            requested = self._requests.pop(payload.client_order_id, None)
            if requested is not None:
                ORDER_LATENCY.observe(max(payload.ts - requested, 0) / 1000)

    def on_batch_end(self, out: Outbox) -> None:
        pending = self.journal.pending
        types = [event.type for event in pending]
        latest = max((event.ts for event in pending), default=None)
        try:
            result = self.journal.flush()
        except UNAVAILABLE_ERRORS as e:
            self._set_health(False, f"write failed: {type(e).__name__}: {e}"[:300])
            raise
        FLUSH_SECONDS.observe(result.seconds)
        DUPLICATES.inc(result.duplicates)
        for event_type in types:
            WRITTEN.labels(event_type).inc()
        self._written += result.written
        if latest is not None:
            self._last_event_ts = max(self._last_event_ts or 0, latest)

    def on_idle(self, out: Outbox, now: float) -> None:
        self.health(out, now)


class JournalRunner(Runner):
    """The runner, reading only while the journal database answers.

    At start the database is probed and migrated before the runner handles its own pending
    entries; when it comes back after an outage, this consumer's pending entries are handled
    at once (not after ``claim_idle_ms``), so the journal catches up as soon as it can.
    """

    service: JournalService

    def start(self) -> None:
        self.service.database_available(time.time())
        super().start()

    def turn(self) -> bool:
        now = time.time()
        was_healthy = self.service.healthy
        if self.service.database_available(now):
            if not was_healthy:
                self.recover_own_pending()
            return super().turn()
        self.beacon.beat()
        out = Outbox(self.sub.produces)
        self.service.health(out, now)
        if not out.empty:
            try:
                self.commit(out, {}, [])
            except CommitRefused as e:
                self._refused(e)
        time.sleep(min(self.config.block_ms / 1000, self.service.retry_s))
        return False


def build(settings: Settings, ports: Ports) -> JournalService:
    return JournalService(settings, ports)
