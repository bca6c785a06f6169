"""Process trees end with their parent: the supervisor's children (first starts and restarts)
die when the supervisor is ``kill -9``-ed, but not when some thread of it ends, and a killed
``quantumctl up`` leaves neither its services nor the Redis it started.

``kill -9`` of ``quantumctl replay`` is in ``test_process_faults.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from quantum import localredis
from quantum.observability.heartbeat import heartbeat_key
from quantum.process.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[3]
QUANTUMCTL = Path(sys.executable).with_name("quantumctl")
PATIENCE_SECONDS = 60.0  # a hang guard, not a speed assertion
GRACE_SECONDS = 1.0  # how long a wrongly sent signal is given to arrive

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG is Linux's")


def until(condition: Callable[[], bool], patience: float = PATIENCE_SECONDS) -> None:
    deadline = time.monotonic() + patience
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent that is gone."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def kill_leftovers(pids: set[int]) -> list[int]:
    """SIGKILL whatever is still alive (so a failure does not leak into other tests)."""
    left = sorted(p for p in pids if alive(p))
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def test_children_outlive_the_thread_that_started_the_supervisor(tmp_path: Path) -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* ends. The supervisor forks from its
    # own monitor thread, so the thread that called start() may end without harm.
    marker = tmp_path / "terminated"
    child = (
        "import pathlib, signal, sys, time\n"
        f"def term(*_): pathlib.Path({str(marker)!r}).write_text('x'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "time.sleep(600)\n"
    )
    supervisor = Supervisor(["sleeper"], env={}, workdir=tmp_path / "work",
                            log_dir=tmp_path / "logs", commands={"sleeper": ["-c", child]})
    starter = threading.Thread(target=supervisor.start)
    starter.start()
    starter.join()
    try:
        (status,) = supervisor.status()
        assert status.alive and status.pid is not None
        time.sleep(GRACE_SECONDS)
        assert not marker.exists(), "the child was signalled when the starting thread ended"
        assert alive(status.pid)
    finally:
        supervisor.stop(timeout=5)
    assert marker.exists()  # stop() itself does send SIGTERM


SUPERVISOR_SCRIPT = """
import sys, time
from pathlib import Path
from quantum.process.supervisor import Supervisor

work = Path(sys.argv[1])
crash_once = (
    "import pathlib, sys, time\\n"
    f"p = pathlib.Path({str(work / 'ran')!r})\\n"
    "first = not p.exists(); p.write_text('x')\\n"
    "sys.exit(3) if first else time.sleep(600)\\n"
)
supervisor = Supervisor(
    ["steady", "restarted"], env={}, workdir=work, log_dir=work / "logs",
    commands={"steady": ["-c", "import time; time.sleep(600)"], "restarted": ["-c", crash_once]},
    backoff_initial=0.05,
)
supervisor.start()
while True:
    statuses = {s.name: s for s in supervisor.status()}
    if statuses["restarted"].restarts == 1 and statuses["restarted"].alive:
        break
    time.sleep(0.02)
print("PIDS", *(s.pid for s in statuses.values()), flush=True)
time.sleep(600)
"""


def test_kill_9_of_the_supervisor_ends_first_starts_and_restarts(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", SUPERVISOR_SCRIPT, str(tmp_path)],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    children: set[int] = set()
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the supervisor's log lines, then the pids
        while line and not line.startswith("PIDS "):
            line = process.stdout.readline()
        children = {int(pid) for pid in line.split()[1:]}  # both running, one restarted
        assert len(children) == 2 and all(alive(pid) for pid in children)
        process.kill()
        process.wait(10)
        until(lambda: not any(alive(pid) for pid in children), patience=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        left = kill_leftovers(children)
    assert not left


def test_kill_9_of_quantumctl_up_leaves_no_service_and_no_redis(tmp_path: Path) -> None:
    if localredis.server_binary() is None:
        pytest.fail("this test needs a redis-server binary")
    url = f"redis://127.0.0.1:{localredis.free_port()}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update({"QT_STATE_DIR": str(tmp_path / "var"), "QT_REDIS_URL": url,
                "QT_METRICS_PORT": "0"})
    process = subprocess.Popen([sys.executable, "-m", "quantum.ctl", "up", "exit-brain"],
                               env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    tree: set[int] = set()
    try:
        def service_up() -> bool:
            try:
                return bool(redis.Redis.from_url(url).exists(heartbeat_key("exit-brain")))
            except redis.ConnectionError:
                return False

        until(service_up)
        tree = descendants(process.pid)
        commands = {pid: (Path("/proc") / str(pid) / "cmdline").read_bytes() for pid in tree}
        assert any(b"redis-server" in c for c in commands.values()), commands
        assert any(b"services.exit_brain" in c for c in commands.values()), commands
        process.kill()
        process.wait(10)
        until(lambda: not any(alive(pid) for pid in tree), patience=30)
        assert not localredis.reachable(url)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        left = kill_leftovers(tree)
    assert not left
    state = json.loads((tmp_path / "var" / "run" / "supervisor.json").read_text())
    assert state["running"] is True  # it was killed, not stopped: nothing ran its cleanup


def test_kill_9_of_quantumctl_replay_leaves_no_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(QUANTUMCTL), "replay", "--data", str(ROOT / "data" / "sample"),
         "--symbols", "BTCUSDT,ETHUSDT", "--start", "2025-09-01T00:00:00Z",
         "--end", "2025-09-20T00:00:00Z", "--report", str(tmp_path / "r.json")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    tree: set[int] = set()
    while time.monotonic() < deadline and len(tree) < 8:  # redis + the services
        tree |= descendants(proc.pid)
        time.sleep(0.2)
    assert len(tree) >= 8, "the replay did not start its fleet"
    time.sleep(1.0)
    tree |= descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        time.sleep(0.2)
    left = sorted(p for p in tree if alive(p))
    kill_leftovers(set(left))
    assert not left, f"processes outlived their parent: {left}"
