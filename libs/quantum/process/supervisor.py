"""A small process supervisor: the local stand-in for systemd's restart policy.

``quantumctl up`` and the replay orchestrator run the fleet as child processes of this
supervisor. Its policy copies what the systemd units declare, so a service behaves the same
under both:

* a child that exits 0 finished its job and is not restarted;
* exit code 78 (``EX_CONFIG``, see :class:`quantum.config.ConfigError`) means its settings are
  wrong, which no restart fixes, so it is reported and left down;
* any other exit is restarted after an exponential back-off (``backoff_initial`` doubled per
  recent restart, capped at ``backoff_max``); after ``max_restarts`` restarts within
  ``start_limit_interval`` seconds (600 s, as the units' ``StartLimitIntervalSec``, and never
  less than twice the back-offs of a whole burst, so a loop slowed by its own back-off still
  reaches the limit) the supervisor gives up on it and says so. The earlier
  system restarted one service 16,699 times: a crash loop must end, loudly.

Children die with the supervisor, even a ``kill -9``-ed one: each is started with
``PR_SET_PDEATHSIG`` (:mod:`quantum.process.lifetime`). The kernel sends that signal when the
*thread* that forked the child ends, not the process, so one thread forks every child: the
monitor thread, which starts the first generation, performs every restart and, on
:meth:`Supervisor.stop`, terminates the children before it returns. It never ends while a
child of its own is alive (unless the process dies, which is the point), so no thread's exit
takes a service down; which thread calls :meth:`~Supervisor.start` does not matter.

An operator restarts one service with :meth:`Supervisor.restart`, or from another process by
dropping ``<service>.restart`` into ``request_dir`` (``quantumctl restart SERVICE``): the
monitor stops that child (SIGTERM, SIGKILL after the stop timeout) and starts it anew at
once; this is no failure, so it neither waits a back-off nor counts toward the start limit,
and it revives a service the supervisor had given up on.

Each child's output goes to ``log_dir/<service>.log``, rotated by size: past
``log_max_bytes`` the file is copied to ``<service>.log.1`` (older copies shift up to
``log_backups``, the oldest is dropped) and truncated in place. The child keeps its
descriptor, opened in append mode, so it writes on at the start of the emptied file; only
what it writes between the copy and the truncation (microseconds) can be missed. Files in
``rotate_also`` (the detached supervisor's own log) are rotated the same way.

Which module a service runs comes from ``deploy/launcher.json`` (generated from the fleet
registry) when present, else from :data:`quantum.registry.fleet.SERVICES` directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import structlog

from quantum.process.lifetime import die_with_parent

EX_CONFIG = 78
LOG_MAX_BYTES = 10 * 1024 * 1024  # a child's log is rotated past this size
LOG_BACKUPS = 5  # rotated copies kept: <service>.log.1 (newest) … .5
RESTART_SUFFIX = ".restart"
_HOUSEKEEPING_SECONDS = 0.5
PROJECT_ROOT = Path(__file__).resolve().parents[3]
LAUNCHER_FILE = Path("deploy") / "launcher.json"
_POLL_SECONDS = 0.05

log = structlog.get_logger("supervisor")


@dataclass(frozen=True)
class ProcessStatus:
    """One supervised service as seen now.

    ``gave_up`` is true when the supervisor will not start it again on its own: the restart
    limit was reached, or it exited with 78 (bad settings).
    """

    name: str
    pid: int | None
    alive: bool
    restarts: int
    last_exit: int | None
    gave_up: bool


def launcher_table(root: Path | None = None) -> dict[str, str]:
    """Service name → module, from ``deploy/launcher.json`` under ``root`` or the registry.

    The generated launcher file wins so a deployment can pin what it runs; the registry is the
    fallback because it is what the file is generated from.
    """
    for base in (root, PROJECT_ROOT):
        if base is None:
            continue
        path = base / LAUNCHER_FILE
        if path.is_file():
            document = json.loads(path.read_text())
            return {entry["name"]: entry["module"] for entry in document["services"]}
    from quantum.registry.fleet import SERVICES

    return {spec.name: spec.module for spec in SERVICES}


@dataclass
class _Child:
    """Mutable bookkeeping for one service; only touched under the supervisor's lock."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    restarts: int = 0
    last_exit: int | None = None
    gave_up: bool = False
    restart_at: float | None = None  # monotonic time of a scheduled restart
    restart_requested: bool = False  # an operator asked for a restart now
    recent_restarts: deque[float] = field(default_factory=deque)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Starts, watches, restarts and stops a set of fleet services as child processes.

    ``commands`` maps a service name to the interpreter arguments that run it (for example
    ``["-c", "import sys; sys.exit(3)"]``); it defaults to ``["-m", module]`` from the
    launcher table. Tests use it to supervise tiny children instead of real services.
    """

    def __init__(
        self,
        services: Sequence[str],
        *,
        env: Mapping[str, str],
        workdir: Path,
        log_dir: Path | None = None,
        max_restarts: int = 5,
        start_limit_interval: float = 600.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        python: str = sys.executable,
        commands: Mapping[str, Sequence[str]] | None = None,
        request_dir: Path | None = None,
        log_max_bytes: int = LOG_MAX_BYTES,
        log_backups: int = LOG_BACKUPS,
        rotate_also: Sequence[Path] = (),
    ) -> None:
        if log_max_bytes < 1 or log_backups < 1:
            raise ValueError("log_max_bytes and log_backups must be at least 1")
        if max_restarts < 0 or start_limit_interval <= 0:
            raise ValueError("max_restarts must be >= 0 and start_limit_interval > 0")
        if backoff_initial < 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 <= backoff_initial <= backoff_max")
        if commands is None:
            table = launcher_table(workdir)
            unknown = [name for name in services if name not in table]
            if unknown:
                raise ValueError(
                    f"unknown service {unknown[0]!r}; known: {', '.join(sorted(table))}"
                )
            commands = {name: ["-m", table[name]] for name in services}
        missing = [name for name in services if name not in commands]
        if missing:
            raise ValueError(f"no command for service {missing[0]!r}")
        if len(set(services)) != len(services):
            raise ValueError("a service is listed twice")
        self.env = {**os.environ, **env}
        self.workdir = workdir
        self.log_dir = log_dir
        self.request_dir = request_dir
        self.log_max_bytes = log_max_bytes
        self.log_backups = log_backups
        self.rotate_also = tuple(rotate_also)  # e.g. the detached supervisor's own log
        self._housekeeping_at = 0.0
        self.max_restarts = max_restarts
        # The window must hold the back-offs of a whole burst, or a loop slowed by its own
        # back-off would never reach the limit (the earlier system's 16,699 restarts).
        backoffs = sum(min(backoff_initial * 2**k, backoff_max) for k in range(max_restarts))
        self.start_limit_interval = max(start_limit_interval, 2 * backoffs)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.python = python
        self._children = {
            name: _Child(name, [python, *commands[name]]) for name in services
        }
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._signalled = threading.Event()
        self._monitor: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: OSError | None = None
        self._stop_timeout = 10.0
        self._terminated = False

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the monitor thread, which spawns every service; returns once they run.

        An ``OSError`` while spawning (no interpreter, no file descriptors) stops what was
        already started and is raised here.
        """
        if self._monitor is not None:
            raise RuntimeError("supervisor already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self._monitor = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._monitor.start()
        self._started.wait()
        if self._start_error is not None:
            self._monitor.join()
            self._close_logs()
            self._stopped.set()
            raise self._start_error

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every child, wait up to ``timeout`` seconds, SIGKILL the rest.

        The monitor thread does it (it forked the children, see the module docstring); when
        it is not running (never started, or finished: nothing left alive) the caller does.
        """
        self._stop_timeout = timeout
        self._stopping.set()
        monitor = self._monitor
        if monitor is not None and monitor is not threading.current_thread():
            monitor.join()
        if not self._terminated:
            self._terminate(timeout)
        self._close_logs()
        self._stopped.set()

    def status(self) -> list[ProcessStatus]:
        """A snapshot of every service, in the order they were named."""
        with self._lock:
            return [
                ProcessStatus(
                    name=child.name,
                    pid=child.process.pid if child.process is not None else None,
                    alive=child.alive,
                    restarts=child.restarts,
                    last_exit=child.last_exit,
                    gave_up=child.gave_up,
                )
                for child in self._children.values()
            ]

    def restart(self, name: str) -> None:
        """Ask the monitor to stop ``name`` and start it again now (see the module doc)."""
        with self._lock:
            if name not in self._children:
                raise ValueError(f"unknown service {name!r}; supervised: "
                                 f"{', '.join(self._children)}")
            self._children[name].restart_requested = True

    def wait(self) -> None:
        """Block until :meth:`stop`, SIGTERM/SIGINT (which stop the children) or nothing is
        left to supervise (every child finished or was given up on)."""
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            while not self._stopped.is_set() and not self._signalled.is_set():
                if self._monitor is not None and not self._monitor.is_alive():
                    break
                self._stopped.wait(0.2)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self._signalled.is_set() and not self._stopped.is_set():
            _say("info", "signal received; stopping services")
            self.stop()

    # --- internals ------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signalled.set()

    def _spawn(self, child: _Child) -> None:
        if child.log_file is None and self.log_dir is not None:
            child.log_file = (self.log_dir / f"{child.name}.log").open("ab")
        output = child.log_file if child.log_file is not None else None
        # A session of its own: a terminal's Ctrl-C reaches the supervisor only, which then
        # stops the children in order, and a signal reaches a child's own subprocesses too.
        # ... and it dies with the supervisor, even a SIGKILLed one (quantum.process.lifetime).
        child.process = subprocess.Popen(
            child.argv, cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
            stdout=output, stderr=output, start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        _say("info", "started", service=child.name, pid=child.process.pid)

    def _run(self) -> None:
        """The monitor thread: spawn, watch, restart, and terminate on stop."""
        try:
            with self._lock:
                for child in self._children.values():
                    self._spawn(child)
        except OSError as e:
            self._start_error = e
            self._started.set()
            self._terminate(self._stop_timeout)
            return
        self._started.set()
        self._watch()
        if self._stopping.is_set():
            self._terminate(self._stop_timeout)

    def _terminate(self, timeout: float) -> None:
        """SIGTERM every live child's session, wait up to ``timeout`` s, SIGKILL the rest."""
        with self._lock:
            children = list(self._children.values())
            for child in children:
                child.restart_at = None
                if child.alive:
                    _signal(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in children:
            process = child.process
            if process is None:
                continue
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _say("warning", "did not stop in time; killing", service=child.name,
                     pid=process.pid, timeout=timeout)
                _signal(child, signal.SIGKILL)
                process.wait()
        with self._lock:
            for child in children:
                self._reap(child)
        self._terminated = True

    def _close_logs(self) -> None:
        with self._lock:
            for child in self._children.values():
                if child.log_file is not None:
                    child.log_file.close()
                    child.log_file = None

    def _watch(self) -> None:
        """Notice exits, schedule and perform restarts, until stopped or nothing is left."""
        while not self._stopping.is_set():
            self._housekeeping()
            pending = False
            with self._lock:
                now = time.monotonic()
                for child in self._children.values():
                    if self._stopping.is_set():
                        break
                    self._check(child, now)
                    pending = (pending or child.alive or child.restart_at is not None
                               or child.restart_requested)
            if not pending:
                _say("info", "no service left to supervise")
                return
            self._stopping.wait(_POLL_SECONDS)

    def _housekeeping(self) -> None:
        """Twice a second: take restart requests, perform them, rotate logs."""
        now = time.monotonic()
        requested = any(c.restart_requested for c in self._children.values())
        if now < self._housekeeping_at and not requested:
            return
        self._housekeeping_at = now + _HOUSEKEEPING_SECONDS
        self._take_requests()
        for child in list(self._children.values()):
            if child.restart_requested and not self._stopping.is_set():
                self._restart_now(child)
        self._rotate_logs()

    def _take_requests(self) -> None:
        if self.request_dir is None or not self.request_dir.is_dir():
            return
        for path in self.request_dir.glob(f"*{RESTART_SUFFIX}"):
            name = path.name[: -len(RESTART_SUFFIX)]
            with contextlib.suppress(OSError):
                path.unlink()
            with self._lock:
                child = self._children.get(name)
                if child is None:
                    _say("warning", "restart requested for a service not supervised here",
                         service=name)
                    continue
                child.restart_requested = True

    def _restart_now(self, child: _Child) -> None:
        """Stop ``child`` (SIGTERM, then SIGKILL after the stop timeout) and spawn it anew."""
        with self._lock:
            child.restart_requested = False
            child.restart_at = None
            process = child.process
            if child.alive:
                _signal(child, signal.SIGTERM)
        if process is not None:
            try:
                process.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                _signal(child, signal.SIGKILL)
                process.wait()
        with self._lock:
            self._reap(child)
            child.gave_up = False
            child.restarts += 1
            _say("info", "restarting on request", service=child.name)
            try:
                self._spawn(child)
            except OSError as e:
                _say("error", "could not start", service=child.name, error=repr(e))
                self._after_failure(child, None, time.monotonic())

    def _rotate_logs(self) -> None:
        paths = list(self.rotate_also)
        if self.log_dir is not None:
            paths += [self.log_dir / f"{child.name}.log" for child in self._children.values()
                      if child.log_file is not None]
        for path in paths:
            try:
                if not path.is_file() or path.stat().st_size <= self.log_max_bytes:
                    continue
                rotate_copy_truncate(path, self.log_backups)
            except OSError as e:  # a full disk must not stop supervision
                _say("warning", "log rotation failed", log=str(path), error=repr(e))

    def _check(self, child: _Child, now: float) -> None:
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restart_at = None
                child.restarts += 1
                child.recent_restarts.append(now)
                try:
                    self._spawn(child)
                except OSError as e:  # no interpreter, no fds: a failed start, same policy
                    _say("error", "could not start", service=child.name, error=repr(e))
                    self._after_failure(child, None, now)
            return
        code = self._reap(child)
        if code is None:
            return
        if code == 0:
            _say("info", "exited cleanly; not restarted", service=child.name)
            return
        if code == EX_CONFIG:
            child.gave_up = True
            _say("error", "bad settings (exit 78); not restarted", service=child.name,
                 log=self._log_path(child))
            return
        self._after_failure(child, code, now)

    def _after_failure(self, child: _Child, code: int | None, now: float) -> None:
        """Schedule a restart after the back-off, or give up past the start limit."""
        while child.recent_restarts and now - child.recent_restarts[0] > self.start_limit_interval:
            child.recent_restarts.popleft()
        if len(child.recent_restarts) >= self.max_restarts:
            child.gave_up = True
            _say("error", "restart limit reached; giving up", service=child.name, exit_code=code,
                 restarts=len(child.recent_restarts), interval_s=self.start_limit_interval,
                 log=self._log_path(child))
            return
        delay = min(self.backoff_initial * 2 ** len(child.recent_restarts), self.backoff_max)
        child.restart_at = now + delay
        _say("warning", "exited; restarting after back-off", service=child.name, exit_code=code,
             delay_s=delay)

    def _reap(self, child: _Child) -> int | None:
        """Record the exit code of a finished process and drop it; None if none finished."""
        if child.process is None:
            return None
        code = child.process.poll()
        if code is None:
            return None
        child.last_exit = code
        child.process = None
        return code

    def _log_path(self, child: _Child) -> str | None:
        return str(self.log_dir / f"{child.name}.log") if self.log_dir is not None else None


def rotate_copy_truncate(path: Path, backups: int) -> None:
    """``path.N-1`` → ``path.N`` … ``path`` copied to ``path.1``, then ``path`` emptied in
    place (its writers keep their append-mode descriptors)."""
    for number in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{number}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{number + 1}"))
    newest = path.with_name(f"{path.name}.1")
    with path.open("rb") as source, newest.open("wb") as copy:
        while chunk := source.read(1 << 20):
            copy.write(chunk)
        os.truncate(path, 0)


def _say(level: str, event: str, **fields: Any) -> None:
    """Log, but never let a broken log stream (a closed file, a full disk) kill the monitor
    thread: supervision matters more than the message about it."""
    with contextlib.suppress(OSError, ValueError):
        getattr(log, level)(event, **fields)


def _signal(child: _Child, signum: int) -> None:
    """Signal the child's whole session (it runs in one of its own), tolerating a race."""
    if child.process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, signum)
