"""Alerts as deployed: the shipped Prometheus config, rules and Alertmanager config, the real
Prometheus and Alertmanager (Debian's packages), the real dashboard-api process scraped for
its fleet gauges, and a local stand-in that speaks Telegram's Bot API.

A required service (risk-governor) has no heartbeat: QuantumRequiredServiceDown goes pending
and then firing *with the service's own label* (the dashboard's gauges keep their `service`
label through ``honor_labels``; before, Prometheus renamed it to ``exported_service`` and the
alert never fired), Alertmanager routes it by severity to the dashboard's receiver, and the
message reaches the Telegram stand-in. A heartbeat pid that changes three times fires
QuantumRestartLoop for that service; an ESS trip reaches the chat with its reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import yaml

from quantum.localredis import free_port
from quantum.observability.heartbeat import heartbeat_key
from quantum.registry.fleet import SERVICES
from quantum.risk import ess, fleetstate
from quantum.standin.telegram import TelegramStandIn

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
DOWN = "risk-governor"
TOKEN = "123456:stand-in-bot-token"
CHAT = "-100200300"
WEBHOOK_TOKEN = "alert-webhook-test-token"
SHIPPED_RECEIVER = "http://127.0.0.1:8080/api/v1/notify/alertmanager"
SHIPPED_CREDENTIALS = "/etc/prometheus/quantum-alert-webhook.token"


def binary(name: str, package: str) -> str:
    """A binary from Debian's package, installed when missing (as root)."""
    found = shutil.which(name)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", package], capture_output=True,
                       timeout=900, check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} unavailable: Debian's {package} package cannot be installed here")
    return found


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return orjson.loads(response.read())


def _until(condition: Callable[[], Any], timeout: float, what: str,
           logs: list[Path] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.25)
    tails = "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in logs or [] if p.exists())
    pytest.fail(f"timed out waiting for {what}{tails}")


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _beat(client: redis.Redis, name: str, pid: int) -> None:
    document = {"service": name, "consumer": f"{name}-0", "pid": pid, "host": "test",
                "ts": time.time()}
    client.set(heartbeat_key(name), orjson.dumps(document), ex=600)


@dataclass
class Deployed:
    client: redis.Redis
    prometheus: str
    telegram: TelegramStandIn
    logs: list[Path]

    def alerts(self, name: str) -> list[dict[str, Any]]:
        found = _get(f"{self.prometheus}/api/v1/alerts")["data"]["alerts"]
        return [a for a in found if a["labels"]["alertname"] == name]

    def query(self, expression: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": expression})
        result: list[dict[str, Any]] = _get(f"{self.prometheus}/api/v1/query?{query}")[
            "data"]["result"]
        return result


@pytest.fixture(scope="module")
def deployed(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    prometheus_binary = binary("prometheus", "prometheus")
    alertmanager_binary = binary("prometheus-alertmanager", "prometheus-alertmanager")
    work = tmp_path_factory.mktemp("alerting")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    fleetstate.initialise(client, "pytest")
    for number, spec in enumerate(SERVICES):
        if spec.required and spec.name != DOWN:
            _beat(client, spec.name, 1000 + number)
    processes: list[subprocess.Popen[bytes]] = []
    logs = [work / "dashboard.log", work / "alertmanager.log", work / "prometheus.log"]
    with TelegramStandIn(TOKEN, CHAT) as telegram:
        try:
            dashboard_port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
            env.update({
                "QT_REDIS_URL": redis_url, "QT_HTTP_PORT": str(dashboard_port),
                "QT_DATABASE_URL": f"sqlite:///{work / 'journal.sqlite'}",
                "QT_SUPERVISOR_STATE_FILE": "", "QT_ALERT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
                "QT_NOTIFY_TELEGRAM_TOKEN": TOKEN, "QT_NOTIFY_TELEGRAM_CHAT_ID": CHAT,
                "QT_NOTIFY_TELEGRAM_API": telegram.url,
            })
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "services.dashboard_api"], cwd=ROOT, env=env,
                stdout=subprocess.DEVNULL, stderr=logs[0].open("wb")))
            _until(lambda: _listening(dashboard_port), 60, "the dashboard-api", logs)

            # Alertmanager: the shipped file, pointed at this dashboard and token file.
            token_file = work / "webhook.token"
            token_file.write_text(WEBHOOK_TOKEN + "\n")
            config = ALERTMANAGER_CONFIG.read_text()
            assert SHIPPED_RECEIVER in config and SHIPPED_CREDENTIALS in config
            config = config.replace(SHIPPED_RECEIVER, f"http://127.0.0.1:{dashboard_port}"
                                    "/api/v1/notify/alertmanager")
            (work / "alertmanager.yml").write_text(
                config.replace(SHIPPED_CREDENTIALS, str(token_file)))
            alertmanager_port = free_port()
            processes.append(subprocess.Popen(
                [alertmanager_binary, f"--config.file={work / 'alertmanager.yml'}",
                 f"--storage.path={work / 'alertmanager'}",
                 f"--web.listen-address=127.0.0.1:{alertmanager_port}",
                 "--cluster.listen-address=", "--log.level=warn"],
                stdout=subprocess.DEVNULL, stderr=logs[1].open("wb")))
            _until(lambda: _listening(alertmanager_port), 60, "Alertmanager", logs)

            # Prometheus: the shipped file and rules; only the intervals are shortened and
            # the Alertmanager address is this one. The target is labelled as
            # `provisioning --targets` labels it: service=dashboard-api.
            prometheus_work = work / "prometheus"
            (prometheus_work / "targets").mkdir(parents=True)
            shutil.copy(PROMETHEUS_DIR / "alerts.yml", prometheus_work / "alerts.yml")
            shipped = (PROMETHEUS_DIR / "prometheus.yml").read_text()
            assert "honor_labels: true" in shipped and "127.0.0.1:9093" in shipped
            (prometheus_work / "prometheus.yml").write_text(
                shipped.replace("15s", "1s").replace("127.0.0.1:9093",
                                                     f"127.0.0.1:{alertmanager_port}"))
            (prometheus_work / "targets" / "quantum.json").write_text(orjson.dumps([{
                "targets": [f"127.0.0.1:{dashboard_port}"],
                "labels": {"service": "dashboard-api"}}]).decode())
            prometheus_port = free_port()
            processes.append(subprocess.Popen(
                [prometheus_binary, f"--config.file={prometheus_work / 'prometheus.yml'}",
                 f"--storage.tsdb.path={prometheus_work / 'data'}",
                 f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn"],
                stdout=subprocess.DEVNULL, stderr=logs[2].open("wb")))
            base = f"http://127.0.0.1:{prometheus_port}"

            def scraped() -> bool:
                targets = _get(f"{base}/api/v1/targets")["data"]["activeTargets"]
                return bool(targets) and all(t["health"] == "up" for t in targets)

            _until(scraped, 60, "Prometheus to scrape the dashboard", logs)
            yield Deployed(client, base, telegram, logs)
        finally:
            for process in reversed(processes):
                process.terminate()
            for process in processes:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            client.close()


def test_fleet_gauges_keep_the_service_label_they_describe(deployed: Deployed) -> None:
    series = _until(lambda: deployed.query("quantum_service_heartbeat_up"), 30,
                    "the heartbeat gauges", deployed.logs)
    assert all("exported_service" not in s["metric"] for s in series)
    services = {s["metric"]["service"]: float(s["value"][1]) for s in series}
    assert services[DOWN] == 0 and services["execution"] == 1
    assert len(services) == len(SERVICES)


def test_a_missing_required_heartbeat_fires_and_reaches_telegram(deployed: Deployed) -> None:
    def pending_or_firing() -> list[dict[str, Any]]:
        return [a for a in deployed.alerts("QuantumRequiredServiceDown")
                if a["state"] in ("pending", "firing")]

    alerts = _until(pending_or_firing, 30, "QuantumRequiredServiceDown pending", deployed.logs)
    assert [a["labels"]["service"] for a in alerts] == [DOWN]
    assert alerts[0]["labels"]["severity"] == "critical"
    assert alerts[0]["annotations"]["summary"] == f"{DOWN} has no heartbeat; trading fails closed"
    _until(lambda: [a for a in pending_or_firing() if a["state"] == "firing"], 100,
           "QuantumRequiredServiceDown firing (for: 1m)", deployed.logs)
    text = _until(lambda: [t for t in deployed.telegram.texts()
                           if "QuantumRequiredServiceDown" in t], 60,
                  "the alert in the Telegram chat", deployed.logs)[0]
    assert "[CRITICAL] FIRING QuantumRequiredServiceDown" in text
    assert f"service={DOWN}" in text and "runbook: docs/RUNBOOK.md#service-down" in text


def test_a_restarting_service_fires_the_restart_loop_for_that_service(
        deployed: Deployed) -> None:
    for pid in (5001, 5002, 5003, 5004):
        _beat(deployed.client, "execution", pid)
        _until(lambda pid=pid: [s for s in deployed.query(
            'quantum_service_process_id{service="execution"}')
            if s["value"][1] == str(pid)], 20, f"pid {pid} scraped", deployed.logs)
    alerts = _until(lambda: [a for a in deployed.alerts("QuantumRestartLoop")
                             if a["state"] == "firing"], 30, "QuantumRestartLoop",
                    deployed.logs)
    assert [a["labels"]["service"] for a in alerts] == ["execution"]
    _until(lambda: [t for t in deployed.telegram.texts() if "QuantumRestartLoop" in t
                    and "service=execution" in t], 60, "the restart loop in the chat",
           deployed.logs)


def test_an_ess_trip_reaches_telegram_with_its_reason(deployed: Deployed) -> None:
    ess.trip(deployed.client, "operator drill: alert path", "pytest")
    text = _until(lambda: [t for t in deployed.telegram.texts() if "EMERGENCY STOP" in t],
                  60, "the ESS trip in the chat", deployed.logs)[0]
    assert text.startswith("EMERGENCY STOP TRIPPED")
    assert "reason: operator drill: alert path" in text and "by: pytest" in text
    assert "QuantumEssTripped" in text
    dashboard_log = deployed.logs[0].read_text()
    assert "alerts forwarded" in dashboard_log
    assert TOKEN not in dashboard_log and WEBHOOK_TOKEN not in dashboard_log


def test_the_shipped_alertmanager_config_routes_every_severity() -> None:
    document = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    receivers = {r["name"]: r for r in document["receivers"]}
    routes = document["route"]["routes"]
    severities = {m.split("=")[1].strip('"') for r in routes for m in r["matchers"]}
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    used = {rule["labels"]["severity"] for g in rules["groups"] for rule in g["rules"]}
    assert used <= severities, f"severities without a route: {used - severities}"
    for route in [document["route"], *routes]:
        assert route["receiver"] in receivers
    for receiver in receivers.values():
        for hook in receiver["webhook_configs"]:
            assert hook["url"] == SHIPPED_RECEIVER
            assert hook["http_config"]["authorization"]["credentials_file"] == \
                SHIPPED_CREDENTIALS
    amtool = binary("amtool", "prometheus-alertmanager")
    done = subprocess.run([amtool, "check-config", str(ALERTMANAGER_CONFIG)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
