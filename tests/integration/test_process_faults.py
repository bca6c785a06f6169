"""Process-level faults: a killed `quantumctl replay` leaves nothing behind; bad settings and
a taken metrics port are one line on stderr and exit 78."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUANTUMCTL = Path(sys.executable).with_name("quantumctl")


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_of_quantumctl_replay_leaves_no_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(QUANTUMCTL), "replay", "--data", str(ROOT / "data" / "sample"),
         "--symbols", "BTCUSDT,ETHUSDT", "--start", "2025-09-01T00:00:00Z",
         "--end", "2025-09-20T00:00:00Z", "--report", str(tmp_path / "r.json")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    descendants: set[int] = set()
    while time.monotonic() < deadline and len(descendants) < 8:  # redis + the services
        descendants |= _children(proc.pid)
        time.sleep(0.2)
    assert len(descendants) >= 8, "the replay did not start its fleet"
    time.sleep(1.0)
    descendants |= _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in descendants):
        time.sleep(0.2)
    left = sorted(p for p in descendants if _alive(p))
    for pid in left:  # do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived their parent: {left}"


def test_bad_setting_is_one_line_on_stderr_and_exit_78() -> None:
    env = {**os.environ, "QT_BATCH_SIZE": "abc"}
    result = subprocess.run([sys.executable, "-m", "services.apply_layer"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "QT_BATCH_SIZE" in lines[0]


def test_metrics_port_in_use_is_one_line_naming_the_port(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "QT_REDIS_URL": redis_url, "QT_METRICS_PORT": str(port)}
        result = subprocess.run([sys.executable, "-m", "services.apply_layer"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(port) in lines[0] and "QT_METRICS_PORT" in lines[0]
