"""The timers' jobs (``quantumctl timer run``) on a real Redis: one JSON result line, the
result recorded under the timers key, and the success time exported as the dashboard's
``quantum_timer_last_success_timestamp_seconds`` gauge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from quantum.ctl import timers
from quantum.dashboard.metrics import timer_metrics
from quantum.journal.database import make_engine, upgrade
from quantum.registry.fleet import TIMERS, TIMERS_KEY

ROOT = Path(__file__).resolve().parents[3]


def _run(name: str, redis_url: str) -> tuple[int, dict[str, object]]:
    lines: list[str] = []
    code = timers.run(name, redis_url, echo=lines.append)
    assert len(lines) == 1, lines
    return code, json.loads(lines[0])


def _gauges(client: redis.Redis) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for family in timer_metrics(client):
        out[family.name] = {sample.labels["timer"]: sample.value for sample in family.samples}
    return out


def test_a_failing_job_records_its_run_but_no_success(r: redis.Redis, redis_url: str) -> None:
    code, line = _run("verify", redis_url)  # no service has a heartbeat: drift
    assert code == 1 and line["event"] == "timer_result" and line["ok"] is False
    assert "missing_heartbeat" in str(line["detail"])
    stored = orjson.loads(r.hget(TIMERS_KEY, "verify") or b"{}")
    assert stored["last_ok"] is False and stored["last_success"] is None
    gauges = _gauges(r)
    assert gauges["quantum_timer_period_seconds"] == {t.name: t.period_seconds for t in TIMERS}
    assert "verify" not in gauges["quantum_timer_last_success_timestamp_seconds"]


def test_the_backup_job_succeeds_and_its_time_is_exported(
    r: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    engine = make_engine(database)
    upgrade(engine)
    engine.dispose()
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("QT_DATABASE_URL", database)
    monkeypatch.setenv("QT_MODELS_DIR", str(models))
    monkeypatch.setenv("QT_BACKUP_DIR", str(tmp_path / "backups"))
    code, line = _run("backup", redis_url)
    assert code == 0 and line["ok"] is True, line
    made = list((tmp_path / "backups").iterdir())
    assert len(made) == 1 and (made[0] / "SHA256SUMS").is_file()
    assert (made[0] / "state.json").is_file()
    stored = orjson.loads(r.hget(TIMERS_KEY, "backup") or b"{}")
    exported = _gauges(r)["quantum_timer_last_success_timestamp_seconds"]
    assert exported == {"backup": stored["last_success"]}
    assert stored["last_success"] == stored["last_run"]


def test_the_command_line_prints_the_line_and_exits_non_zero_on_failure(
    r: redis.Redis, redis_url: str
) -> None:
    done = subprocess.run([sys.executable, "-m", "quantum.ctl", "timer", "run", "rl-health",
                           "--redis-url", redis_url], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "QT_RL_POLICY_DIR": "/nonexistent"})
    assert done.returncode == 1, done.stderr
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["timer"] == "rl-health" and line["ok"] is False
    assert "no promoted sizing policy" in line["detail"]
