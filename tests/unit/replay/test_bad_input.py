"""Bad input gets a clear error naming the thing, and nothing already written is lost."""

from __future__ import annotations

import gzip
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quantum.app import connect
from quantum.config import ConfigError, load
from quantum.replay.data import DataError, load_symbol
from quantum.replay.orchestrator import ReplayError, ReplayRequest, validate
from services.risk_governor.config import Settings as GovernorSettings

pytestmark = pytest.mark.usefixtures("only_this_services_keys")


def request(data_dir: Path, *symbols: str) -> ReplayRequest:
    return ReplayRequest(
        data_dir=data_dir,
        symbols=symbols,
        start=None,
        end=None,
        speed=None,
        report_path=data_dir / "report.json",
    )


def test_env_value_of_the_wrong_type_is_refused_with_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QT_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError, match="QT_BATCH_SIZE") as error:
        load(GovernorSettings)
    assert error.value.code == 78  # EX_CONFIG: systemd is told not to restart it


def test_env_file_of_the_wrong_type_is_refused_with_the_key(tmp_path: Path) -> None:
    env_file = tmp_path / "risk-governor.env"
    env_file.write_text("QT_MAX_DELIVERIES=-3\n")
    with pytest.raises(ConfigError, match="QT_MAX_DELIVERIES"):
        load(GovernorSettings, env_file=str(env_file))


def test_unknown_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QT_MAX_LEVRAGE", "5")
    with pytest.raises(ConfigError, match="unknown setting QT_MAX_LEVRAGE"):
        load(GovernorSettings)


def test_unreachable_redis_is_waited_for_not_a_config_error() -> None:
    # A Redis that is down is an outage, not bad settings: the service waits for it.
    client = connect("redis://127.0.0.1:1/0")
    assert client.connection_pool.connection_kwargs["port"] == 1


def test_unparseable_redis_url_names_the_key() -> None:
    with pytest.raises(ConfigError, match="QT_REDIS_URL"):
        connect("http://127.0.0.1:6379/0")


def test_corrupt_csv_line_names_file_and_line(tmp_path: Path, sample_dir: Path) -> None:
    lines = gzip.open(sample_dir / "BTCUSDT-5m.csv.gz", "rt").read().splitlines()[:50]
    lines[17] = "1756689900000,108000.0,oops,107900.0,107950.0,12.5"
    with gzip.open(tmp_path / "BTCUSDT-5m.csv.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"BTCUSDT-5m\.csv\.gz:18: not a number"):
        load_symbol(tmp_path, "BTCUSDT")
    with pytest.raises(ReplayError, match=r":18: not a number"):
        validate(request(tmp_path, "BTCUSDT"))


def test_unknown_symbol_and_empty_dir_are_named(tmp_path: Path, sample_dir: Path) -> None:
    with pytest.raises(ReplayError, match=r"no 5m klines for DOGEUSDT .* \(has: none\)"):
        validate(request(tmp_path, "DOGEUSDT"))
    shutil.copy(sample_dir / "BTCUSDT-5m.csv.gz", tmp_path)
    with pytest.raises(ReplayError, match=r"no 5m klines for NOPEUSDT .* \(has: BTCUSDT\)"):
        validate(request(tmp_path, "BTCUSDT", "NOPEUSDT"))
    with pytest.raises(ReplayError, match="does not exist"):
        validate(request(tmp_path / "missing", "BTCUSDT"))


def test_a_range_without_bars_is_named(tmp_path: Path, sample_dir: Path) -> None:
    shutil.copy(sample_dir / "BTCUSDT-5m.csv.gz", tmp_path)
    late = ReplayRequest(
        data_dir=tmp_path,
        symbols=("BTCUSDT",),
        start=datetime(2030, 1, 1, tzinfo=UTC),
        end=None,
        speed=None,
        report_path=tmp_path / "r.json",
    )
    with pytest.raises(ReplayError, match="BTCUSDT: no bars between 2030-01-01"):
        validate(late)
