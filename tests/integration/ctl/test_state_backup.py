"""Backup -> change everything -> restore -> identical: scripts/backup.sh and restore.sh over
a real Redis and a real SQLite journal, the fleet state written by the real ESS and policy
store, the portfolio and the execution book as their owners store them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import redis
from sqlalchemy import func, select

from quantum.ctl import statebackup
from quantum.journal.database import make_engine, upgrade
from quantum.journal.models import TradeRow
from quantum.journal.synthetic import round_trips
from quantum.journal.writer import Journal
from quantum.observability.heartbeat import heartbeat_key
from quantum.registry.fleet import (
    APPLY_KEY,
    APPLY_REFUSAL_KEY,
    ESS_AUDIT_KEY,
    ESS_KEY,
    EXECUTION_KEY,
    POLICY_HISTORY_KEY,
    POLICY_KEY,
    PORTFOLIO_KEY,
)
from quantum.risk import ess, policy

ROOT = Path(__file__).resolve().parents[3]
FOREIGN_STREAM = "quantum:stream:market.tick"


def run(script: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env["PYTHON"] = str(ROOT / ".venv" / "bin" / "python")
    return subprocess.run([str(ROOT / "scripts" / script), *arguments], capture_output=True,
                          text=True, timeout=300, check=False, env=env, cwd=ROOT)


def portfolio(balance: float, symbol: str) -> bytes:
    return orjson.dumps({
        "ts": 1_700_000_000_000, "balance": balance, "equity": balance, "unrealised_pnl": 0.0,
        "realised_pnl": balance - 10_000, "fees_paid": 3.5, "funding_paid": 0.25,
        "gross_exposure": 0.0, "net_exposure": 0.0, "positions": [], "pending_orders": 0,
        "pending_plans": [], "symbol_hint": symbol})


def trade_count(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(TradeRow)) or 0)
    finally:
        engine.dispose()


def comparable(document: dict[str, Any]) -> list[tuple[str, str, bool, Any]]:
    """Keys, types and values; a TTL only as present or not (it counts down)."""
    return [(e["key"], e["type"], e["ttl_ms"] is not None, orjson.dumps(e["value"]))
            for e in document["keys"]]


def test_restore_brings_back_ess_policy_portfolio_and_book(
        r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    engine = make_engine(database)
    upgrade(engine)
    Journal(engine).write(round_trips(12))
    engine.dispose()
    ess.trip(r, "drill before the backup", "pytest")
    policy.write(r, {"risk.max_leverage": 5, "sizing.leverage": 5}, by="pytest",
                 reason="backup drill")
    r.set(PORTFOLIO_KEY, portfolio(10_250.0, "BTCUSDT"))
    r.set(EXECUTION_KEY, orjson.dumps({"orders": {"o-1": {"symbol": "BTCUSDT", "qty": 0.1}}}))
    r.set(f"{EXECUTION_KEY}:version", 41)
    r.zadd(APPLY_KEY, {"plan-1": 1.0, "plan-2": 2.0})
    r.set(APPLY_REFUSAL_KEY, b"stale approval", ex=3600)
    before = statebackup.dump(r)
    keys = {e["key"] for e in before["keys"]}
    assert {ESS_KEY, ESS_AUDIT_KEY, POLICY_KEY, POLICY_HISTORY_KEY, PORTFOLIO_KEY,
            EXECUTION_KEY, f"{EXECUTION_KEY}:version", APPLY_KEY, APPLY_REFUSAL_KEY} <= keys

    out = tmp_path / "backup"
    made = run("backup.sh", "--out", str(out), "--database-url", database,
               "--models", str(tmp_path / "no-models"), "--redis-url", redis_url)
    assert made.returncode == 0, made.stderr
    assert (out / "state.json").is_file()
    assert "state.json" in orjson.loads((out / "manifest.json").read_bytes())["files"]

    # Change everything.
    ess.reset(r, "after the backup", "pytest")
    ess.pause(r, "pytest", "after the backup")
    policy.write(r, {"risk.max_leverage": 3, "sizing.leverage": 3}, by="pytest",
                 reason="after the backup")
    r.set(PORTFOLIO_KEY, portfolio(9_100.0, "ETHUSDT"))
    r.delete(EXECUTION_KEY)
    r.set(f"{EXECUTION_KEY}:version", 99)
    r.set(f"{EXECUTION_KEY}:stray", b"written after the backup")
    r.zadd(APPLY_KEY, {"plan-3": 3.0})
    r.delete(APPLY_REFUSAL_KEY)
    r.xadd(FOREIGN_STREAM, {"type": "market.tick", "payload": b"{}"})
    engine = make_engine(database)
    Journal(engine).write(round_trips(20, seed=5, start_ms=1_760_000_000_000))
    engine.dispose()
    assert comparable(statebackup.dump(r)) != comparable(before)
    assert trade_count(database) > 12

    r.set(heartbeat_key("execution"), b"{}", ex=30)
    refused = run("restore.sh", str(out), "--database-url", database, "--redis-url", redis_url)
    assert refused.returncode == 1 and "running" in refused.stderr
    assert "execution" in refused.stderr
    r.delete(heartbeat_key("execution"))

    done = run("restore.sh", str(out), "--database-url", database, "--redis-url", redis_url)
    assert done.returncode == 0, done.stderr
    assert comparable(statebackup.dump(r)) == comparable(before)
    state = ess.status(r)
    assert state.tripped and state.reason == "drill before the backup" and not state.paused
    assert policy.load(r).risk.max_leverage == 5
    assert r.exists(f"{EXECUTION_KEY}:stray") == 0
    assert r.xlen(FOREIGN_STREAM) == 1  # nothing outside the declared keys is touched
    assert trade_count(database) == 12


def test_a_backup_naming_an_undeclared_key_is_refused(r: redis.Redis, redis_url: str,
                                                      tmp_path: Path) -> None:
    r.xadd("quantum:stream:dlq", {"type": "x", "payload": b"{}"})
    document = {"format": 1, "keys": [{"key": "quantum:stream:dlq", "type": "string",
                                       "ttl_ms": None, "value": ""}]}
    path = tmp_path / "state.json"
    path.write_bytes(orjson.dumps(document))
    assert statebackup.main(["load", str(path), "--redis-url", redis_url]) == 1
    assert r.xlen("quantum:stream:dlq") == 1
