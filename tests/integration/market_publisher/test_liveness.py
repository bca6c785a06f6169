"""The market-publisher is alive in every state, as systemd's watchdog sees it, and stops on
SIGTERM in every state.

The process runs as its unit runs it, with ``NOTIFY_SOCKET`` pointing at a datagram socket
this test reads. States: live with no route to the venue (connection refused: back-off),
live with a venue that accepts the connection and never answers (a hung connect), and a
replay waiting on its barrier (no consumer has drained the step). In each it must keep
pinging the watchdog (the gaps stay under the unit's ``WatchdogSec``) and exit 0 on SIGTERM
within its ``TimeoutStopSec`` (systemd's contract, not a speed figure).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from quantum.observability.systemd import NotifySocket
from quantum.registry.generate.common import STOP_TIMEOUT_SECONDS, WATCHDOG_SECONDS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
PATIENCE_SECONDS = 60.0
OBSERVE_SECONDS = 6.0  # how long each state is watched after READY


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(str(tmp_path / "notify"))
    yield listener
    listener.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: connection refused


def _run(env_extra: dict[str, str], redis_url: str, notify: NotifySocket,
         log: Path) -> tuple[subprocess.Popen[bytes], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update({"NOTIFY_SOCKET": notify.path, "QT_REDIS_URL": redis_url,
                "QT_METRICS_PORT": "0", "QT_SYMBOLS": "BTCUSDT,ETHUSDT", **env_extra})
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.market_publisher"], cwd=ROOT,
                                env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not notify.seen(proc.pid, "READY=1"):
        notify.drain(timeout=0.2)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no READY=1 (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    return proc, notify.seen(proc.pid, "READY=1")[0]


def _alive_then_stopped(proc: subprocess.Popen[bytes], ready: float, notify: NotifySocket,
                        log: Path, expect_event: str) -> None:
    try:
        until = time.monotonic() + OBSERVE_SECONDS
        while time.monotonic() < until:
            notify.drain(timeout=0.2)
            assert proc.poll() is None, log.read_text()[-3000:]
        notify.drain()
        pings = [ready, *[t for t in notify.seen(proc.pid, "WATCHDOG=1") if t > ready]]
        pings.append(time.monotonic())
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert len(pings) > 3 and max(gaps) < WATCHDOG_SECONDS, (gaps, log.read_text()[-2000:])
        events = [json.loads(line).get("event") for line in log.read_text().splitlines()]
        assert expect_event in events, events
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"SIGTERM ignored for {STOP_TIMEOUT_SECONDS} s:\n{log.read_text()[-2000:]}")
        assert proc.returncode == 0, log.read_text()[-3000:]
        for line in log.read_text().splitlines():
            json.loads(line)  # every line JSON
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_live_with_no_route_keeps_pinging_while_it_retries(
    r: redis.Redis, redis_url: str, notify: NotifySocket, tmp_path: Path
) -> None:
    port = _closed_port()
    log = tmp_path / "publisher.log"
    proc, ready = _run({"QT_SOURCE": "binance", "QT_BINANCE_WS_URL": f"ws://127.0.0.1:{port}/",
                        "QT_BINANCE_REST_URL": f"http://127.0.0.1:{port}"},
                       redis_url, notify, log)
    _alive_then_stopped(proc, ready, notify, log, "connect_failed")


def test_live_with_a_venue_that_never_answers_stops_on_sigterm(
    r: redis.Redis, redis_url: str, notify: NotifySocket, tmp_path: Path
) -> None:
    with socket.socket() as silent:  # accepts TCP, never says a word: a hung handshake
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        log = tmp_path / "publisher.log"
        proc, ready = _run({"QT_SOURCE": "binance",
                            "QT_BINANCE_WS_URL": f"ws://127.0.0.1:{port}/",
                            "QT_BINANCE_REST_URL": f"http://127.0.0.1:{port}"},
                           redis_url, notify, log)
        _alive_then_stopped(proc, ready, notify, log, "connecting")


def test_replay_waiting_on_its_barrier_keeps_pinging_and_stops_on_sigterm(
    r: redis.Redis, redis_url: str, notify: NotifySocket, tmp_path: Path
) -> None:
    log = tmp_path / "publisher.log"
    proc, ready = _run({"QT_SOURCE": "replay", "QT_DATA_DIR": str(ROOT / "data" / "sample"),
                        "QT_CLOCK": "event"}, redis_url, notify, log)
    _alive_then_stopped(proc, ready, notify, log, "replay starting")
