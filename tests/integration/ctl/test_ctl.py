"""``quantumctl`` against a real Redis seeded by hand: status, report, verify, streams, DLQ."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from typer.testing import CliRunner, Result

from quantum.bus.runner import Delivered, dead_letter_fields
from quantum.bus.streams import DLQ
from quantum.contracts import streams as s
from quantum.ctl.main import app
from quantum.ctl.truth import group_lag
from quantum.observability.heartbeat import heartbeat_key, standby_key
from quantum.registry import fleet

SAMPLE = str(Path(__file__).resolve().parents[3] / "data" / "sample")


@pytest.fixture
def cli(redis_url: str, tmp_path: Path) -> Any:
    """Runs quantumctl on the test Redis, with a private (empty) state directory."""
    runner = CliRunner(env={"QT_REDIS_URL": redis_url, "QT_STATE_DIR": str(tmp_path / "var")})

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args))

    return invoke


def beat(client: redis.Redis, service: str) -> None:
    document = {"service": service, "consumer": f"{service}-0", "pid": 4242, "host": "test",
                "ts": time.time()}
    client.set(heartbeat_key(service), orjson.dumps(document), ex=60)


@pytest.fixture
def healthy(r: redis.Redis) -> redis.Redis:
    """Every registry service beating and every declared group in place."""
    for spec in fleet.SERVICES:
        beat(r, spec.name)
        for stream in spec.consumes:
            r.xgroup_create(stream.key, spec.group, id="0", mkstream=True)
    return r


def entry(kind: str, payload: dict[str, Any]) -> dict[str, str]:
    return {"type": kind, "version": "1", "id": f"id-{kind}", "ts": "1735603500000",
            "source": "test", "trace_id": "t", "causation_id": "", "payload": json.dumps(payload)}


def flags_of(document: dict[str, Any], kind: str) -> set[str]:
    return {flag["subject"] for flag in document["flags"] if flag["kind"] == kind}


def test_status_shows_which_host_holds_each_service_and_its_standby(
        cli: Any, healthy: redis.Redis) -> None:
    now = time.time()
    healthy.hset(standby_key("execution"), mapping={
        "execution-b": orjson.dumps({"consumer": "execution-b", "host": "vps-b", "pid": 77,
                                     "ts": now}),
        "execution-old": orjson.dumps({"consumer": "execution-old", "host": "gone", "pid": 1,
                                       "ts": now - 3600}),  # a leftover, not a standby
    })
    document = json.loads(cli("status", "--json").stdout)
    services = {row["name"]: row for row in document["services"]}
    assert services["execution"]["host"] == "test"  # the active instance's host
    assert [(b["host"], b["pid"]) for b in services["execution"]["standby"]] == [("vps-b", 77)]
    assert services["risk-governor"]["standby"] == []
    table = cli("status")
    assert table.exit_code == 0 and "vps-b" in table.stdout


def test_status_json_on_a_seeded_redis(cli: Any, healthy: redis.Redis) -> None:
    for n in range(3):
        healthy.xadd(s.FEATURES.key, entry("features.computed", {"n": n}))
    healthy.xreadgroup("ai-engine", "ai-engine-0", {s.FEATURES.key: ">"}, count=2)
    # entries on a stream no service consumes yet: nobody reads them (since issue 14 every
    # stream has a consumer; tests/integration/journal/test_journal_supervision.py holds the
    # "entries and no group" flag on a stream whose group is not created yet)
    unread = next((spec for spec in s.CATALOGUE.values()
                   if spec.name not in fleet.consumer_groups() and spec.name != "dlq"), None)
    if unread is not None:
        healthy.xadd(unread.key, entry("probe", {}))
    healthy.delete(heartbeat_key("market-publisher"))
    healthy.set(fleet.EXECUTION_KEY, b"{}")
    healthy.set(fleet.EXECUTION_KEY + ":BTCUSDT", b"{}")  # under an owned key: owned
    healthy.set("quantum:state:nobody", b"{}")

    result = cli("status", "--json")

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    services = {row["name"]: row for row in document["services"]}
    assert services["ai-engine"]["state"] == "up"
    assert services["ai-engine"]["pid"] == 4242
    assert 0 <= services["ai-engine"]["heartbeat_age_s"] < 60
    assert services["market-publisher"]["state"] == "down"
    assert services["market-publisher"]["heartbeat_age_s"] is None
    streams = {row["name"]: row for row in document["streams"]}
    features = streams["features"]
    assert features["length"] == 3
    assert features["producer"] == "feature-publisher"
    assert features["last_entry_time"].startswith("20")
    groups = {g["name"]: g for g in features["groups"]}
    assert set(groups) == {"ai-engine", "clm"}  # the registry's two consumers of features
    group = groups["ai-engine"]
    assert (group["pending"], group["lag"], group["declared"]) == (2, 1, True)
    assert flags_of(document, "missing_heartbeat") == {"market-publisher"}
    assert {"market.klines", "market.tick", *([unread.name] if unread else [])} <= flags_of(
        document, "dead_stream")
    assert flags_of(document, "undeclared_state_key") == {"quantum:state:nobody"}
    assert not flags_of(document, "orphan_group")
    assert not flags_of(document, "missing_group")


def test_lag_is_counted_when_redis_reports_none(r: redis.Redis) -> None:
    ids = [r.xadd("quantum:stream:features", {"n": str(n)}).decode() for n in range(5)]
    group = {"name": b"g", "last-delivered-id": ids[1].encode(), "lag": None}
    assert group_lag(r, "quantum:stream:features", group, ids[-1]) == 3
    group["last-delivered-id"] = ids[-1].encode()
    assert group_lag(r, "quantum:stream:features", group, ids[-1]) == 0


def test_report_is_one_document_with_dlq_count(cli: Any, healthy: redis.Redis) -> None:
    healthy.xadd(DLQ.key, {"type": "bus.dead_letter", "stream": s.FEATURES.key})
    result = cli("report", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["dlq"] == {"length": 1}
    assert document["redis"]["version"]
    assert document["supervisor"] is None
    assert document["drift"] == []
    assert {"services", "streams", "flags", "generated_at"} <= set(document)


def test_tables_render_without_a_terminal(cli: Any, healthy: redis.Redis) -> None:
    healthy.xgroup_create(s.FEATURES.key, "stray", id="0")
    for command in ("status", "report"):
        result = cli(command)
        assert result.exit_code == 0, result.stderr
        assert "features" in result.stdout
        assert "orphan" in result.stdout


def test_verify_passes_on_a_healthy_fleet(cli: Any, healthy: redis.Redis) -> None:
    result = cli("verify")
    assert result.exit_code == 0, result.stderr
    assert "matches the registry" in result.stdout


def test_verify_fails_on_undeclared_stream_and_orphan_group(
    cli: Any, healthy: redis.Redis
) -> None:
    healthy.xadd("quantum:stream:shadow.signals", {"type": "x"})
    healthy.xgroup_create("quantum:stream:shadow.signals", "lurker", id="0")
    healthy.xgroup_create(s.FEATURES.key, "stray", id="0")

    result = cli("verify")

    assert result.exit_code == 1
    assert "undeclared_stream: quantum:stream:shadow.signals" in result.stdout
    assert "orphan_group: features/stray" in result.stdout
    assert "orphan_group: shadow.signals/lurker" in result.stdout
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("quantumctl: error: 3 differences")


def test_verify_fails_on_missing_group_and_heartbeat(cli: Any, healthy: redis.Redis) -> None:
    healthy.xgroup_destroy(s.MARKET_KLINES.key, "feature-publisher")
    healthy.delete(heartbeat_key("risk-governor"))
    result = cli("verify")
    assert result.exit_code == 1
    assert "missing_group: market.klines" in result.stdout
    assert "missing_heartbeat: risk-governor" in result.stdout


def test_streams_tail_prints_type_time_source_payload(cli: Any, r: redis.Redis) -> None:
    for n in range(4):
        r.xadd(s.MARKET_KLINES.key, entry("market.kline", {"n": n}))
    result = cli("streams", "tail", "market.klines", "--count", "2")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[-1].split("  ")[1:] == [
        "market.kline", "2024-12-31T00:05:00.000+00:00", "test", '{"n":3}']


def dead_letter(client: redis.Redis, stream: str, fields: dict[str, str]) -> str:
    item = Delivered(stream, "1-1", {k.encode(): v.encode() for k, v in fields.items()})
    return client.xadd(DLQ.key, dead_letter_fields(item, "ai-engine", "payload invalid")).decode()


def test_dlq_list_and_replay_round_trip(cli: Any, r: redis.Redis) -> None:
    original = entry("features.computed", {"symbol": "BTCUSDT"})
    first = dead_letter(r, s.FEATURES.key, original)
    second = dead_letter(r, s.FEATURES.key, entry("features.computed", {"symbol": "ETHUSDT"}))

    listed = cli("dlq", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert [e["id"] for e in entries] == [first, second]
    assert entries[0]["stream"] == s.FEATURES.key
    assert entries[0]["reason"] == "payload invalid"
    assert entries[0]["original"] == original
    assert "reason: payload invalid" in cli("dlq", "list").stdout

    replayed = cli("dlq", "replay", "--id", first)
    assert replayed.exit_code == 0, replayed.stderr
    assert [entry_id.decode() for entry_id, _ in r.xrange(DLQ.key)] == [second]
    ((_, fields),) = r.xrange(s.FEATURES.key)
    assert {k.decode(): v.decode() for k, v in fields.items()} == original

    again = cli("dlq", "replay", "--id", first)
    assert again.exit_code == 1
    assert f"not in the DLQ: {first}" in again.stdout

    everything = cli("dlq", "replay", "--all")
    assert everything.exit_code == 0, everything.stderr
    assert r.xlen(DLQ.key) == 0
    assert r.xlen(s.FEATURES.key) == 2


def test_dlq_replay_refuses_a_stream_outside_the_catalogue(cli: Any, r: redis.Redis) -> None:
    stray = dead_letter(r, "quantum:stream:somewhere.else", entry("x", {}))
    result = cli("dlq", "replay", "--all")
    assert result.exit_code == 1
    assert f"left {stray} in the DLQ" in result.stdout
    assert r.xlen(DLQ.key) == 1
    assert not r.exists("quantum:stream:somewhere.else")


@pytest.mark.parametrize("args", [
    ["status", "--bogus"],
    ["streams", "tail"],
    ["streams", "tail", "no.such.stream"],
    ["dlq", "list", "--count"],
    ["dlq", "list", "--count", "zero"],
    ["dlq", "replay"],
    ["dlq", "replay", "--id", "not-an-id"],
    ["up", "no-such-service"],
    ["units"],
    ["no-such-command"],
    ["replay", "--data", SAMPLE, "--symbols", "BTCUSDT", "--report", "r.json",
     "--speed", "fast"],
    ["replay", "--data", SAMPLE, "--symbols", "BTCUSDT", "--report", "r.json",
     "--start", "31/01/2024"],
    ["replay", "--data", SAMPLE, "--symbols", "BTCUSDT,NOPEUSDT", "--report", "r.json"],
    ["replay", "--data", "/no/such/dir", "--symbols", "BTCUSDT", "--report", "r.json"],
    ["replay", "--data", SAMPLE, "--symbols", "BTCUSDT", "--report", "r.json",
     "--start", "2024-02-01", "--end", "2024-01-01"],
    ["status", "--redis-url", "ftp://example"],
    ["backtest", "--data", SAMPLE, "--symbols", "BTCUSDT,NOPEUSDT", "--report", "r.json"],
    ["backtest", "--data", "/no/such/dir", "--symbols", "BTCUSDT", "--report", "r.json"],
    ["backtest", "--data", SAMPLE, "--symbols", "BTCUSDT", "--report", "r.json",
     "--start", "2024-02-01", "--end", "2024-01-01"],
    ["backtest", "--data", SAMPLE, "--symbols", "BTCUSDT", "--report", "r.json",
     "--set", "no-equals-sign"],
    ["backtest", "--data", SAMPLE, "--symbols", "BTCUSDT", "--report", "r.json",
     "--set", "leverage=3"],
    ["backtest", "--data", SAMPLE, "--symbols", "BTCUSDT", "--report", "r.json",
     "--model", " "],
])
def test_bad_arguments_give_one_line_and_exit_2(cli: Any, args: list[str]) -> None:
    result = cli(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("quantumctl: error: ")


def test_messages_name_what_is_wrong(cli: Any) -> None:
    speed = cli("replay", "--data", SAMPLE, "--symbols", "BTCUSDT", "--report", "r.json",
                "--speed", "fast")
    assert speed.stderr.strip() == (
        "quantumctl: error: --speed must be 'max' or a positive number, got 'fast'")
    missing = cli("replay", "--data", SAMPLE, "--symbols", "BTCUSDT,NOPEUSDT,XUSDT",
                  "--report", "r.json")
    assert "NOPEUSDT, XUSDT" in missing.stderr
    assert "BTCUSDT-5m" not in missing.stderr


def test_unreachable_redis_is_one_line_naming_the_url(cli: Any) -> None:
    from quantum import localredis

    url = f"redis://127.0.0.1:{localredis.free_port()}/0"
    for args in (["status"], ["report", "--json"], ["verify"], ["dlq", "list"]):
        result = cli(*args, "--redis-url", url)
        assert result.exit_code == 1
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith(f"quantumctl: error: cannot reach Redis at {url}")


def test_help_lists_every_command(cli: Any) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("up", "down", "status", "report", "streams", "dlq", "units", "verify",
                    "replay"):
        assert command in result.stdout
    assert cli().exit_code == 0
    assert "tail" in cli("streams").stdout


def test_units_check_reports_the_generator_verdict(cli: Any) -> None:
    from quantum.registry import generate

    differing = generate.check()
    result = cli("units", "--check")
    assert result.exit_code == (1 if differing else 0), result.stderr
    for path in differing:
        assert str(path) in result.stdout


def test_replay_errors_become_one_line_and_exit_1(cli: Any, tmp_path: Path) -> None:
    result = cli("replay", "--data", SAMPLE, "--symbols", "BTCUSDT", "--start", "2001-01-01",
                 "--end", "2001-01-02", "--report", str(tmp_path / "report.json"))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("quantumctl: error: replay failed: BTCUSDT: no bars")


@pytest.mark.slow
def test_replay_runs_the_fleet_and_prints_the_figures(cli: Any, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = cli("replay", "--data", SAMPLE, "--symbols", "BTCUSDT", "--start", "2025-09-01",
                 "--end", "2025-09-01T06:00", "--speed", "max", "--report", str(report))
    assert result.exit_code == 0, result.stderr
    written = json.loads(report.read_text())
    lines = result.stdout.splitlines()
    progress = [line for line in lines if line.startswith("replay: ")]
    assert progress[-1] == f"replay: {written['klines']}/{written['klines']} klines (100%)"
    assert lines[-1] == f"report written to {report}"
    assert f"klines: {written['klines']}" in lines


@pytest.mark.parametrize(("args", "says"), [
    (["--start", "2001-01-01", "--end", "2001-01-02"], "backtest failed: BTCUSDT: no bars"),
    (["--set", "QT_NO_SUCH_KEY=1"], "unknown setting QT_NO_SUCH_KEY"),
    (["--set", "QT_SLIPPAGE_BPS=lots"], "bad setting QT_SLIPPAGE_BPS"),
    (["--set", "risk.no_such_limit=1"], "risk.no_such_limit"),
    (["--model", "20990101T000000000000Z"], "backtest failed"),
])
def test_backtest_errors_become_one_line_and_exit_1(
        cli: Any, tmp_path: Path, args: list[str], says: str) -> None:
    result = cli("backtest", "--data", SAMPLE, "--symbols", "BTCUSDT",
                 "--start", "2025-09-01", "--end", "2025-09-02",
                 "--report", str(tmp_path / "report.json"), *args)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("quantumctl: error: ") and says in result.stderr


def test_backtest_refuses_a_corrupt_data_file_naming_the_line(cli: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with gzip.open(Path(SAMPLE) / "BTCUSDT-5m.csv.gz", "rt") as source:
        lines = source.readlines()[:50]
    lines[20] = "1756690800000,oops,1,1,1,1\n"
    with gzip.open(data / "BTCUSDT-5m.csv.gz", "wt") as target:
        target.writelines(lines)
    result = cli("backtest", "--data", str(data), "--symbols", "BTCUSDT",
                 "--report", str(tmp_path / "report.json"))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "BTCUSDT-5m.csv.gz:21" in result.stderr


def test_backtest_prints_the_tables_and_writes_the_report_files(
        cli: Any, tmp_path: Path) -> None:
    report = tmp_path / "bt.json"
    result = cli("backtest", "--data", SAMPLE, "--symbols", "BTCUSDT,ETHUSDT",
                 "--start", "2025-09-01", "--end", "2025-09-04", "--report", str(report),
                 "--set", "risk.max_leverage=8")
    assert result.exit_code == 0, result.stderr
    written = json.loads(report.read_text())
    assert written["engine"] == "backtest" and written["klines"] == 2 * 3 * 288
    assert written["benchmarks"] and written["trades"] == len(written["trade_list"])
    for title in ("Per symbol", "Exit reasons", "Buy & hold"):
        assert title.lower() in result.stdout.lower(), title
    assert (tmp_path / "bt.png").read_bytes().startswith(b"\x89PNG")
    assert "<svg" in (tmp_path / "bt.html").read_text()
    assert result.stdout.splitlines()[-1] == f"report written to {report}"
