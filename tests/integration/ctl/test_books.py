"""``quantumctl trades|profit|balance`` over a real journal (SQLite, and the same answers
from PostgreSQL), tables and ``--json``; bad arguments answered in one line with exit code 2.
The commands run in-process (typer's runner, as tests/integration/ctl/test_ctl.py does); one
runs as a subprocess, as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quantum.ctl.main import app
from quantum.journal import books, postgres
from quantum.journal.database import make_engine, upgrade
from quantum.journal.synthetic import round_trips
from quantum.journal.writer import Journal

START_MS = 1_756_684_800_000  # 2025-09-01T00:00Z, where the synthetic trades begin


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def ctl(url: str, *args: str) -> Done:
    result = CliRunner(env={"QT_DATABASE_URL": url}).invoke(app, list(args))
    return Done(result.exit_code, result.stdout, result.stderr)


def subprocess_ctl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env["QT_DATABASE_URL"] = url
    return subprocess.run([sys.executable, "-m", "quantum.ctl", *args], env=env, timeout=120,
                          capture_output=True, text=True, check=False)


def fill(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    Journal(engine).write(round_trips(40, open_last=True))
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    fill(url)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    reason = postgres.ensure()
    if reason is not None:
        pytest.skip(f"PostgreSQL unavailable: {reason}")
    url = postgres.create_database()
    try:
        fill(url)
        yield url
    finally:
        postgres.drop_database(url)


def as_json(done: Done | subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_trades_open_and_closed(sqlite_url: str) -> None:
    closed = as_json(ctl(sqlite_url, "trades", "--json", "--limit", "1000"))["closed"]
    assert len(closed) == 39
    assert [t["exit_ts"] for t in closed] == sorted((t["exit_ts"] for t in closed),
                                                    reverse=True)
    btc = as_json(ctl(sqlite_url, "trades", "--symbol", "btcusdt", "--json"))["closed"]
    assert btc and {t["symbol"] for t in btc} == {"BTCUSDT"}
    middle = sorted(t["exit_ts"] for t in closed)[20]
    since = ctl(sqlite_url, "trades", "--since", _iso(middle), "--json", "--limit", "1000")
    assert {t["exit_ts"] for t in as_json(since)["closed"]} == {
        t["exit_ts"] for t in closed if t["exit_ts"] >= middle}
    opened = as_json(ctl(sqlite_url, "trades", "--open", "--json"))["open"]
    assert len(opened) == 1 and opened[0]["quantity"] > 0
    table = subprocess_ctl(sqlite_url, "trades", "--limit", "5")
    assert table.returncode == 0 and "Closed trades (5, newest first)" in table.stdout
    assert "Open positions (1)" in ctl(sqlite_url, "trades", "--open").stdout


def test_profit_by_every_grouping_adds_up(sqlite_url: str) -> None:
    closed = as_json(ctl(sqlite_url, "trades", "--json", "--limit", "1000"))["closed"]
    net = sum(t["net_pnl"] for t in closed)
    for by in ("symbol", "exit_reason", "day", "week"):
        document = as_json(ctl(sqlite_url, "profit", "--by", by, "--json"))
        assert document["by"] == by and document["total"]["trades"] == 39
        assert sum(g["trades"] for g in document["groups"]) == 39
        assert sum(g["net_pnl"] for g in document["groups"]) == pytest.approx(net)
        assert document["total"]["net_pnl"] == pytest.approx(net)
    weeks = as_json(ctl(sqlite_url, "profit", "--by", "week", "--json"))["groups"]
    assert weeks[0]["week"] == "2025-W36"
    table = ctl(sqlite_url, "profit", "--by", "exit_reason")
    assert table.returncode == 0 and "Profit by exit_reason" in table.stdout
    assert "total" in table.stdout


def test_balance_is_the_newest_snapshot(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    newest = books.balance(engine)
    engine.dispose()
    assert newest is not None
    assert as_json(ctl(sqlite_url, "balance", "--json")) == newest
    table = ctl(sqlite_url, "balance")
    assert table.returncode == 0 and f"{newest['equity']:,.2f}" in table.stdout


def test_postgresql_gives_the_same_books(sqlite_url: str, postgres_url: str) -> None:
    for arguments in (("profit", "--by", "day"), ("profit", "--by", "symbol"),
                      ("trades", "--limit", "1000"), ("trades", "--open"), ("balance",)):
        on_sqlite = as_json(ctl(sqlite_url, *arguments, "--json"))
        on_postgres = as_json(ctl(postgres_url, *arguments, "--json"))
        assert json.dumps(on_postgres, sort_keys=True) == json.dumps(on_sqlite, sort_keys=True)


@pytest.mark.parametrize(("arguments", "message"), [
    (("profit", "--by", "month"),
     "--by 'month': choose one of symbol, exit_reason, day, week"),
    (("trades", "--since", "last tuesday"),
     "--since 'last tuesday' is not an ISO date or time (e.g. 2025-09-01 or 2025-09-01T12:00)"),
    (("trades", "--symbol", "BTC/USDT"), "--symbol 'BTC/USDT' is not a symbol (e.g. BTCUSDT)"),
    (("trades", "--open", "--since", "2025-09-01"),
     "--since applies to closed trades, not to --open"),
])
def test_bad_arguments_are_one_line(sqlite_url: str, arguments: tuple[str, ...],
                                    message: str) -> None:
    done = ctl(sqlite_url, *arguments)
    assert done.returncode == 2
    assert done.stderr.strip() == f"quantumctl: error: {message}"


def test_an_unusable_journal_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    missing = f"sqlite:///{tmp_path / 'a-file' / 'journal.sqlite'}"
    done = subprocess_ctl(missing, "balance")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("quantumctl: error: cannot read the journal at sqlite:///")
    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    done = subprocess_ctl(empty, "balance")
    assert done.returncode == 1
    assert done.stderr == ("quantumctl: error: the journal holds no portfolio snapshot yet "
                           "(is the journal running?)\n")
    bad = ctl("nonsense://", "balance")
    assert bad.returncode == 2 and "is not a database URL" in bad.stderr


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
