"""The journal on SQLite and PostgreSQL: migrations equal the models, writes are idempotent
by event id, the service writes what the streams carry, and an unreachable database leaves
every entry in its stream (nothing acked, nothing lost) while the service reports unhealthy.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError

from quantum.app import subscription
from quantum.bus.envelope import Envelope
from quantum.bus.runner import RunnerConfig, publish
from quantum.config import SecretStr
from quantum.contracts.events import EVENT_TYPES
from quantum.contracts.routing import stream_of
from quantum.contracts.streams import CATALOGUE
from quantum.journal import postgres
from quantum.journal.database import make_engine, upgrade
from quantum.journal.models import (
    Base,
    FillRow,
    JournalEvent,
    OrderRow,
    PortfolioSnapshotRow,
    PositionSnapshotRow,
    RetrainingJobRow,
    RiskStateRow,
    SignalRow,
    SignalVoteRow,
    TradeRow,
)
from quantum.journal.synthetic import round_trips
from quantum.journal.writer import Journal
from quantum.localredis import free_port
from quantum.registry.fleet import JOURNAL_KEY, service
from services.journal.config import Settings
from services.journal.service import JournalRunner, JournalService


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    """A reachable PostgreSQL admin URL (started or installed if needed), or a visible skip."""
    reason = postgres.ensure()
    if reason is not None:
        pytest.skip(f"PostgreSQL unavailable: {reason}")
    return postgres.admin_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'journal.sqlite'}"
        return
    request.getfixturevalue("postgres_admin")
    url = postgres.create_database()
    try:
        yield url
    finally:
        postgres.drop_database(url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def count(engine: Engine, model: type[Base]) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(model)) or 0)


def test_migrations_create_exactly_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    upgrade(engine)  # a second upgrade is a no-op
    assert count(engine, TradeRow) == 0


def test_writes_are_idempotent_by_event_id(engine: Engine) -> None:
    events = list(round_trips(30, open_last=True))
    journal = Journal(engine)
    first = journal.write(events[:100])
    second = journal.write(events)  # the first 100 again, as after a redelivery
    assert first.written == 100 and first.duplicates == 0
    assert second.written == len(events) - 100 and second.duplicates == 100
    assert journal.write(events).written == 0
    assert count(engine, JournalEvent) == len(events)
    assert count(engine, SignalRow) == 30
    assert count(engine, SignalVoteRow) == 30 * 4
    assert count(engine, TradeRow) == 29  # the last trade is still open
    assert count(engine, FillRow) == 29 * 2 + 1
    with engine.connect() as connection:
        statuses = dict(connection.execute(
            select(OrderRow.status, func.count()).group_by(OrderRow.status)).all())
        open_position = connection.execute(
            select(PositionSnapshotRow.position_id).order_by(PositionSnapshotRow.id.desc())).first()
        peak, drawdown = connection.execute(
            select(PortfolioSnapshotRow.peak_equity, PortfolioSnapshotRow.drawdown)
            .order_by(PortfolioSnapshotRow.id.desc())).first()
    assert statuses == {"filled": 30 + 29}  # 30 entries, 29 exits
    assert open_position is not None and open_position[0] == "position-29"
    assert peak > 0 and 0 <= drawdown < 1


def test_a_failed_flush_keeps_the_buffer_and_writes_nothing(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite does not enforce VARCHAR lengths; checked on PostgreSQL")
    events = list(round_trips(3))
    journal = Journal(engine)
    for event in events:
        journal.add(event)
    journal.add(dataclasses.replace(events[0], id="x" * 40))  # longer than the column
    with pytest.raises(DBAPIError):
        journal.flush()
    assert journal.buffered == len(events) + 1
    assert count(engine, JournalEvent) == 0


def test_retraining_jobs_are_recorded_and_updated(engine: Engine) -> None:
    journal = Journal(engine)
    journal.record_retraining_job("job-1", "xgboost", "running", 1_000, None, {"rows": 10})
    journal.record_retraining_job("job-1", "xgboost", "promoted", 1_000, 9_000, {"rmse": 0.4})
    with engine.connect() as connection:
        row = connection.execute(select(RetrainingJobRow)).one()
    assert (row.status, row.finished_ts, row.detail) == ("promoted", 9_000, {"rmse": 0.4})


def test_ess_trip_and_reset_become_risk_states(engine: Engine) -> None:
    from quantum.bus.envelope import new_envelope
    from quantum.contracts.events import RiskEvent

    trip = new_envelope(RiskEvent(kind="ess_tripped", severity="critical", detail="drawdown"),
                        ts=1, source="risk-governor", key="t")
    pause = new_envelope(RiskEvent(kind="trading_paused", severity="warning", detail="op"),
                         ts=2, source="risk-governor", key="p")
    reset = new_envelope(RiskEvent(kind="ess_reset", severity="info", detail="ok"),
                         ts=3, source="risk-governor", key="r")
    Journal(engine).write([trip, pause, reset])
    with engine.connect() as connection:
        rows = connection.execute(select(RiskStateRow.ess_tripped, RiskStateRow.trading_paused)
                                  .order_by(RiskStateRow.ts)).all()
    assert [tuple(r) for r in rows] == [(True, False), (True, True), (False, True)]


# --- the service on a real Redis ---------------------------------------------------------


def publish_events(client: redis.Redis, events: list[Envelope[Any]]) -> None:
    publish(client, [(CATALOGUE[stream_of(e.type)], e) for e in events])


def journal_runner(client: redis.Redis, url: str) -> tuple[JournalRunner, JournalService]:
    settings = Settings(database_url=SecretStr(url), database_retry_s=0.05)
    journal = JournalService(settings)
    config = RunnerConfig(batch_size=50, block_ms=20, claim_idle_ms=10, claim_interval_s=0.05)
    runner = JournalRunner(client, journal, subscription(service("journal")), EVENT_TYPES, config)
    return runner, journal


def group_backlog(client: redis.Redis) -> int:
    """Entries of the journal's streams not yet acked by its group (pending or unread)."""
    total = 0
    for stream in service("journal").consumes:
        for group in client.xinfo_groups(stream.key):
            if group["name"] == b"journal":
                total += int(group["pending"]) + int(group["lag"] or 0)
    return total


def test_the_service_writes_the_streams_once(r: redis.Redis, database_url: str) -> None:
    events = list(round_trips(12, open_last=True))
    runner, journal = journal_runner(r, database_url)
    publish_events(r, events)
    runner.run(max_idle_turns=3)
    engine = journal.engine
    assert count(engine, JournalEvent) == len(events)
    assert group_backlog(r) == 0
    health = orjson.loads(r.get(JOURNAL_KEY))
    assert health["healthy"] is True

    publish_events(r, events[:20])  # the producer republishes (same event ids)
    again, journal_again = journal_runner(r, database_url)
    again.run(max_idle_turns=3)
    assert count(engine, JournalEvent) == len(events)
    assert count(engine, TradeRow) == 11
    assert group_backlog(r) == 0
    journal_again.engine.dispose()
    engine.dispose()


def test_an_unreachable_database_leaves_every_entry_in_the_stream(
    r: redis.Redis, database_url: str
) -> None:
    events = list(round_trips(5))
    publish_events(r, events)
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/journal"
    runner, _ = journal_runner(r, closed)
    runner.start()
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        runner.turn()
    health = orjson.loads(r.get(JOURNAL_KEY))
    assert health["healthy"] is False and "OperationalError" in health["reason"]
    assert "127.0.0.1" in health["database"]
    assert group_backlog(r) == len(events), "an entry was acked without being journaled"
    assert r.xlen("quantum:stream:dlq") == 0

    recovered, journal_ok = journal_runner(r, database_url)  # the database is back
    recovered.run(max_idle_turns=3)
    assert count(journal_ok.engine, JournalEvent) == len(events)
    assert group_backlog(r) == 0
    assert orjson.loads(r.get(JOURNAL_KEY))["healthy"] is True
    journal_ok.engine.dispose()


def test_retraining_runs_from_the_clm_are_journalled(engine: Engine) -> None:
    from sqlalchemy.orm import Session

    from quantum.bus.envelope import new_envelope
    from quantum.contracts.events import RetrainingCompleted, RetrainingStarted
    from quantum.journal.models import RetrainingJobRow

    journal = Journal(engine)
    started = new_envelope(RetrainingStarted(run_id="r1", trigger="schedule", data_dir="data",
                                             symbols=("BTCUSDT",), ts=1), ts=1, source="clm")
    done = new_envelope(RetrainingCompleted(run_id="r1", succeeded=True, candidate="v7",
                                            detail="ok", seconds=12.5, ts=2), ts=2, source="clm")
    journal.write([started, done])
    journal.write([done])  # a redelivery changes nothing
    with Session(engine) as session:
        rows = session.scalars(select(RetrainingJobRow)).all()
        found = [(r.job_id, r.status, r.started_ts, r.finished_ts) for r in rows]
        assert found == [("r1", "succeeded", 1, 2)]
        assert rows[0].detail["candidate"] == "v7" and rows[0].detail["trigger"] == "schedule"
