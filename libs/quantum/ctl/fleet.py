"""``quantumctl up`` and ``down``: run the fleet locally under the supervisor.

``up`` in the foreground and the detached supervisor run the same :func:`serve`; ``--detach``
starts it as ``python -m quantum.ctl up`` in a session of its own, its output
in ``log/supervisor.log``, and returns once it has written its pid and first state. A fresh
interpreter is simpler and safer than ``fork()`` in a process that may already hold threads
and sockets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from quantum.bus import connection
from quantum.ctl.errors import CtlError, redact_url
from quantum.ctl.runstate import (
    STATE_DIR_VARIABLE,
    RunPaths,
    pid_alive,
    process_command,
    read_state,
    running_supervisor,
    write_json_atomically,
)
from quantum.process.supervisor import PROJECT_ROOT, Supervisor

STATE_INTERVAL_SECONDS = 1.0
DETACH_PATIENCE_SECONDS = 60.0


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _refuse_if_running(paths: RunPaths) -> None:
    pid = running_supervisor(paths)
    if pid is not None and pid != os.getpid():
        raise CtlError(f"a supervisor is already running (pid {pid}); run `quantumctl down` first")


def serve(
    services: Sequence[str],
    redis_url: str,
    paths: RunPaths,
    echo: Callable[[str], None],
) -> int:
    """Run ``services`` until SIGTERM/SIGINT; 1 when a service was given up on, else 0."""
    from quantum import localredis

    _refuse_if_running(paths)
    try:
        redis_process = localredis.ensure(redis_url, paths.redis_dir)
    except RuntimeError as e:
        raise CtlError(str(e)) from None
    if redis_process is not None:
        echo(f"started a local Redis at {redact_url(redis_url)} (pid {redis_process.pid}, "
             f"data in {paths.redis_dir})")
    _initialise(redis_url, paths, echo)
    os.environ.pop(STATE_DIR_VARIABLE, None)  # a quantumctl setting; services refuse it
    try:
        supervisor = Supervisor(services, env={"QT_REDIS_URL": redis_url}, workdir=PROJECT_ROOT,
                                log_dir=paths.log_dir, request_dir=paths.requests_dir,
                                rotate_also=(paths.supervisor_log,))
    except ValueError as e:
        _stop_redis(redis_process)
        raise CtlError(str(e)) from None
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    paths.pid_file.write_text(f"{os.getpid()}\n")
    started_at = _now_iso()
    redis_pid = redis_process.pid if redis_process is not None else None

    def snapshot(running: bool) -> None:
        write_json_atomically(paths.state_file, {
            "pid": os.getpid(), "running": running, "started_at": started_at,
            "updated_at": _now_iso(), "redis_url": redact_url(redis_url), "redis_pid": redis_pid,
            "log_dir": str(paths.log_dir),
            "services": [asdict(status) for status in supervisor.status()],
        })

    finished = threading.Event()

    def keep_state() -> None:
        while not finished.wait(STATE_INTERVAL_SECONDS):
            snapshot(True)

    writer = threading.Thread(target=keep_state, name="state-writer", daemon=True)
    try:
        supervisor.start()
        snapshot(True)
        writer.start()
        echo(f"supervising {', '.join(services)}; logs in {paths.log_dir}")
        supervisor.wait()
    finally:
        supervisor.stop()
        finished.set()
        if writer.is_alive():
            writer.join()
        snapshot(False)
        _stop_redis(redis_process)
        paths.pid_file.unlink(missing_ok=True)
    gave_up = [status.name for status in supervisor.status() if status.gave_up]
    if gave_up:
        echo(f"gave up on: {', '.join(gave_up)} (see {paths.log_dir})")
        return 1
    return 0


def _initialise(redis_url: str, paths: RunPaths, echo: Callable[[str], None]) -> None:
    """Give a new Redis its fleet epoch; never re-initialise one that lost its state (the
    state directory remembers the epoch that ran here): its services trip the ESS instead."""
    import getpass
    import socket

    import redis

    from quantum.risk import fleetstate

    client = connection.connect(redis_url, socket_connect_timeout=3)
    try:
        epoch, outcome = fleetstate.initialise_local(
            client, paths.root / "fleet-epoch", f"{getpass.getuser()}@{socket.gethostname()}"
        )
    except redis.RedisError as e:
        raise CtlError(f"cannot initialise the fleet at {redact_url(redis_url)}: {e}") from None
    finally:
        client.close()
    if epoch is None:
        echo(f"WARNING: {outcome}; the services will trip the emergency stop (state_lost). "
             "See docs/RUNBOOK.md, 'State lost'.")
    else:
        echo(f"{outcome} (epoch {epoch.epoch})")


def _stop_redis(process: subprocess.Popen[bytes] | None) -> None:
    """Stop the Redis this run started (SIGTERM: it flushes its append-only file first)."""
    if process is None:
        return
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def detach(services: Sequence[str], redis_url: str, paths: RunPaths) -> int:
    """Start :func:`serve` as a background process; return its pid once it is running."""
    _refuse_if_running(paths)
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    paths.state_file.unlink(missing_ok=True)
    # The URL travels in the environment, not argv, so a password never shows in `ps`.
    env = {**os.environ, "QT_REDIS_URL": redis_url, STATE_DIR_VARIABLE: str(paths.root)}
    with paths.supervisor_log.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "quantum.ctl", "up", *services],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=PROJECT_ROOT, env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + DETACH_PATIENCE_SECONDS
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise CtlError(f"the supervisor exited with {code} while starting; "
                           f"see {paths.supervisor_log}")
        state = read_state(paths)
        if state is not None and state.get("pid") == process.pid:
            process.returncode = 0  # it lives on on its own: nothing to reap from here
            return process.pid
        time.sleep(0.1)
    raise CtlError(f"the supervisor (pid {process.pid}) did not report within "
                   f"{DETACH_PATIENCE_SECONDS:.0f} s; see {paths.supervisor_log}")


def down(paths: RunPaths, timeout: float = 30.0) -> list[str]:
    """Stop the running supervisor (and a Redis it started); returns what was done."""
    done: list[str] = []
    state = read_state(paths) or {}
    pid = running_supervisor(paths)
    if pid is not None and "quantum" not in process_command(pid):
        pid = None  # the pid file outlived its process and the pid was reused
    if pid is None:
        done.append("no supervisor is running")
    else:
        os.kill(pid, signal.SIGTERM)
        if _wait_gone(pid, timeout):
            done.append(f"stopped the supervisor (pid {pid})")
        else:
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
            done.append(f"killed the supervisor (pid {pid}) after {timeout:.0f} s")
            done.extend(_stop_leftovers(state))
        paths.pid_file.unlink(missing_ok=True)
    redis_pid = state.get("redis_pid")
    if isinstance(redis_pid, int) and pid_alive(redis_pid) and (
        "redis-server" in process_command(redis_pid)
    ):
        os.kill(redis_pid, signal.SIGTERM)
        _wait_gone(redis_pid, timeout)
        done.append(f"stopped the local Redis it had started (pid {redis_pid})")
    return done


def _stop_leftovers(state: dict[str, Any]) -> list[str]:
    """After a supervisor had to be killed, stop the children it could not stop itself."""
    stopped = []
    for service in state.get("services", []):
        pid = service.get("pid")
        if isinstance(pid, int) and pid_alive(pid) and "python" in process_command(pid):
            os.killpg(pid, signal.SIGTERM)
            stopped.append(f"stopped {service.get('name')} (pid {pid})")
    return stopped


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True

