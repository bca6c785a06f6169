"""``quantumctl restart SERVICE`` and ``scripts/rolling-restart.sh`` without systemd: a
detached local supervisor with one real service on an embedded Redis, restarted by request
(a new pid in its heartbeat), then rolled by the script through the same command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from quantum import localredis
from quantum.observability.heartbeat import heartbeat_key

ROOT = Path(__file__).resolve().parents[3]
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
def fleet(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    if localredis.server_binary() is None:
        pytest.fail("these tests need a redis-server binary")
    url = f"redis://127.0.0.1:{localredis.free_port()}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update({"QT_STATE_DIR": str(tmp_path / "var"), "QT_REDIS_URL": url,
                "QT_METRICS_PORT": "0"})
    started = ctl(env, "up", SERVICE, "--detach")
    assert started.returncode == 0, started.stderr
    try:
        yield env, url
    finally:
        ctl(env, "down")


def ctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "quantum.ctl", *args], env=env, timeout=120,
                          capture_output=True, text=True, check=False)


def heartbeat_pid(url: str) -> int | None:
    raw = redis.Redis.from_url(url).get(heartbeat_key(SERVICE))
    return None if raw is None else int(json.loads(raw)["pid"])


def test_restart_gives_the_service_a_new_process(fleet: tuple[dict[str, str], str]) -> None:
    env, url = fleet
    until(lambda: heartbeat_pid(url) is not None)
    before = heartbeat_pid(url)
    done = ctl(env, "restart", SERVICE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"restarted {SERVICE}: pid {before} -> ")
    until(lambda: heartbeat_pid(url) not in (None, before))

    unknown = ctl(env, "restart", "journal")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == ("quantumctl: error: 'journal' is not supervised here; "
                                      f"supervised: {SERVICE}")


def test_restart_without_a_supervisor_says_so_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env["QT_STATE_DIR"] = str(tmp_path / "empty")
    done = ctl(env, "restart", SERVICE)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "no local supervisor is running" in done.stderr


def test_rolling_restart_uses_the_local_supervisor(fleet: tuple[dict[str, str], str]) -> None:
    env, url = fleet
    until(lambda: heartbeat_pid(url) is not None)
    before = heartbeat_pid(url)
    env = {**env, "PYTHON": str(ROOT / ".venv" / "bin" / "python"), "ROLLING_MODE": "local",
           "ROLLING_TIMEOUT": "60"}
    done = subprocess.run([str(ROOT / "scripts" / "rolling-restart.sh"), SERVICE], env=env,
                          capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    assert f"rolling-restart: {SERVICE} under the local supervisor" in done.stdout, done.stderr
    assert f"restarted {SERVICE}: pid {before} -> " in done.stdout
    assert heartbeat_pid(url) != before
    # It ends with `quantumctl verify`, which (rightly) finds the groups of the services this
    # one-service fleet does not run: the restart itself went through.
    assert done.returncode == 1 and "differences between the live system" in done.stderr
