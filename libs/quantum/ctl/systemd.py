"""What systemd says of the fleet: units, timers, installed files, for the truth map.

When systemd runs this host (``systemctl`` on the path and PID 1 is systemd, or
``/run/systemd/system`` exists where ``/proc/1`` is hidden), ``quantumctl status``,
``report`` and ``verify`` add each unit's ``ActiveState``, ``SubState``, ``NRestarts`` and
``ExecMainStatus`` and each timer's last and next run (one ``systemctl show`` call, with
``TZ=UTC`` so times read back as UTC), and flag:

  ``unit_failed``         a unit is ``failed``
  ``unit_restarts``       ``NRestarts`` > 0: systemd restarted it (crash, watchdog)
  ``unit_not_installed``  a registry unit or timer systemd does not know
  ``unit_file_differs``   the installed file differs from the repository's generated one
  ``timer_never_ran``     a timer with no last run

Without systemd the section says ``present: false`` and the rest of the map goes on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantum.ctl.truth import Flag

UNIT_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "NRestarts",
                   "ExecMainStatus", "Result", "FragmentPath", "UnitFileState")
TIMER_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "LastTriggerUSec",
                    "NextElapseUSecRealtime", "Result", "FragmentPath", "UnitFileState")
DRIFT_KINDS = frozenset({"unit_not_installed", "unit_file_differs"})
_TIME_FORMAT = "%a %Y-%m-%d %H:%M:%S %Z"


def present() -> bool:
    """systemctl exists and systemd is PID 1."""
    if shutil.which("systemctl") is None:
        return False
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd"
    except OSError:  # /proc/1 hidden (ProtectProc=): sd_booted()'s own test
        return Path("/run/systemd/system").is_dir()


def parse_show(text: str) -> list[dict[str, str]]:
    """``systemctl show`` output for several units: one ``{property: value}`` per unit
    (blocks separated by blank lines, in the order the units were given)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        blocks.append(current)
    return blocks


def parse_time(value: str) -> str | None:
    """A ``systemctl show`` timestamp (``Wed 2026-12-02 06:50:38 UTC``) as ISO 8601 UTC;
    None for an empty one (never) and the text itself for a zone other than UTC."""
    value = value.strip()
    if not value or value in ("n/a", "0"):
        return None
    try:
        moment = datetime.strptime(value, _TIME_FORMAT)
    except ValueError:
        return value
    if not value.endswith(" UTC"):
        return value
    return moment.replace(tzinfo=UTC).isoformat(timespec="seconds")


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def unit_row(block: Mapping[str, str]) -> dict[str, Any]:
    return {
        "unit": block.get("Id", ""),
        "load_state": block.get("LoadState"),
        "active_state": block.get("ActiveState"),
        "sub_state": block.get("SubState"),
        "restarts": _int(block.get("NRestarts")),
        "exit_status": _int(block.get("ExecMainStatus")),
        "result": block.get("Result"),
        "fragment_path": block.get("FragmentPath") or None,
        "unit_file_state": block.get("UnitFileState") or None,
    }


def timer_row(block: Mapping[str, str]) -> dict[str, Any]:
    return {
        "timer": block.get("Id", ""),
        "load_state": block.get("LoadState"),
        "active_state": block.get("ActiveState"),
        "last_run": parse_time(block.get("LastTriggerUSec", "")),
        "next_run": parse_time(block.get("NextElapseUSecRealtime", "")),
        "fragment_path": block.get("FragmentPath") or None,
        "unit_file_state": block.get("UnitFileState") or None,
    }


def _file_flag(name: str, fragment: str | None, expected: str | None) -> Flag | None:
    if expected is None or not fragment:
        return None
    try:
        installed = Path(fragment).read_text(encoding="utf-8")
    except OSError as e:
        return Flag("unit_file_differs", name, f"{fragment} cannot be read: {e.strerror}")
    if installed != expected:
        return Flag("unit_file_differs", name,
                    f"{fragment} differs from the repository's generated file "
                    "(reinstall: scripts/install.sh)")
    return None


def assess(units: list[dict[str, Any]], timers: list[dict[str, Any]],
           expected: Mapping[str, str]) -> list[Flag]:
    """The flags of the rows; ``expected`` maps unit file names to their generated text."""
    flags: list[Flag] = []
    for row in [*units, *timers]:
        name = row.get("unit") or row.get("timer") or ""
        if row["load_state"] == "not-found":
            flags.append(Flag("unit_not_installed", name,
                              "in the registry but not installed (scripts/install.sh)"))
            continue
        found = _file_flag(name, row["fragment_path"], expected.get(name))
        if found:
            flags.append(found)
    for row in units:
        if row["active_state"] == "failed":
            flags.append(Flag("unit_failed", row["unit"],
                              f"failed (result {row['result']}, exit status "
                              f"{row['exit_status']}): journalctl -u {row['unit']}"))
        if row["restarts"]:
            flags.append(Flag("unit_restarts", row["unit"],
                              f"systemd restarted it {row['restarts']} times"))
    for row in timers:
        if row["load_state"] != "not-found" and row["last_run"] is None:
            flags.append(Flag("timer_never_ran", row["timer"],
                              f"never ran (next: {row['next_run'] or 'not scheduled'})"))
    return flags


def show(names: list[str], properties: tuple[str, ...]) -> str:
    done = subprocess.run(["systemctl", "show", "-p", ",".join(properties), *names],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ, "TZ": "UTC", "SYSTEMD_PAGER": ""})
    if done.returncode != 0:
        raise RuntimeError(f"systemctl show exited {done.returncode}: "
                           f"{done.stderr.strip()[:300]}")
    return done.stdout


def read() -> dict[str, Any]:
    """The systemd section of the truth map: ``present``, units, timers, flags."""
    if not present():
        return {"present": False, "detail": "systemd: not present", "units": [], "timers": [],
                "flags": []}
    from quantum.registry.fleet import SERVICES, TIMERS
    from quantum.registry.generate.files import render_systemd

    expected = {path.rsplit("/", 1)[1]: text for path, text in render_systemd().items()}
    unit_names = [spec.unit for spec in SERVICES] + [timer.unit for timer in TIMERS]
    timer_names = [timer.timer for timer in TIMERS]
    try:
        units = [unit_row(b) for b in parse_show(show(unit_names, UNIT_PROPERTIES))]
        timers = [timer_row(b) for b in parse_show(show(timer_names, TIMER_PROPERTIES))]
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        return {"present": True, "detail": f"systemd: cannot be read: {e}", "units": [],
                "timers": [], "flags": [Flag("systemd_unreadable", "systemctl",
                                             str(e)).as_dict()]}
    # a timer's oneshot service is inactive between runs; only the services must run
    services = {spec.unit for spec in SERVICES}
    flags = assess(units, timers, expected)
    return {"present": True, "detail": "systemd: present",
            "units": [row for row in units if row["unit"] in services],
            "jobs": [row for row in units if row["unit"] not in services],
            "timers": timers, "flags": [flag.as_dict() for flag in flags]}


def add_to(document: dict[str, Any]) -> dict[str, Any]:
    """Put the systemd section into a truth map document and its flags among the others."""
    section = read()
    document["systemd"] = section
    document["flags"] = [*document["flags"], *section["flags"]]
    return document
