"""``systemctl show`` read into the truth map's systemd section, and its flags.

The fixtures are verbatim output of ``systemctl show -p …`` (systemd 252, Debian bookworm,
``TZ=UTC``) captured inside the booted test container (tests/systemd/machine.py): a running
unit, a failed one, one that is not installed, timers that ran, never ran, or do not exist.
The parser and the flags see exactly that text; only file paths are pointed at files here
where a test compares installed unit files.
"""

from __future__ import annotations

from pathlib import Path

from quantum.ctl import systemd

UNITS = """Result=success
NRestarts=0
ExecMainStatus=0
Id=redis-server.service
LoadState=loaded
ActiveState=active
SubState=running
FragmentPath=/lib/systemd/system/redis-server.service
UnitFileState=enabled

Result=exit-code
NRestarts=0
ExecMainStatus=1
Id=qt-fail.service
LoadState=loaded
ActiveState=failed
SubState=failed
FragmentPath=/run/systemd/transient/qt-fail.service
UnitFileState=transient

Result=success
NRestarts=0
ExecMainStatus=0
Id=quantum-nothere.service
LoadState=not-found
ActiveState=inactive
SubState=dead
FragmentPath=
UnitFileState=
"""

TIMERS = """NextElapseUSecRealtime=
NextElapseUSecMonotonic=2h 15min 39.932810s
LastTriggerUSec=Wed 2026-12-02 06:50:38 UTC
Result=success
Id=qt-tick.timer
LoadState=loaded
ActiveState=active
SubState=waiting
FragmentPath=/run/systemd/transient/qt-tick.timer
UnitFileState=transient

NextElapseUSecRealtime=Thu 2026-12-03 03:00:00 UTC
NextElapseUSecMonotonic=0
LastTriggerUSec=
Result=success
Id=qt-later.timer
LoadState=loaded
ActiveState=active
SubState=waiting
FragmentPath=/run/systemd/transient/qt-later.timer
UnitFileState=transient

NextElapseUSecRealtime=
NextElapseUSecMonotonic=1h 30min 35.063900s
LastTriggerUSec=
Result=success
Id=systemd-tmpfiles-clean.timer
LoadState=loaded
ActiveState=active
SubState=waiting
FragmentPath=/lib/systemd/system/systemd-tmpfiles-clean.timer
UnitFileState=static

NextElapseUSecRealtime=
NextElapseUSecMonotonic=infinity
LastTriggerUSec=
Result=success
Id=quantum-nothere.timer
LoadState=not-found
ActiveState=inactive
SubState=dead
FragmentPath=
UnitFileState=
"""


def _kinds(flags: list[systemd.Flag]) -> list[tuple[str, str]]:
    return sorted((flag.kind, flag.subject) for flag in flags)


def test_show_output_is_one_block_per_unit_in_order() -> None:
    blocks = systemd.parse_show(UNITS)
    assert [block["Id"] for block in blocks] == [
        "redis-server.service", "qt-fail.service", "quantum-nothere.service"]
    rows = [systemd.unit_row(block) for block in blocks]
    assert rows[0] == {
        "unit": "redis-server.service", "load_state": "loaded", "active_state": "active",
        "sub_state": "running", "restarts": 0, "exit_status": 0, "result": "success",
        "fragment_path": "/lib/systemd/system/redis-server.service",
        "unit_file_state": "enabled"}
    assert rows[1]["active_state"] == "failed" and rows[1]["exit_status"] == 1
    assert rows[1]["result"] == "exit-code"
    assert rows[2]["load_state"] == "not-found" and rows[2]["fragment_path"] is None


def test_timer_last_and_next_runs() -> None:
    never = {row["timer"]: row for row in map(systemd.timer_row, systemd.parse_show(TIMERS))}
    assert never["qt-later.timer"]["last_run"] is None
    assert never["qt-later.timer"]["next_run"] == "2026-12-03T03:00:00+00:00"
    assert never["systemd-tmpfiles-clean.timer"]["next_run"] is None  # monotonic only
    assert never["quantum-nothere.timer"]["load_state"] == "not-found"
    ran = [systemd.timer_row(b) for b in systemd.parse_show(TIMERS)]
    assert ran[0]["timer"] == "qt-tick.timer"
    assert ran[0]["last_run"] == "2026-12-02T06:50:38+00:00"


def test_flags_failed_not_installed_and_never_ran() -> None:
    units = [systemd.unit_row(b) for b in systemd.parse_show(UNITS)]
    timers = [systemd.timer_row(b) for b in systemd.parse_show(TIMERS)]
    assert timers[0]["timer"] == "qt-tick.timer" and timers[0]["last_run"] is not None
    assert _kinds(systemd.assess(units, timers, {})) == [
        ("timer_never_ran", "qt-later.timer"),
        ("timer_never_ran", "systemd-tmpfiles-clean.timer"),
        ("unit_failed", "qt-fail.service"),
        ("unit_not_installed", "quantum-nothere.service"),
        ("unit_not_installed", "quantum-nothere.timer"),
    ]


def test_restarts_are_flagged() -> None:
    restarted = UNITS.replace("NRestarts=0\nExecMainStatus=0\nId=redis-server.service",
                              "NRestarts=3\nExecMainStatus=0\nId=redis-server.service")
    units = [systemd.unit_row(b) for b in systemd.parse_show(restarted)]
    flags = systemd.assess(units, [], {})
    assert ("unit_restarts", "redis-server.service") in _kinds(flags)
    assert [f.detail for f in flags if f.kind == "unit_restarts"] == [
        "systemd restarted it 3 times"]


def test_an_installed_file_that_differs_from_the_generated_one(tmp_path: Path) -> None:
    installed = tmp_path / "redis-server.service"
    installed.write_text("[Service]\nExecStart=/usr/bin/redis-server\n")
    text = UNITS.replace("FragmentPath=/lib/systemd/system/redis-server.service",
                         f"FragmentPath={installed}")
    units = [systemd.unit_row(b) for b in systemd.parse_show(text)][:1]
    same = {"redis-server.service": installed.read_text()}
    assert systemd.assess(units, [], same) == []
    other = {"redis-server.service": "[Service]\nExecStart=/usr/bin/redis-server --x\n"}
    assert _kinds(systemd.assess(units, [], other)) == [
        ("unit_file_differs", "redis-server.service")]


def test_without_systemd_the_section_says_so() -> None:
    if systemd.present():
        return  # this host runs systemd: the container test covers the other side
    section = systemd.read()
    assert section["present"] is False and section["detail"] == "systemd: not present"
    document = systemd.add_to({"flags": [{"kind": "k", "subject": "s", "detail": "d"}]})
    assert document["systemd"]["present"] is False and len(document["flags"]) == 1
