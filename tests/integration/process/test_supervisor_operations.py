"""The supervisor's operator features, with tiny ``python -c`` children: a restart on request
(a method call, or a request file from another process) and size-based log rotation."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quantum.process.supervisor import ProcessStatus, Supervisor

PATIENCE_SECONDS = 60.0  # a hang guard, not a speed assertion
SLEEPER = ["-c", "import time\nwhile True: time.sleep(1)"]
# Writes numbered lines forever, flushing each: 100 bytes a line.
CHATTY = ["-c", "import sys, time\nfor n in range(10**9):\n"
                "    sys.stdout.write(f'{n:09d} ' + 'x' * 89 + '\\n'); sys.stdout.flush()\n"
                "    time.sleep(0.0005)"]


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        time.sleep(0.02)


def status(supervisor: Supervisor, name: str) -> ProcessStatus:
    return next(s for s in supervisor.status() if s.name == name)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Supervisor]]:
    made: list[Supervisor] = []

    def build(commands: dict[str, list[str]], **options: object) -> Supervisor:
        supervisor = Supervisor(list(commands), env={}, workdir=tmp_path / "work",
                                log_dir=tmp_path / "logs", commands=commands,
                                **options)  # type: ignore[arg-type]
        made.append(supervisor)
        return supervisor

    yield build
    for supervisor in made:
        supervisor.stop(timeout=5)


def test_a_requested_restart_starts_a_new_process_without_a_back_off(
        make: Callable[..., Supervisor], tmp_path: Path) -> None:
    requests = tmp_path / "requests"
    supervisor = make({"one": SLEEPER, "two": SLEEPER}, request_dir=requests,
                      max_restarts=1, backoff_initial=30.0, backoff_max=30.0)
    supervisor.start()
    first = status(supervisor, "one").pid
    other = status(supervisor, "two").pid
    supervisor.restart("one")
    until(lambda: status(supervisor, "one").alive and status(supervisor, "one").pid != first)
    second = status(supervisor, "one").pid
    requests.mkdir()
    (requests / "one.restart").write_text("")
    until(lambda: status(supervisor, "one").alive and status(supervisor, "one").pid
          not in (first, second))
    assert not (requests / "one.restart").exists()
    now = status(supervisor, "one")
    assert now.restarts == 2 and not now.gave_up  # operator restarts are no failures
    assert status(supervisor, "two").pid == other  # the others are left alone
    with pytest.raises(ValueError, match="unknown service 'three'"):
        supervisor.restart("three")


def test_a_restart_request_revives_a_service_given_up_on(
        make: Callable[..., Supervisor], tmp_path: Path) -> None:
    marker = tmp_path / "healthy"
    flaky = ["-c", f"import os, sys, time\nif not os.path.exists({str(marker)!r}): sys.exit(3)\n"
                   "while True: time.sleep(1)"]
    # (with another service still running: a supervisor with nothing left to run ends)
    supervisor = make({"flaky": flaky, "steady": SLEEPER}, request_dir=tmp_path / "requests",
                      max_restarts=1,
                      backoff_initial=0.01, backoff_max=0.01)
    supervisor.start()
    until(lambda: status(supervisor, "flaky").gave_up)
    marker.write_text("")
    supervisor.restart("flaky")
    until(lambda: status(supervisor, "flaky").alive)
    assert not status(supervisor, "flaky").gave_up


def test_logs_rotate_by_size_and_keep_a_bounded_count(
        make: Callable[..., Supervisor], tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    supervisor = make({"chatty": CHATTY}, log_max_bytes=20_000, log_backups=3)
    supervisor.start()
    until(lambda: (logs / "chatty.log.3").exists())
    before = (logs / "chatty.log.1").read_text().splitlines()
    until(lambda: (logs / "chatty.log.1").read_text().splitlines() != before)
    supervisor.stop(timeout=5)
    names = sorted(p.name for p in logs.iterdir())
    assert names == ["chatty.log", "chatty.log.1", "chatty.log.2", "chatty.log.3"]
    for number in (1, 2, 3):
        rotated = (logs / f"chatty.log.{number}").read_text().splitlines()
        assert rotated and all(len(line) == 99 for line in rotated)  # whole lines, no holes
    # The newest copy continues the older one, and the live file continues the newest.
    older = int((logs / "chatty.log.2").read_text().splitlines()[-1].split()[0])
    newer = int((logs / "chatty.log.1").read_text().splitlines()[0].split()[0])
    assert newer > older
    live = (logs / "chatty.log").read_text().splitlines()
    assert not live or int(live[0].split()[0]) > newer
    assert "\0" not in (logs / "chatty.log").read_text()  # appended at 0, not sparse


def test_other_append_mode_logs_rotate_too(make: Callable[..., Supervisor],
                                           tmp_path: Path) -> None:
    own = tmp_path / "supervisor.log"
    supervisor = make({"quiet": SLEEPER}, log_max_bytes=1_000, log_backups=2,
                      rotate_also=[own])
    supervisor.start()
    with own.open("ab") as log:
        log.write(b"a" * 1_500)
        log.flush()
        until(lambda: (tmp_path / "supervisor.log.1").exists())
        log.write(b"b" * 10)
        log.flush()
    assert (tmp_path / "supervisor.log.1").read_bytes() == b"a" * 1_500
    assert own.read_bytes() == b"b" * 10
