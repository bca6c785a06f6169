"""Metrics, alerts and dashboards against the real thing.

The rule and config files pass ``promtool`` (syntax and the alert unit tests); the generated
scrape config and Grafana dashboards equal what the registry renders; and a real Prometheus
(Debian's package) scraping a running fleet — every replay service, the journal and the
dashboard API, over two days of the sample data — holds every series that a dashboard query
or an alert expression names, and evaluates each of them without error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from quantum.ctl import timers
from quantum.dashboard import provisioning
from quantum.localredis import free_port
from quantum.observability.heartbeat import heartbeat_key
from quantum.process.supervisor import Supervisor
from quantum.registry.fleet import PORTFOLIO_KEY, REPLAY_KEY, SERVICES, replay_barrier_pairs
from quantum.replay.barrier import Barrier
from quantum.replay.orchestrator import ReplayRequest, _service_env
from quantum.risk import fleetstate

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PUBLISHER = "market-publisher"
SERIES = re.compile(r"\b(quantum_[a-z0-9_]+|up)\b")


def binary(name: str) -> str:
    """``prometheus``/``promtool`` from Debian's package, installed when missing (as root)."""
    found = shutil.which(name)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "prometheus"], capture_output=True,
                       timeout=900, check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} unavailable: Debian's prometheus package cannot be installed here")
    return found


def alert_expressions() -> dict[str, str]:
    import yaml

    document = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return {rule["alert"]: rule["expr"] for group in document["groups"]
            for rule in group["rules"]}


def test_promtool_accepts_the_rules_config_and_alert_tests(tmp_path: Path) -> None:
    promtool = binary("promtool")
    for name in ("alerts.yml", "alerts.test.yml", "prometheus.yml"):
        shutil.copy(PROMETHEUS_DIR / name, tmp_path / name)
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "quantum.json").write_text(provisioning.targets_json())
    for arguments in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"],
                      ["check", "config", "prometheus.yml"]):
        done = subprocess.run([promtool, *arguments], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_scrape_targets_follow_the_registry_and_dashboards_are_current() -> None:
    assert provisioning.check() == [], "run `python -m quantum.dashboard.provisioning`"
    targets = json.loads(provisioning.targets_json())
    assert {(t["labels"]["service"], t["targets"][0]) for t in targets} == {
        (spec.name, f"127.0.0.1:{spec.port}") for spec in SERVICES if spec.port}
    for uid in provisioning.DASHBOARDS:
        document = json.loads((ROOT / provisioning.DASHBOARD_DIR / f"{uid}.json").read_text())
        assert document["uid"] == uid and document["panels"]
        for panel in document["panels"]:
            assert panel["datasource"]["uid"] == provisioning.DATASOURCE_UID
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    datasource = (ROOT / "deploy/grafana/provisioning/datasources/quantum.yml").read_text()
    assert f"uid: {provisioning.DATASOURCE_UID}" in datasource


# --- a running fleet, scraped by a real Prometheus -----------------------------------------


def _command(module: str, variable: str, port: int) -> list[str]:
    """Run ``module`` as ``__main__`` with its own port (the supervisor shares one env)."""
    code = (f"import os, runpy; os.environ[{variable!r}] = {str(port)!r}; "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    return ["-c", code]


def _wait(condition: Any, timeout: float, what: str, supervisors: list[Supervisor]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for supervisor in supervisors:
            failed = [s for s in supervisor.status() if s.gave_up]
            assert not failed, f"{failed[0].name} gave up (exit {failed[0].last_exit})"
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def fleet(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """Every replay service plus the journal and the dashboard API, each exporting metrics
    on a port of its own, after a two-day replay of BTCUSDT and ETHUSDT."""
    work = tmp_path_factory.mktemp("fleet")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    fleetstate.initialise(client, "pytest")
    sample = ROOT / "data" / "sample"
    request = ReplayRequest(data_dir=sample, symbols=("BTCUSDT", "ETHUSDT"),
                            start=datetime(2025, 9, 1, tzinfo=UTC),
                            end=datetime(2025, 9, 5, tzinfo=UTC), speed=None,
                            report_path=work / "report.json", redis_url=redis_url)
    env = _service_env(request, redis_url)
    env["QT_DATABASE_URL"] = f"sqlite:///{work / 'journal.sqlite'}"
    env["QT_SUPERVISOR_STATE_FILE"] = ""
    consumers = [s for s in SERVICES if s.replay and s.name != PUBLISHER]
    extra = [s for s in SERVICES if s.name in ("journal", "dashboard-api", "ledger")]
    ports = {spec.name: free_port() for spec in [*consumers, *extra]}
    ports[PUBLISHER] = free_port()
    commands = {spec.name: _command(spec.module, "QT_HTTP_PORT" if spec.name == "dashboard-api"
                                    else "QT_METRICS_PORT", ports[spec.name])
                for spec in [*consumers, *extra, *[s for s in SERVICES if s.name == PUBLISHER]]}
    names = [spec.name for spec in [*consumers, *extra]]
    services = Supervisor(names, env=env, workdir=ROOT, log_dir=work / "logs", max_restarts=2,
                          commands={n: commands[n] for n in names})
    publisher = Supervisor([PUBLISHER], env=env, workdir=ROOT, log_dir=work / "logs",
                           max_restarts=2, commands={PUBLISHER: commands[PUBLISHER]})
    barrier = Barrier(client, replay_barrier_pairs())
    services.start()
    try:
        _wait(lambda: all(client.exists(heartbeat_key(n)) for n in names)
              and client.exists(PORTFOLIO_KEY) and not barrier.busy(), 120, "the fleet",
              [services])
        publisher.start()

        def replay_done() -> bool:
            raw = client.get(REPLAY_KEY)
            return bool(raw) and orjson.loads(raw).get("status") == "done"

        _wait(replay_done, 300, "the replay", [services, publisher])
        # a timer's success as `quantumctl timer run` records it (the dashboard exports it)
        timers.record(client, "verify", True, "the live system matches the registry",
                      time.time())
        ports.pop(PUBLISHER)  # done with its data: it exits, and is no scrape target
        yield ports
    finally:
        publisher.stop()
        services.stop()
        client.close()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return orjson.loads(response.read())


@pytest.fixture(scope="module")
def prometheus(fleet: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    executable = binary("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", work / "alerts.yml")
    (work / "prometheus.yml").write_text(provisioning.scrape_config(fleet, interval="1s"))
    port = free_port()
    process = subprocess.Popen(
        [executable, f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=(work / "log").open("wb"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                targets = _get(f"{base}/api/v1/targets")["data"]["activeTargets"]
                rules = _get(f"{base}/api/v1/rules")["data"]["groups"]
                evaluated = rules and all(r.get("lastEvaluation", "").startswith("20")
                                          for g in rules for r in g["rules"])
                if (len(targets) == len(fleet) and all(t["health"] == "up" for t in targets)
                        and evaluated):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            down = [(t["labels"].get("service"), t.get("lastError")) for t in targets
                    if t["health"] != "up"]
            pytest.fail(f"Prometheus did not scrape every target: {down} "
                        f"{(work / 'log').read_text()[-2000:]}")
        time.sleep(2.5)  # a few more scrapes, so rate() and changes() have two points
        yield base
    finally:
        process.terminate()
        process.wait(20)


def test_every_dashboard_query_and_alert_uses_exported_series(prometheus: str) -> None:
    names = set(_get(f"{prometheus}/api/v1/label/__name__/values")["data"])
    expressions = {f"dashboard: {e}": e for e in provisioning.dashboard_queries()}
    expressions |= {f"alert {name}: {e}": e for name, e in alert_expressions().items()}
    missing = {where: sorted(set(SERIES.findall(e)) - names)
               for where, e in expressions.items() if set(SERIES.findall(e)) - names}
    assert missing == {}, f"series no service exports: {missing}"
    for where, expression in expressions.items():
        query = urllib.parse.urlencode({"query": expression})
        answer = _get(f"{prometheus}/api/v1/query?{query}")
        assert answer["status"] == "success", (where, answer)
    groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
    unhealthy = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]
                 if r["health"] != "ok"]
    assert unhealthy == []


def test_the_fleet_reports_trading_through_prometheus(prometheus: str,
                                                     fleet: dict[str, int]) -> None:
    def value(expression: str) -> float:
        query = urllib.parse.urlencode({"query": expression})
        result = _get(f"{prometheus}/api/v1/query?{query}")["data"]["result"]
        return float(result[0]["value"][1]) if result else float("nan")

    assert value("sum(quantum_bus_consumed_total)") > 0
    assert value("sum(quantum_ai_signals_total)") > 0
    assert value("sum(quantum_journal_events_written_total)") > 0
    assert value('max(quantum_stream_length{stream="market.klines"})') > 0
    assert value("max(quantum_ess_tripped)") == 0
    assert value("max(quantum_journal_database_up)") == 1
    assert value('count(up{job="quantum"} == 1)') == len(fleet)
    assert value('count(quantum_service_heartbeat_up == 1)') >= len(fleet)
