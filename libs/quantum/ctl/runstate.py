"""Where a local fleet run keeps its files, and the supervisor's state file.

Layout under the state directory (``$QT_STATE_DIR``, else ``var/`` in the project)::

    redis/             the embedded Redis's data and log
    run/supervisor.pid the pid of the running ``quantumctl up`` (foreground or detached)
    run/supervisor.json its state: services with pid, restarts, last exit; the Redis it started
    run/requests/      <service>.restart: ask it to restart one service (quantumctl restart)
    log/<service>.log  each child's output; log/supervisor.log the detached supervisor's own

The state file is rewritten atomically (write then rename) every second by the running
supervisor, so ``quantumctl status`` in another shell can show restarts without talking to
it. ``QT_STATE_DIR`` is a setting of ``quantumctl`` only: services refuse unknown ``QT_*``
variables, so it is removed from the children's environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantum.process.supervisor import PROJECT_ROOT

STATE_DIR_VARIABLE = "QT_STATE_DIR"


@dataclass(frozen=True)
class RunPaths:
    """The files of one state directory."""

    root: Path

    @classmethod
    def from_environment(cls) -> RunPaths:
        configured = os.environ.get(STATE_DIR_VARIABLE)
        return cls(Path(configured) if configured else PROJECT_ROOT / "var")

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "supervisor.pid"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "supervisor.json"

    @property
    def requests_dir(self) -> Path:
        """``<service>.restart`` files here ask the running supervisor to restart a service."""
        return self.run_dir / "requests"

    @property
    def supervisor_log(self) -> Path:
        return self.log_dir / "supervisor.log"


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def process_command(pid: int) -> str:
    """The command line of ``pid`` (empty when unknown): guards against a reused pid."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace"
        )
    except OSError:
        return ""


def running_supervisor(paths: RunPaths) -> int | None:
    """The pid of a live supervisor recorded in the pid file, else None."""
    try:
        pid = int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".tmp")
    partial.write_text(json.dumps(document, indent=2, sort_keys=True))
    partial.replace(path)


def read_state(paths: RunPaths) -> dict[str, Any] | None:
    """The supervisor's last written state, or None when there is none (or it is unreadable)."""
    try:
        document = json.loads(paths.state_file.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None
