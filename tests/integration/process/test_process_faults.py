"""Bad settings and a taken metrics port: one line on stderr, exit 78 (never a traceback)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
QUANTUMCTL = Path(sys.executable).with_name("quantumctl")


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
