"""The supervisor's restart policy, with tiny ``python -c`` children instead of services."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quantum.process.supervisor import ProcessStatus, Supervisor, launcher_table

# A hang guard only: the tests wait for a state, never assert how fast it came.
PATIENCE_SECONDS = 60.0


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        time.sleep(0.02)


def only(supervisor: Supervisor) -> ProcessStatus:
    (status,) = supervisor.status()
    return status


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Supervisor]]:
    made: list[Supervisor] = []

    def build(commands: dict[str, list[str]], **options: object) -> Supervisor:
        supervisor = Supervisor(
            list(commands), env=options.pop("env", {}), workdir=tmp_path / "work",  # type: ignore[arg-type]
            log_dir=tmp_path / "logs", commands=commands, **options,  # type: ignore[arg-type]
        )
        made.append(supervisor)
        return supervisor

    yield build
    for supervisor in made:
        supervisor.stop(timeout=5)


def test_crashing_child_is_restarted_with_backoff_then_given_up(
    make: Callable[..., Supervisor], tmp_path: Path
) -> None:
    starts = tmp_path / "starts.txt"
    code = (
        "import sys, time\n"
        f"open({str(starts)!r}, 'a').write(repr(time.monotonic()) + '\\n')\n"
        "sys.exit(3)\n"
    )
    supervisor = make({"crasher": ["-c", code]}, max_restarts=3, backoff_initial=0.1,
                      backoff_max=0.3, start_limit_interval=600.0)
    supervisor.start()
    until(lambda: only(supervisor).gave_up)

    status = only(supervisor)
    assert status.restarts == 3
    assert status.last_exit == 3
    assert not status.alive
    assert status.pid is None
    times = [float(line) for line in starts.read_text().split()]
    assert len(times) == 4  # the first start and three restarts
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # Back-off doubles from 0.1 s and is capped at 0.3 s: each gap is at least its delay.
    for gap, delay in zip(gaps, (0.1, 0.2, 0.3), strict=True):
        assert gap >= delay


def test_a_crash_loop_slowed_by_its_back_off_still_reaches_the_limit(
    make: Callable[..., Supervisor],
) -> None:
    # The configured window (10 ms) is far shorter than the back-off between restarts: the
    # old rule let every restart fall out of the window and restarted it for ever. The
    # window is now never shorter than twice a whole burst of back-offs.
    # How long a child runs before it crashes is the machine's business, so this checks the
    # rule itself; the live give-up is the test above.
    supervisor = make({"slow-loop": ["-c", "import sys; sys.exit(5)"]}, max_restarts=3,
                      backoff_initial=0.05, backoff_max=0.2, start_limit_interval=0.01)
    assert supervisor.start_limit_interval == 2 * (0.05 + 0.1 + 0.2)
    default = make({"x": ["-c", "pass"]}, max_restarts=5, backoff_initial=0.5, backoff_max=30.0)
    assert default.start_limit_interval == 600.0  # the units' StartLimitIntervalSec


def test_bad_settings_exit_78_is_not_restarted(make: Callable[..., Supervisor]) -> None:
    supervisor = make({"misconfigured": ["-c", "import sys; sys.exit(78)"]},
                      backoff_initial=0.01)
    supervisor.start()
    until(lambda: only(supervisor).last_exit is not None)
    supervisor.wait()  # returns by itself: nothing is left to supervise
    status = only(supervisor)
    assert status == ProcessStatus("misconfigured", None, False, 0, 78, True)


def test_clean_exit_is_not_restarted(make: Callable[..., Supervisor]) -> None:
    supervisor = make({"oneshot": ["-c", "pass"]}, backoff_initial=0.01)
    supervisor.start()
    supervisor.wait()
    assert only(supervisor) == ProcessStatus("oneshot", None, False, 0, 0, False)


def test_stop_terminates_then_kills_stragglers(
    make: Callable[..., Supervisor], tmp_path: Path
) -> None:
    stubborn = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    supervisor = make({"sleeper": ["-c", "import time; time.sleep(600)"],
                       "stubborn": ["-c", stubborn]})
    supervisor.start()
    statuses = supervisor.status()
    assert all(status.alive and status.pid for status in statuses)
    pids = [status.pid for status in statuses]
    until(lambda: "ready" in (tmp_path / "logs" / "stubborn.log").read_text())

    supervisor.stop(timeout=0.5)

    by_name = {status.name: status for status in supervisor.status()}
    assert by_name["sleeper"].last_exit == -signal.SIGTERM
    assert by_name["stubborn"].last_exit == -signal.SIGKILL
    assert not any(status.alive for status in by_name.values())
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    supervisor.wait()  # already stopped: returns at once


def test_children_get_merged_env_workdir_and_log_file(
    make: Callable[..., Supervisor], tmp_path: Path
) -> None:
    code = "import os; print(os.getcwd(), os.environ['QT_PROBE'], os.environ['PATH'] != '')"
    supervisor = make({"probe": ["-c", code]}, env={"QT_PROBE": "merged"})
    supervisor.start()
    supervisor.wait()
    text = (tmp_path / "logs" / "probe.log").read_text().split()
    assert text == [str(tmp_path / "work"), "merged", "True"]


def test_module_comes_from_the_launcher_file(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "deploy").mkdir(parents=True)
    launcher = {"services": [{"name": "zen", "module": "this", "env_file": "zen.env",
                              "port": 0, "required": False, "consumes": [], "produces": []}]}
    (work / "deploy" / "launcher.json").write_text(json.dumps(launcher))
    assert launcher_table(work) == {"zen": "this"}

    supervisor = Supervisor(["zen"], env={}, workdir=work, log_dir=tmp_path / "logs")
    supervisor.start()
    supervisor.wait()
    supervisor.stop()
    assert only(supervisor).last_exit == 0
    assert "Beautiful is better than ugly" in (tmp_path / "logs" / "zen.log").read_text()


def test_registry_is_the_fallback_and_unknown_names_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantum.process import supervisor
    from quantum.registry.fleet import SERVICES

    # Neither the workdir nor the (relocated) project has a launcher file.
    monkeypatch.setattr(supervisor, "PROJECT_ROOT", tmp_path / "project")
    table = launcher_table(tmp_path)
    assert set(table) == {spec.name for spec in SERVICES}
    for spec in SERVICES:
        assert table[spec.name] == spec.module
    with pytest.raises(ValueError, match="unknown service 'nope'"):
        Supervisor(["nope"], env={}, workdir=tmp_path)


def test_a_child_that_cannot_start_is_raised_from_start(tmp_path: Path) -> None:
    # The monitor thread spawns the children (see the module docstring); a failed first
    # start still reaches the caller, and whatever had started is stopped.
    supervisor = Supervisor(["first", "second"], env={}, workdir=tmp_path / "work",
                            log_dir=tmp_path / "logs", python=str(tmp_path / "no-python"),
                            commands={"first": ["-c", "pass"], "second": ["-c", "pass"]})
    with pytest.raises(FileNotFoundError):
        supervisor.start()
    assert not any(status.alive for status in supervisor.status())
    supervisor.stop(timeout=1)  # idempotent after a failed start
