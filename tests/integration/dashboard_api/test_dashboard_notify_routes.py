"""The dashboard's JSON routes added for the operator's alerts: Alertmanager's receiver
(forwarding to a Telegram stand-in over real HTTP) and the model supervision findings, on a
real Redis and a real SQLite journal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from quantum.bus.envelope import new_envelope
from quantum.contracts.events import SupervisorEvent
from quantum.dashboard.app import create_app
from quantum.dashboard.backend import DashboardOptions
from quantum.journal.database import make_engine, upgrade
from quantum.journal.writer import Journal
from quantum.notify.channels import Notifier
from quantum.risk import ess
from quantum.standin.telegram import TelegramStandIn

TOKEN = "111:bot-token"
CHAT = "77"
HOOK = "hook-token"
ROUTE = "/api/v1/notify/alertmanager"


def notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "quantum-critical",
            "groupLabels": {}, "commonLabels": {}, "externalURL": "http://am", "alerts": list(
                alerts)}


def alert(name: str, severity: str = "critical", **labels: str) -> dict[str, Any]:
    return {"status": "firing", "labels": {"alertname": name, "severity": severity, **labels},
            "annotations": {"summary": f"{name} summary", "runbook": "docs/RUNBOOK.md#x"},
            "startsAt": "2026-12-02T05:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus", "fingerprint": "abc"}


@pytest.fixture
def telegram() -> Iterator[TelegramStandIn]:
    with TelegramStandIn(TOKEN, CHAT) as standin:
        yield standin


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'journal.sqlite'}"


def client_for(redis_url: str, database_url: str, notifier: Notifier | None,
               token: str = HOOK) -> TestClient:
    app = create_app(DashboardOptions(redis_url=redis_url, database_url=database_url,
                                      notifier=notifier, alert_webhook_token=token),
                     heartbeat=False)
    return TestClient(app)


def test_the_receiver_forwards_alerts_and_tells_an_ess_trip_first(
        r: redis.Redis, redis_url: str, database_url: str, telegram: TelegramStandIn) -> None:
    notifier = Notifier.from_settings(telegram_token=TOKEN, telegram_chat_id=CHAT,
                                      telegram_api=telegram.url)
    ess.trip(r, "consecutive execution errors", "risk-governor", evaluator="execution_errors")
    with client_for(redis_url, database_url, notifier) as api:
        bearer = {"Authorization": f"Bearer {HOOK}"}
        assert api.post(ROUTE, json=notification(alert("X"))).status_code == 401
        assert api.post(ROUTE, json=notification(alert("X")),
                        headers={"Authorization": "Bearer nope"}).status_code == 403
        answer = api.post(ROUTE, headers=bearer, json=notification(
            alert("QuantumEssTripped"), alert("QuantumRequiredServiceDown",
                                              service="risk-governor")))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"delivered": 1, "alerts": 2}
        (text,) = telegram.texts()
        assert text.splitlines()[:3] == [
            "EMERGENCY STOP TRIPPED: no new entries; exits continue.",
            "reason: consecutive execution errors", "evaluator: execution_errors"]
        assert "[CRITICAL] FIRING QuantumRequiredServiceDown" in text
        assert "service=risk-governor" in text

        telegram.fail_next(1)  # Telegram down: 502, so Alertmanager retries
        failed = api.post(ROUTE, headers=bearer, json=notification(alert("Y", "warning")))
        assert failed.status_code == 502
        assert failed.json() == {"detail": "not delivered: telegram answered 500: "
                                           "Internal Server Error"}
        assert TOKEN not in failed.text
        malformed = api.post(ROUTE, headers=bearer, json={"alerts": "nope"})
        assert malformed.status_code == 422
        assert len(telegram.texts()) == 1


def test_the_receiver_refuses_without_a_token_or_a_channel(
        redis_url: str, database_url: str) -> None:
    with client_for(redis_url, database_url, Notifier(), token="") as api:
        refused = api.post(ROUTE, headers={"Authorization": "Bearer anything"},
                           json=notification(alert("X")))
        assert refused.status_code == 403
    with client_for(redis_url, database_url, Notifier()) as api:
        unconfigured = api.post(ROUTE, headers={"Authorization": f"Bearer {HOOK}"},
                                json=notification(alert("X")))
        assert unconfigured.status_code == 503
        assert unconfigured.json() == {"detail": "no notification channel is configured"}


def test_model_supervision_findings_are_served_newest_first(
        r: redis.Redis, redis_url: str, database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    Journal(engine).write([
        new_envelope(SupervisorEvent(kind="feature_drift", severity="warning",
                                     detail="PSI 0.31 on atr_14", model_version="v7",
                                     data={"psi": 0.31}), ts=1_000, source="ai-engine",
                     key="drift"),
        new_envelope(SupervisorEvent(kind="direction_bias", severity="warning",
                                     detail="LONG share 0.82", model_version="v7"),
                     ts=2_000, source="ai-engine", key="bias"),
    ])
    engine.dispose()
    with client_for(redis_url, database_url, None) as api:
        items = api.get("/api/v1/model/supervision").json()["items"]
        assert [(i["ts"], i["kind"]) for i in items] == [(2_000, "direction_bias"),
                                                         (1_000, "feature_drift")]
        assert items[1]["data"] == {"psi": 0.31}
        assert api.get("/api/v1/model/supervision?since=1500").json()["items"][0]["ts"] == 2_000
        assert api.get("/api/v1/model/supervision?limit=0").status_code == 422
