"""The runbook's scripts, run for real: backup and restore of the journal (SQLite and
PostgreSQL) and the models, key rotation of env files, and the rolling-restart health gate."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest
import redis
from sqlalchemy import func, select

from quantum.dashboard.rollout import backlog, wait_back
from quantum.journal import postgres
from quantum.journal.database import make_engine, upgrade
from quantum.journal.models import JournalEvent, TradeRow
from quantum.journal.synthetic import round_trips
from quantum.journal.writer import Journal
from quantum.observability.heartbeat import heartbeat_key

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = ROOT / "scripts"


def run(script: str, *arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env |= {"PYTHON": str(ROOT / ".venv" / "bin" / "python"), **environment}
    return subprocess.run([str(SCRIPTS / script), *arguments], capture_output=True, text=True,
                          timeout=300, check=False, env=env, cwd=ROOT)


def trades(url: str) -> tuple[int, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return (int(connection.scalar(select(func.count()).select_from(TradeRow)) or 0),
                    int(connection.scalar(select(func.count()).select_from(JournalEvent)) or 0))
    finally:
        engine.dispose()


def fill(url: str, count: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    Journal(engine).write(round_trips(count))
    engine.dispose()


def check_backup_and_restore(source_url: str, target_url: str, tmp_path: Path,
                             r: redis.Redis, redis_url: str) -> None:
    fill(source_url, 20)
    models = tmp_path / "models"
    (models / "v1").mkdir(parents=True)
    (models / "v1" / "model.json").write_text('{"weights": [1, 2, 3]}')
    out = tmp_path / "backup"
    made = run("backup.sh", "--out", str(out), "--database-url", source_url,
               "--models", str(models))
    assert made.returncode == 0, made.stderr
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["journal_revision"] == "0002"
    assert (out / "SHA256SUMS").is_file() and (out / "models.tar.gz").is_file()
    assert stat.S_IMODE(out.stat().st_mode) == 0o700

    restored_models = tmp_path / "restored-models"
    r.set(heartbeat_key("journal"), b"{}", ex=30)  # a running journal blocks a restore
    refused = run("restore.sh", str(out), "--database-url", target_url,
                  "--models", str(restored_models), "--redis-url", redis_url)
    assert refused.returncode == 1 and "running" in refused.stderr
    r.delete(heartbeat_key("journal"))
    done = run("restore.sh", str(out), "--database-url", target_url,
               "--models", str(restored_models), "--redis-url", redis_url)
    assert done.returncode == 0, done.stderr
    assert trades(target_url) == trades(source_url) == (20, trades(source_url)[1])
    assert (restored_models / "v1" / "model.json").read_text() == '{"weights": [1, 2, 3]}'

    (out / "journal.sqlite" if (out / "journal.sqlite").exists()
     else out / "journal.pgdump").write_bytes(b"tampered")
    tampered = run("restore.sh", str(out), "--database-url", target_url, "--force")
    assert tampered.returncode == 1 and "checksum" in tampered.stderr


def test_backup_and_restore_on_sqlite(tmp_path: Path, r: redis.Redis, redis_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'live' / 'journal.sqlite'}"
    target = f"sqlite:///{tmp_path / 'restored' / 'journal.sqlite'}"
    check_backup_and_restore(source, target, tmp_path, r, redis_url)


def test_backup_and_restore_on_postgresql(tmp_path: Path, r: redis.Redis,
                                          redis_url: str) -> None:
    reason = postgres.ensure()
    if reason is not None:
        pytest.skip(f"PostgreSQL unavailable: {reason}")
    source, target = postgres.create_database(), postgres.create_database()
    try:
        check_backup_and_restore(source, target, tmp_path, r, redis_url)
    finally:
        postgres.drop_database(source)
        postgres.drop_database(target)


def test_rotate_keys_rewrites_env_files_without_printing_secrets(tmp_path: Path) -> None:
    env_dir = tmp_path / "etc"
    env_dir.mkdir()
    original = env_dir / "dashboard-api.env"
    original.write_text("QT_HTTP_HOST=127.0.0.1\nQT_CONTROL_TOKEN=old-token\n")
    done = run("rotate-keys.sh", "dashboard", "--env-dir", str(env_dir))
    assert done.returncode == 0, done.stderr
    lines = dict(line.split("=", 1) for line in original.read_text().splitlines())
    assert lines["QT_HTTP_HOST"] == "127.0.0.1"
    assert lines["QT_CONTROL_TOKEN"] != "old-token" and len(lines["QT_CONTROL_TOKEN"]) >= 40
    assert len(lines["QT_READ_TOKEN"]) >= 40
    assert lines["QT_CONTROL_TOKEN"] not in done.stdout + done.stderr
    assert stat.S_IMODE(original.stat().st_mode) == 0o600
    assert "old-token" in (env_dir / "dashboard-api.env.previous").read_text()

    secret = "binance-secret-0123456789"
    binance = run("rotate-keys.sh", "binance", "--env-dir", str(env_dir),
                  BINANCE_NEW_API_KEY="key-abc", BINANCE_NEW_API_SECRET=secret)
    assert binance.returncode == 0, binance.stderr
    assert secret not in binance.stdout + binance.stderr
    for service in ("execution", "reconcile"):
        assert f"QT_BINANCE_API_SECRET={secret}" in (env_dir / f"{service}.env").read_text()
    missing = run("rotate-keys.sh", "binance", "--env-dir", str(env_dir))
    assert missing.returncode != 0 and "BINANCE_NEW_API_KEY" in missing.stderr


def test_the_rolling_restart_gate_waits_for_a_new_pid_and_a_drained_group(
    r: redis.Redis,
) -> None:
    r.set(heartbeat_key("journal"), orjson.dumps({"pid": 100, "ts": time.time()}))
    ok, message = wait_back(r, "journal", previous_pid=100, timeout=0.5, max_lag=10)
    assert not ok and "no heartbeat" in message

    def restarted() -> None:
        time.sleep(0.3)
        r.set(heartbeat_key("journal"), orjson.dumps({"pid": 200, "ts": time.time()}))

    threading.Thread(target=restarted).start()
    ok, message = wait_back(r, "journal", previous_pid=100, timeout=5, max_lag=10)
    assert ok and "pid 200" in message
    assert backlog(r, "journal") == 0
