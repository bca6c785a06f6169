"""Journal write rate: events per second into the SQL journal, on SQLite and PostgreSQL.

Two paths, both with the synthetic round trips of :mod:`quantum.journal.synthetic` (a signal
with four votes, decision, risk decision, order, ack, fills, snapshots, closed trade — the
mix a trading fleet produces):

* ``writer``: :class:`quantum.journal.writer.Journal` flushing batches of 100 events, which
  is exactly what the service does at each runner batch end (dedupe query, multi-row
  inserts, order upserts, one transaction);
* ``service``: end to end on a private Redis — events already in the streams, the real
  :class:`services.journal.service.JournalRunner` reading, writing and acking them.

PostgreSQL figures need a local server (``quantum.journal.postgres.ensure``); without one
the entry says why instead of a number.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench._redis import private_redis
from quantum.app import subscription
from quantum.bus.runner import RunnerConfig, publish
from quantum.config import SecretStr
from quantum.contracts.events import EVENT_TYPES
from quantum.contracts.routing import stream_of
from quantum.contracts.streams import CATALOGUE
from quantum.journal import postgres
from quantum.journal.database import make_engine, upgrade
from quantum.journal.synthetic import round_trips
from quantum.journal.writer import Journal
from quantum.registry.fleet import service

BATCH = 100


def _writer_rate(url: str, trips: int) -> dict[str, Any]:
    engine = make_engine(url)
    upgrade(engine)
    events = list(round_trips(trips))
    journal = Journal(engine)
    started = time.perf_counter()
    for start in range(0, len(events), BATCH):
        journal.write(events[start:start + BATCH])
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"events": len(events), "seconds": round(seconds, 3),
            "events_per_second": round(len(events) / seconds)}


def _service_rate(url: str, trips: int) -> dict[str, Any]:
    from services.journal.config import Settings
    from services.journal.service import JournalRunner, JournalService

    events = list(round_trips(trips))
    with private_redis() as redis_url:
        client = redis.Redis.from_url(redis_url)
        publish(client, [(CATALOGUE[stream_of(e.type)], e) for e in events])
        journal = JournalService(Settings(database_url=SecretStr(url)))
        runner = JournalRunner(client, journal, subscription(service("journal")), EVENT_TYPES,
                               RunnerConfig(batch_size=BATCH, block_ms=10))
        journal.database_available(time.time())  # connect and migrate before the clock
        started = time.perf_counter()
        runner.run(max_idle_turns=1)
        seconds = time.perf_counter() - started
        journal.engine.dispose()
        client.close()
    return {"events": len(events), "seconds": round(seconds, 3),
            "events_per_second": round(len(events) / seconds)}


def run(quick: bool) -> dict[str, Any]:
    trips = 300 if quick else 3000  # about 11 events each
    result: dict[str, Any] = {"batch_size": BATCH}
    with tempfile.TemporaryDirectory(prefix="quantum-bench-journal-") as directory:
        result["sqlite_writer"] = _writer_rate(f"sqlite:///{Path(directory) / 'w.sqlite'}", trips)
        result["sqlite_service"] = _service_rate(f"sqlite:///{Path(directory) / 's.sqlite'}",
                                                 trips)
    reason = postgres.ensure()
    if reason is not None:
        result["postgresql"] = f"not measured: {reason}"
        return result
    for name, measure in (("postgresql_writer", _writer_rate),
                          ("postgresql_service", _service_rate)):
        url = postgres.create_database(prefix="qt_bench")
        try:
            result[name] = measure(url, trips)
        finally:
            postgres.drop_database(url)
    return result
