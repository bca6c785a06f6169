"""Every registered service starts on the base install set, and is alive as systemd sees it.

A fresh venv gets the project and only its base dependencies, offline from a cached
wheelhouse (:mod:`quantum.registry.installset`; made once per requirement list). Each
service's module then runs from it, as its unit runs it (``python -m <module>``, outside
the repository), with ``NOTIFY_SOCKET`` pointing at a datagram socket this test reads as
systemd would: each must send ``READY=1`` and keep sending ``WATCHDOG=1`` with no data
flowing, stop on SIGTERM within its unit's ``TimeoutStopSec`` (after which systemd would
SIGKILL it: a contract, not a speed figure), and print nothing but JSON lines.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from quantum.observability.systemd import NotifySocket
from quantum.registry import installset
from quantum.registry.fleet import SERVICES
from quantum.registry.generate.units import STOP_TIMEOUT_SECONDS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
PATIENCE_SECONDS = 180.0  # hang guard for fourteen interpreters starting on two cores
WATCHDOG_PINGS = 3  # pings after READY that show a loop turning with no data


@pytest.fixture(scope="module")
def base_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return installset.base_venv(tmp_path_factory.mktemp("base-install"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environment(redis_url: str, work: Path, notify: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.pop("PYTHONPATH", None)
    for name in ("models", "rl", "state"):
        (work / name).mkdir(exist_ok=True)
    env.update({
        "NOTIFY_SOCKET": notify,
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",
        "QT_REDIS_URL": redis_url,
        "QT_METRICS_PORT": "0",
        "QT_HTTP_PORT": str(_free_port()),
        "QT_DATA_DIR": str(ROOT / "data" / "sample"),
        "QT_TRAINING_DATA_DIR": str(ROOT / "data" / "sample"),
        "QT_MODELS_DIR": str(work / "models"),
        "QT_RL_POLICY_DIR": str(work / "rl"),
        "STATE_DIRECTORY": str(work / "state"),
    })
    return env


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(str(tmp_path / "notify"))
    yield listener
    listener.close()


def _wait_alive(procs: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path],
                notify: NotifySocket) -> None:
    """Until every process sent READY=1 and then WATCHDOG_PINGS pings; fails on an exit."""

    def alive_enough(name: str) -> bool:
        pid = procs[name].pid
        ready = notify.seen(pid, "READY=1")
        return bool(ready) and len(
            [t for t in notify.seen(pid, "WATCHDOG=1") if t > ready[0]]) >= WATCHDOG_PINGS

    deadline = time.monotonic() + PATIENCE_SECONDS
    waiting = set(procs)
    while waiting and time.monotonic() < deadline:
        notify.drain(timeout=0.5)
        for name in sorted(waiting):
            if alive_enough(name):
                waiting.discard(name)
            elif procs[name].poll() is not None:
                pytest.fail(f"{name} exited {procs[name].returncode} on the base install:\n"
                            + logs[name].read_text()[-3000:])
    assert not waiting, f"no READY and watchdog pings from {sorted(waiting)}"


def _stop_all(procs: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path],
              notify: NotifySocket) -> None:
    for proc in procs.values():
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for name, proc in procs.items():
        try:
            while proc.poll() is None:  # reading on, as systemd does while a unit stops
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(name, STOP_TIMEOUT_SECONDS)
                notify.drain(timeout=0.1)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack
            proc.wait(10)
            pytest.fail(f"{name} ignored SIGTERM for {STOP_TIMEOUT_SECONDS} s "
                        "(systemd would SIGKILL it and leave the unit failed):\n"
                        + logs[name].read_text()[-6000:])
        # 0, or killed by the SIGTERM itself after a clean shutdown (uvicorn re-raises it):
        # both are a clean stop to systemd (SuccessExitStatus includes SIGTERM).
        assert proc.returncode in (0, -signal.SIGTERM), (name, proc.returncode,
                                                         logs[name].read_text()[-3000:])


def _assert_json_only(logs: dict[str, Path]) -> None:
    for name, path in logs.items():
        for line in path.read_text().splitlines():
            try:
                json.loads(line)
            except ValueError:
                pytest.fail(f"{name} printed a line that is not JSON: {line!r}")


def test_every_service_starts_on_the_base_install_and_stays_alive(
    base_python: Path, r: redis.Redis, redis_url: str, notify: NotifySocket, tmp_path: Path,
) -> None:
    env = _environment(redis_url, tmp_path, notify.path)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    try:
        for spec in SERVICES:
            logs[spec.name] = tmp_path / f"{spec.name}.log"
            with logs[spec.name].open("wb") as out:
                procs[spec.name] = subprocess.Popen(
                    [str(base_python), "-m", spec.module], cwd=tmp_path, env=env,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        _wait_alive(procs, logs, notify)
        _stop_all(procs, logs, notify)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    _assert_json_only(logs)
