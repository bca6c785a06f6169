"""quantumctl's argument checks and replay output helpers, without Redis."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from quantum.ctl.errors import ArgumentError, redact_url
from quantum.ctl.replay_cmd import (
    _key_figures,
    _Progress,
    check_data_dir,
    parse_speed,
    parse_symbols,
    parse_time,
)


def test_speed_is_max_or_a_positive_finite_number() -> None:
    assert parse_speed("max") is None
    assert parse_speed("MAX") is None
    assert parse_speed("60") == 60.0
    assert parse_speed("0.5") == 0.5
    for bad in ("fast", "0", "-2", "nan", "inf", ""):
        with pytest.raises(ArgumentError, match="--speed must be 'max' or a positive number"):
            parse_speed(bad)


def test_times_are_iso_and_utc() -> None:
    assert parse_time(None, "--start") is None
    assert parse_time("2024-01-31", "--start") == datetime(2024, 1, 31, tzinfo=UTC)
    assert parse_time("2024-01-31T12:00:00+02:00", "--end") == datetime(
        2024, 1, 31, 10, tzinfo=UTC)
    assert parse_time("2024-01-31T12:00:00Z", "--end") == datetime(2024, 1, 31, 12, tzinfo=UTC)
    with pytest.raises(ArgumentError, match="--end must be an ISO 8601"):
        parse_time("yesterday", "--end")


def test_symbols_are_upper_case_and_unique() -> None:
    assert parse_symbols(" btcusdt,ETHUSDT,,BTCUSDT ") == ("BTCUSDT", "ETHUSDT")
    with pytest.raises(ArgumentError):
        parse_symbols(" , ")


def test_data_dir_must_hold_every_symbol(tmp_path: Path) -> None:
    (tmp_path / "BTCUSDT-5m.csv.gz").write_bytes(b"")
    check_data_dir(tmp_path, ["BTCUSDT"])
    with pytest.raises(ArgumentError, match="no 5-minute klines for ETHUSDT"):
        check_data_dir(tmp_path, ["BTCUSDT", "ETHUSDT"])
    with pytest.raises(ArgumentError, match="is not a directory"):
        check_data_dir(tmp_path / "missing", ["BTCUSDT"])


def test_plain_progress_prints_a_line_per_tenth(capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(force_terminal=False)
    with _Progress(console) as progress:
        for done in range(0, 201, 7):
            progress(done, 200)
        progress(200, 200)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "replay: 0/200 klines (0%)"
    assert lines[-1] == "replay: 200/200 klines (100%)"
    assert len(lines) == 11


def test_key_figures_take_scalars_one_level_deep() -> None:
    report = {"trades": 12, "pnl": {"net_usd": 3.5, "by_symbol": {"BTCUSDT": 1}},
              "equity_curve": [1, 2], "status": "ok", "bias": None}
    assert _key_figures(report) == [
        ("trades", 12), ("pnl.net_usd", 3.5), ("status", "ok"), ("bias", None)]


def test_urls_lose_their_credentials() -> None:
    assert redact_url("redis://:secret@host:6379/0") == "redis://***@host:6379/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
