"""``ai.supervisor`` has a consumer: the journal service reads it on a real Redis, writes the
findings to ``model_supervision``, and the truth map no longer calls the stream dead."""

from __future__ import annotations

import orjson
import redis
from sqlalchemy import select

from quantum.app import subscription
from quantum.bus.envelope import new_envelope
from quantum.bus.runner import RunnerConfig, publish
from quantum.config import SecretStr
from quantum.contracts.events import EVENT_TYPES, SupervisorEvent
from quantum.contracts.streams import AI_SUPERVISOR
from quantum.ctl.truth import truth_map
from quantum.journal.models import SupervisionRow
from quantum.observability.heartbeat import heartbeat_key
from quantum.registry.fleet import service
from services.journal.config import Settings
from services.journal.service import JournalRunner, JournalService


def dead(client: redis.Redis) -> list[str]:
    return [f["subject"] for f in truth_map(client, None)["flags"]
            if f["kind"] == "dead_stream" and f["subject"] == AI_SUPERVISOR.name]


def test_the_journal_consumes_and_records_the_model_supervisor(r: redis.Redis,
                                                               tmp_path: object) -> None:
    assert AI_SUPERVISOR in service("journal").consumes
    r.set(heartbeat_key("ai-engine"), orjson.dumps({"pid": 1, "ts": 0}), ex=60)
    findings = [
        new_envelope(SupervisorEvent(kind="model_swapped", severity="info",
                                     detail="serving ensemble v8", model_version="v8"),
                     ts=10, source="ai-engine", key="swap"),
        new_envelope(SupervisorEvent(kind="members_missing", severity="critical",
                                     detail="patchtst: file missing (below the quorum of 3)",
                                     model_version="v8", data={"loaded": 2, "quorum": 3}),
                     ts=11, source="ai-engine", key="members"),
    ]
    publish(r, [(AI_SUPERVISOR, event) for event in findings])
    assert dead(r) == [AI_SUPERVISOR.name]  # entries, and nobody reading them

    url = f"sqlite:///{tmp_path}/journal.sqlite"
    journal = JournalService(Settings(database_url=SecretStr(url), database_retry_s=0.05))
    runner = JournalRunner(r, journal, subscription(service("journal")), EVENT_TYPES,
                           RunnerConfig(batch_size=50, block_ms=20, claim_idle_ms=10,
                                        claim_interval_s=0.05))
    runner.run(max_idle_turns=3)
    with journal.engine.connect() as connection:
        rows = connection.execute(select(SupervisionRow.kind, SupervisionRow.severity,
                                         SupervisionRow.model_version, SupervisionRow.data)
                                  .order_by(SupervisionRow.ts)).all()
    journal.engine.dispose()
    assert [tuple(row) for row in rows] == [
        ("model_swapped", "info", "v8", {}),
        ("members_missing", "critical", "v8", {"loaded": 2, "quorum": 3})]
    groups = {g["name"]: g for g in r.xinfo_groups(AI_SUPERVISOR.key)}
    assert groups[b"journal"]["pending"] == 0 and groups[b"journal"]["lag"] == 0
    assert dead(r) == []
