"""The fleet under a real systemd: a booted Debian bookworm container, the documented install.

``make test-systemd`` runs this (``QT_TEST_SYSTEMD=1``); the default ``make test`` skips
it. It needs root, ``systemd-nspawn``, ``nsenter`` and ``mmdebstrap`` (the skip names what is
missing). The container (``tests/systemd/machine.py``) has no network: the project is
bind-mounted read-only and installed by ``scripts/install.sh --wheels`` from the host's
cached wheelhouse (:mod:`quantum.registry.installset`).

In order, as one operator's session would go (the tests share one machine):
the install; the registry's timers enabled, each with a next run; every unit ``active
(running)`` (``Type=notify``: systemd marks it active only on ``READY=1``); the verify
timer's job started by hand, succeeding with its JSON line and its success in Redis;
``quantumctl status --json`` reporting each unit's systemd state and timer runs as
``systemctl show`` does; ``systemd-analyze security`` ≤ 2.0 inside; a paced replay trading
through the units; then the market-publisher switched to live with no route to Binance;
``kill -9`` of each service's main PID and its recovery (and its ``unit_restarts`` flag in
the truth map); a SIGSTOP-ed service restarted by
the watchdog; a configuration error failing its unit once, with the key in the journal;
the live publisher still active ``QT_TEST_SYSTEMD_LIVE_SECONDS`` after its last start (its
own ``kill -9`` included; default 240 s, eight watchdog periods, for a quick local run;
``.ci/run`` sets 600, the ten minutes the issue asks); no secret of the env files in the
journal; the target stopping within its units' ``TimeoutStopSec`` with no unit failed.
Figures go to ``$QT_SYSTEMD_REPORT`` (default ``reports/systemd-test.json``); the directives
this host cannot enforce are reported there and printed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.systemd.machine import Machine, build_root, cannot_boot

from quantum.registry import installset
from quantum.registry.fleet import REPLAY_KEY, SERVICES, TIMERS, TIMERS_KEY
from quantum.registry.generate.common import STOP_TIMEOUT_SECONDS, WATCHDOG_SECONDS

ROOT = Path(__file__).resolve().parents[2]
UNITS = [spec.unit for spec in SERVICES]
QUANTUMCTL = "/opt/quantum-trader/.venv/bin/quantumctl"
PUBLISHER = "quantum-market-publisher.service"
STOPPED = "quantum-feature-publisher.service"  # the one SIGSTOP-ed
MISCONFIGURED = "quantum-rl-feedback.service"
LIVE_SECONDS = float(os.environ.get("QT_TEST_SYSTEMD_LIVE_SECONDS", "240"))
PATIENCE_SECONDS = 300.0  # hang guards, not speed assertions
MAX_EXPOSURE = 2.0
SECRETS = {name: secrets.token_hex(16) for name in
           ("QT_CONTROL_TOKEN", "QT_READ_TOKEN", "QT_BINANCE_API_KEY", "QT_BINANCE_API_SECRET")}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("QT_TEST_SYSTEMD") != "1",
                       reason="boots a container: run by `make test-systemd`"),
]

REPORT: dict[str, Any] = {"unenforced": [], "kill9_to_active_seconds": {}}


def _until(condition: Any, what: str, patience: float = PATIENCE_SECONDS) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > patience:
            raise AssertionError(f"{what}: not within {patience:.0f}s")
        time.sleep(0.2)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    why = cannot_boot()
    if why:
        pytest.skip(f"cannot boot a container here: {why}")
    started = time.monotonic()
    root, build_seconds = build_root()
    wheels = installset.wheelhouse()
    work = tmp_path_factory.mktemp("nspawn")
    box = Machine(root, f"qt-test-{os.getpid()}", {str(ROOT): "/srv/quantum-src",
                                                   str(wheels): "/srv/wheels"},
                  work / "console.log")
    try:
        box.wait_booted()
        REPORT.update(root_build_seconds=round(build_seconds, 1),
                      container_boot_seconds=round(box.boot_seconds, 1))
        yield box
    finally:
        if box.leader:
            journal = box.run(["journalctl", "--no-pager", "-o", "short-iso"], check=False)
            (work / "journal.txt").write_text(journal.stdout)
        box.poweroff()
        REPORT["test_seconds"] = round(time.monotonic() - started, 1)
        out = Path(os.environ.get("QT_SYSTEMD_REPORT", ROOT / "reports" / "systemd-test.json"))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(REPORT, indent=2) + "\n")
        print(f"\nsystemd test figures ({out}):\n{json.dumps(REPORT, indent=2)}")


def _append(box: Machine, path: str, lines: dict[str, str]) -> None:
    """Later lines of an EnvironmentFile win: the operator's edit, as a line appended."""
    body = "".join(f"{k}={v}\n" for k, v in lines.items())
    box.run(["bash", "-c", f"cat >> {path}"], input_text=body)


def _states(box: Machine) -> dict[str, dict[str, str]]:
    return {unit: box.show(unit, "ActiveState", "SubState", "NRestarts", "MainPID", "Result")
            for unit in UNITS}


def test_install_is_one_command_and_idempotent(machine: Machine) -> None:
    started = time.monotonic()
    machine.run(["bash", "/srv/quantum-src/scripts/install.sh", "--wheels", "/srv/wheels",
                 "--init", "--no-enable"])
    REPORT["install_seconds"] = round(time.monotonic() - started, 1)
    env = "/etc/quantum"
    replay = {"QT_CLOCK": "event", "QT_SYMBOLS": "BTCUSDT,ETHUSDT", "QT_CLAIM_IDLE_MS": "2000",
              "QT_REPLAY_START": "2025-09-01T00:00:00Z",
              "QT_REPLAY_END": "2025-09-06T00:00:00Z",  # 1,440 bars a symbol: it trades
              "QT_MIN_CONFIDENCE": "0.65"}  # at the former threshold (tests/conftest.py)
    for path in machine.sh(f"ls {env}/*.env").split():
        _append(machine, path, replay)  # a service's own file is read after common.env
    _append(machine, f"{env}/market-publisher.env", {"QT_SOURCE": "replay",
                                                     "QT_REPLAY_SPEED": "20000"})
    _append(machine, f"{env}/dashboard-api.env", {k: SECRETS[k] for k in
                                                  ("QT_CONTROL_TOKEN", "QT_READ_TOKEN")})
    _append(machine, f"{env}/execution.env", {k: SECRETS[k] for k in
                                              ("QT_BINANCE_API_KEY", "QT_BINANCE_API_SECRET")})
    before = machine.sh("stat -c '%n %a %U' /etc/quantum/*.env; sha256sum /etc/quantum/*.env")
    # Two hosts: the loopback-only units may reach the replicated bus's hosts as well.
    machine.run(["bash", "/srv/quantum-src/scripts/install.sh", "--wheels", "/srv/wheels",
                 "--bus-hosts", "192.0.2.11,192.0.2.12"])
    allowed = machine.show("quantum-execution.service", "IPAddressAllow")["IPAddressAllow"]
    assert "192.0.2.11" in allowed and "192.0.2.12" in allowed, allowed
    after = machine.sh("stat -c '%n %a %U' /etc/quantum/*.env; sha256sum /etc/quantum/*.env")
    assert before == after, "a second install changed the operator's env files"
    assert all(" 600 root" in line for line in before.splitlines() if " root" in line)
    assert machine.sh("id -u quantum").strip().isdigit()
    assert machine.sh("systemctl is-enabled quantum-trader.target").strip() == "enabled"
    assert "include /etc/redis/quantum.conf" in machine.sh("cat /etc/redis/redis.conf")
    assert machine.sh("redis-cli CONFIG GET appendonly").split()[1] == "yes"


def test_the_timers_are_installed_and_scheduled(machine: Machine) -> None:
    listed = machine.sh("systemctl list-timers --all --no-pager 'quantum-*'")
    REPORT["timers_listed"] = listed.strip().splitlines()
    for timer in TIMERS:
        info = machine.show(timer.timer, "ActiveState", "UnitFileState",
                            "NextElapseUSecRealtime")
        assert info["ActiveState"] == "active" and info["UnitFileState"] == "enabled", info
        assert info["NextElapseUSecRealtime"], (timer.timer, info)  # a next run
        assert timer.timer in listed, listed


def test_every_unit_reaches_active_running_with_ready(machine: Machine) -> None:
    started = time.monotonic()
    machine.run(["systemctl", "start", "quantum-trader.target"], timeout=PATIENCE_SECONDS)

    def all_running() -> bool:
        states = _states(machine)
        failed = [u for u, s in states.items() if s["ActiveState"] == "failed"]
        assert not failed, {u: machine.sh(f"journalctl -u {u} --no-pager -n 20", check=False)
                            for u in failed}
        return all(s["ActiveState"] == "active" and s["SubState"] == "running"
                   for s in states.values())

    _until(all_running, "every unit active (running)")
    REPORT["start_to_all_ready_seconds"] = round(time.monotonic() - started, 1)
    for unit in UNITS:
        info = machine.show(unit, "Type", "NRestarts", "WatchdogUSec")
        assert info["Type"] == "notify" and info["NRestarts"] == "0", (unit, info)


def test_a_timer_job_runs_and_records_its_success(machine: Machine) -> None:
    """The verify timer's service, started by hand as an operator would: it reads Redis and
    systemd (as the quantum user, over D-Bus), finds no drift, logs one JSON result line
    and records its success where the dashboard exports it."""
    job = "quantum-verify.service"
    started = time.monotonic()
    done = machine.run(["systemctl", "start", job], check=False, timeout=PATIENCE_SECONDS)
    REPORT["verify_job_seconds"] = round(time.monotonic() - started, 1)
    journal = machine.sh(f"journalctl -u {job} --no-pager -o cat", check=False)
    assert done.returncode == 0, (done.stderr, journal[-3000:])
    results = [json.loads(line) for line in journal.splitlines()
               if line.startswith("{") and '"timer_result"' in line]
    assert len(results) == 1 and results[0]["ok"] is True, journal[-3000:]
    assert "systemd: present" in results[0]["detail"], results[0]
    REPORT["verify_job_result"] = results[0]
    info = machine.show(job, "Result", "ExecMainStatus")
    assert info == {"Result": "success", "ExecMainStatus": "0"}, info
    stored = json.loads(machine.sh(f"redis-cli --raw HGET {TIMERS_KEY} verify"))
    assert stored["last_ok"] is True and stored["last_success"] > 0, stored


def test_status_shows_the_systemd_state(machine: Machine) -> None:
    """What ``quantumctl status --json`` says of each unit is what ``systemctl show`` says
    (read just before and after it), and each failed or restarted unit is flagged."""
    props = ("ActiveState", "SubState", "NRestarts", "ExecMainStatus")
    before = {unit: machine.show(unit, *props) for unit in UNITS}
    document = json.loads(machine.run([QUANTUMCTL, "status", "--json"]).stdout)
    after = {unit: machine.show(unit, *props) for unit in UNITS}
    section = document["systemd"]
    assert section["present"] is True, section
    states = {row["unit"]: row for row in section["units"]}
    assert sorted(states) == sorted(UNITS)
    flagged = {(flag["kind"], flag["subject"]) for flag in document["flags"]}
    for unit, row in states.items():
        seen = (row["active_state"], row["sub_state"], str(row["restarts"]),
                str(row["exit_status"]))
        assert seen in {tuple(before[unit][p] for p in props),
                        tuple(after[unit][p] for p in props)}, (unit, row, before[unit])
        assert row["fragment_path"] == f"/etc/systemd/system/{unit}"
        assert (row["active_state"] == "failed") == (("unit_failed", unit) in flagged)
        assert bool(row["restarts"]) == (("unit_restarts", unit) in flagged)
    timers = {row["timer"]: row for row in section["timers"]}
    assert sorted(timers) == sorted(timer.timer for timer in TIMERS)
    assert all(row["next_run"] for row in timers.values()), timers
    assert all(("timer_never_ran", name) in flagged for name, row in timers.items()
               if row["last_run"] is None)
    kinds = {flag["kind"] for flag in document["flags"]}
    assert not kinds & {"unit_not_installed", "unit_file_differs"}, document["flags"]
    REPORT["status_systemd_flags"] = [f for f in document["flags"]
                                      if f["kind"].startswith(("unit_", "timer_"))]
    text = machine.run([QUANTUMCTL, "status"]).stdout
    assert "systemd units" in text and "systemd timers" in text, text[-2000:]


def test_security_exposure_is_at_most_two_inside(machine: Machine) -> None:
    scores: dict[str, float] = {}
    for unit in UNITS:
        out = machine.run(["systemd-analyze", "security", "--no-pager", unit]).stdout
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
        assert found, out[-500:]
        scores[unit] = float(found.group(1))
    REPORT["security_exposure"] = scores
    assert max(scores.values()) <= MAX_EXPOSURE, scores


def test_a_paced_replay_trades_through_the_units(machine: Machine) -> None:
    def done() -> bool:
        raw = machine.sh(f"redis-cli --raw GET {REPLAY_KEY}", check=False).strip()
        return bool(raw) and json.loads(raw).get("status") == "done"

    REPORT["replay_seconds"] = round(_until(done, "the replay finished", 900.0), 1)
    closed = int(machine.sh("redis-cli XLEN quantum:stream:trade.closed").strip())
    fills = int(machine.sh("redis-cli XLEN quantum:stream:execution.result").strip())
    REPORT["replay_trades_closed"], REPORT["replay_execution_results"] = closed, fills
    assert fills > 0 and closed > 0
    assert machine.show(PUBLISHER, "Result")["Result"] == "success"


def test_live_publisher_with_no_route_starts(machine: Machine) -> None:
    _append(machine, "/etc/quantum/market-publisher.env", {"QT_SOURCE": "binance"})
    machine.run(["systemctl", "restart", PUBLISHER])
    REPORT["live_started_monotonic"] = time.monotonic()
    _until(lambda: machine.show(PUBLISHER, "ActiveState")["ActiveState"] == "active",
           "live market-publisher active")
    _until(lambda: "connect_failed" in machine.sh(
        f"journalctl -u {PUBLISHER} --no-pager -o cat -n 50", check=False),
        "live market-publisher retrying", 120.0)


def test_kill_9_of_each_main_pid_brings_it_back(machine: Machine) -> None:
    for unit in UNITS:
        before = machine.show(unit, "MainPID", "NRestarts")
        pid = int(before["MainPID"])
        assert pid > 0, (f"{unit} is not running before its kill -9: ", before, machine.sh(
            f"journalctl -u {unit} --no-pager -o cat -n 15", check=False)[-3000:])
        killed = time.monotonic()
        machine.run(["kill", "-9", str(pid)])

        def back(unit: str = unit, pid: int = pid) -> bool:
            now = machine.show(unit, "ActiveState", "SubState", "MainPID")
            return (now["ActiveState"] == "active" and now["SubState"] == "running"
                    and now["MainPID"] not in ("0", str(pid)))

        _until(back, f"{unit} back after kill -9")
        REPORT["kill9_to_active_seconds"][unit] = round(time.monotonic() - killed, 1)
        if unit == PUBLISHER and "live_started_monotonic" in REPORT:
            # the no-route watch below counts from the live publisher's last start
            REPORT["live_started_monotonic"] = time.monotonic()
        after = machine.show(unit, "NRestarts")
        assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
        flags = json.loads(machine.run([QUANTUMCTL, "status", "--json"]).stdout)["flags"]
        assert any(flag["kind"] == "unit_restarts" and flag["subject"] == unit
                   for flag in flags), flags  # the truth map sees the restart


def test_a_service_that_stops_pinging_is_restarted_by_the_watchdog(machine: Machine) -> None:
    before = machine.show(STOPPED, "MainPID", "NRestarts")
    pid = before["MainPID"]
    stopped = time.monotonic()
    machine.run(["kill", "-STOP", pid])

    def restarted() -> bool:
        now = machine.show(STOPPED, "ActiveState", "MainPID")
        return now["ActiveState"] == "active" and now["MainPID"] not in ("0", pid)

    _until(restarted, "watchdog restart", WATCHDOG_SECONDS * 4)
    REPORT["sigstop_to_active_seconds"] = round(time.monotonic() - stopped, 1)
    journal = machine.sh(f"journalctl -u {STOPPED} --no-pager -o cat", check=False)
    assert "Watchdog timeout" in journal, journal[-2000:]
    assert int(machine.show(STOPPED, "NRestarts")["NRestarts"]) == int(before["NRestarts"]) + 1


def test_a_configuration_error_fails_the_unit_once_with_the_key_in_the_journal(
    machine: Machine,
) -> None:
    path = "/etc/quantum/rl-feedback.env"
    machine.sh(f"cp {path} {path}.good")
    _append(machine, path, {"QT_HEARTBEAT_TTL_S": "soon"})
    machine.run(["systemctl", "restart", MISCONFIGURED], check=False)
    _until(lambda: machine.show(MISCONFIGURED, "ActiveState")["ActiveState"] == "failed",
           "misconfigured unit failed")
    time.sleep(5)  # longer than RestartSec: a restart loop would show by now
    info = machine.show(MISCONFIGURED, "ActiveState", "NRestarts", "ExecMainStatus", "Result")
    REPORT["config_error_unit"] = info
    assert info["ActiveState"] == "failed" and info["ExecMainStatus"] == "78", info
    journal = machine.sh(f"journalctl -u {MISCONFIGURED} --no-pager -o cat -n 30")
    assert "QT_HEARTBEAT_TTL_S" in journal, journal
    assert int(info["NRestarts"]) == 0, info
    machine.sh(f"mv {path}.good {path}; systemctl reset-failed {MISCONFIGURED}; "
               f"systemctl start {MISCONFIGURED}")
    assert machine.show(MISCONFIGURED, "ActiveState")["ActiveState"] == "active"


def test_live_publisher_with_no_route_stays_active(machine: Machine) -> None:
    started = REPORT.get("live_started_monotonic")
    assert started is not None, "the live publisher test did not run"
    restarts = machine.show(PUBLISHER, "NRestarts")["NRestarts"]
    while time.monotonic() - started < LIVE_SECONDS:
        info = machine.show(PUBLISHER, "ActiveState", "SubState", "NRestarts")
        assert info == {"ActiveState": "active", "SubState": "running",
                        "NRestarts": restarts}, info
        time.sleep(5)
    REPORT["live_no_route_active_seconds"] = round(time.monotonic() - started, 1)
    REPORT.pop("live_started_monotonic")
    journal = machine.sh(f"journalctl -u {PUBLISHER} --no-pager -o cat", check=False)
    assert "Watchdog timeout" not in journal


def test_no_secret_from_the_env_files_reaches_the_journal(machine: Machine) -> None:
    journal = machine.run(["journalctl", "--no-pager", "-o", "cat"]).stdout
    leaked = [name for name, value in SECRETS.items() if value in journal]
    assert not leaked, leaked
    not_json = []
    for unit in UNITS:
        for line in machine.run(["journalctl", "-u", unit, "--no-pager", "-o", "cat",
                                 "_TRANSPORT=stdout"]).stdout.splitlines():
            try:
                json.loads(line)
            except ValueError:
                not_json.append((unit, line))
    assert not not_json, not_json[:10]


def test_the_target_stops_everything_within_its_timeout(machine: Machine) -> None:
    started = time.monotonic()
    machine.run(["systemctl", "stop", "quantum-trader.target"],
                timeout=STOP_TIMEOUT_SECONDS * 3)
    # The target's own stop job ends at once; its units' (PartOf=) run on: wait for them.
    # Past TimeoutStopSec systemd SIGKILLs a unit and marks it failed, which the check
    # below would see.
    _until(lambda: all(s["ActiveState"] in ("inactive", "failed")
                       for s in _states(machine).values()),
           "every unit stopped", STOP_TIMEOUT_SECONDS * 2)
    REPORT["target_stop_seconds"] = round(time.monotonic() - started, 1)
    states = _states(machine)
    unclean = {unit: state for unit, state in states.items()
               if state["ActiveState"] != "inactive" or state["Result"] != "success"}
    assert not unclean, (unclean, {unit: machine.sh(
        f"journalctl -u {unit} --no-pager -o cat -n 25", check=False)[-2500:]
        for unit in unclean})


def test_directives_this_host_cannot_enforce_are_reported(machine: Machine) -> None:
    """IPAddressDeny= needs cgroup v2 with BPF; MemoryMax= the memory controller in the
    unified hierarchy. Reported, not failed: the VPS checks are in docs/RELIABILITY.md."""
    fs = machine.sh("stat -fc %T /sys/fs/cgroup").strip()
    controllers = machine.sh("cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null || true",
                             check=False).split()
    REPORT["cgroup"] = {"fs": fs, "controllers": controllers}
    if fs != "cgroup2fs" or "memory" not in controllers:
        REPORT["unenforced"].append("MemoryMax= (no memory controller in cgroup v2)")
    if fs != "cgroup2fs":
        REPORT["unenforced"].append("IPAddressAllow=/IPAddressDeny= (needs cgroup v2 + BPF)")
    print("directives not enforced on this host:", REPORT["unenforced"] or "none")


def test_uninstall_reverses_the_install(machine: Machine) -> None:
    machine.run(["bash", "/srv/quantum-src/scripts/install.sh", "--uninstall"])
    left = machine.sh("ls /etc/systemd/system/ | grep -c '^quantum-' || true", check=False)
    assert left.strip() == "0", left
    assert machine.sh("test -e /opt/quantum-trader && echo there || echo gone").strip() == "gone"
    assert machine.sh("test -e /etc/systemd/journald.conf.d/quantum.conf && echo there "
                      "|| echo gone").strip() == "gone"
    assert "quantum.conf" not in machine.sh("cat /etc/redis/redis.conf")
    kept = machine.sh("ls /etc/quantum").split()
    assert "common.env" in kept and "dashboard-api.env" in kept  # edited: the operator's
    machine.run(["bash", "/srv/quantum-src/scripts/install.sh", "--uninstall", "--purge"])
    assert machine.sh("test -e /etc/quantum && echo there || echo gone").strip() == "gone"
    assert machine.run(["id", "quantum"], check=False).returncode != 0
