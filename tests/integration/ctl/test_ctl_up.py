"""``quantumctl up`` / ``down`` end to end: the embedded Redis, one real service, the state
file and a clean stop. Runs quantumctl as a subprocess, as an operator would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from quantum import localredis
from quantum.ctl.runstate import pid_alive
from quantum.observability.heartbeat import heartbeat_key

PATIENCE_SECONDS = 60.0  # a hang guard, not a speed assertion
SERVICE = "exit-brain"

pytestmark = pytest.mark.slow


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        time.sleep(0.05)


@pytest.fixture
def fleet_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """An environment for quantumctl whose Redis URL has no server yet (up starts one)."""
    if localredis.server_binary() is None:
        pytest.fail("these tests need a redis-server binary")
    url = f"redis://127.0.0.1:{localredis.free_port()}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update({"QT_STATE_DIR": str(tmp_path / "var"), "QT_REDIS_URL": url,
                "QT_METRICS_PORT": "0"})
    yield env, url
    subprocess.run([sys.executable, "-m", "quantum.ctl", "down"], env=env, timeout=120,
                   capture_output=True, check=False)


def ctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "quantum.ctl", *args], env=env, timeout=120,
                          capture_output=True, text=True, check=False)


def heartbeat_pid(url: str) -> int | None:
    try:
        raw = redis.Redis.from_url(url).get(heartbeat_key(SERVICE))
    except redis.ConnectionError:
        return None
    return None if raw is None else int(json.loads(raw)["pid"])


def test_up_detach_status_down(fleet_env: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, url = fleet_env
    assert not localredis.reachable(url)

    started = ctl(env, "up", SERVICE, "--detach")

    assert started.returncode == 0, started.stderr
    assert "supervisor running in the background" in started.stdout
    assert localredis.reachable(url)
    until(lambda: heartbeat_pid(url) is not None)
    service_pid = heartbeat_pid(url)
    assert service_pid is not None

    status = ctl(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    row = next(r for r in json.loads(status.stdout)["services"] if r["name"] == SERVICE)
    assert row["state"] == "up"
    assert row["supervised"] is True
    assert row["restarts"] == 0
    assert row["pid"] == service_pid
    assert (tmp_path / "var" / "log" / f"{SERVICE}.log").exists()

    again = ctl(env, "up", SERVICE, "--detach")
    assert again.returncode == 1
    assert "already running" in again.stderr

    stopped = ctl(env, "down")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped the supervisor" in stopped.stdout
    assert not (tmp_path / "var" / "run" / "supervisor.pid").exists()
    assert not localredis.reachable(url)
    assert not pid_alive(service_pid)
    state = json.loads((tmp_path / "var" / "run" / "supervisor.json").read_text())
    assert state["running"] is False

    assert "no supervisor is running" in ctl(env, "down").stdout


def test_foreground_up_stops_on_ctrl_c(fleet_env: tuple[dict[str, str], str]) -> None:
    env, url = fleet_env
    process = subprocess.Popen([sys.executable, "-m", "quantum.ctl", "up", SERVICE], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: heartbeat_pid(url) is not None)
        service_pid = heartbeat_pid(url)
        assert service_pid is not None
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "started a local Redis" in out
    assert not localredis.reachable(url)
    assert not pid_alive(service_pid)
