"""The registry's timers: generated like the units, drift-checked, installable by systemd."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from quantum.ctl.timers import JOBS
from quantum.registry import generate
from quantum.registry.fleet import SERVICES, TIMERS, TimerSpec

ROOT = generate.ROOT
UNIT_DIR = ROOT / generate.UNIT_DIR


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_every_timer_has_a_job_and_unique_names() -> None:
    assert sorted(JOBS) == sorted(timer.name for timer in TIMERS)
    names = [timer.unit for timer in TIMERS] + [spec.unit for spec in SERVICES]
    assert len(names) == len(set(names))
    assert all(timer.period_seconds > 0 for timer in TIMERS)


@pytest.mark.parametrize("timer", TIMERS, ids=lambda timer: timer.name)
def test_the_timer_and_its_service_are_generated(timer: TimerSpec) -> None:
    files = generate.render()
    timer_text = files[f"{generate.UNIT_DIR}/{timer.timer}"]
    service_text = files[f"{generate.UNIT_DIR}/{timer.unit}"]
    assert (UNIT_DIR / timer.timer).read_text() == timer_text
    assert (UNIT_DIR / timer.unit).read_text() == service_text
    timer_keys, service_keys = _directives(timer_text), _directives(service_text)
    assert timer_keys["OnCalendar"] == [timer.on_calendar]
    assert timer_keys["Unit"] == [timer.unit] and timer_keys["Persistent"] == ["yes"]
    assert timer_keys["WantedBy"] == ["timers.target"]
    assert service_keys["Type"] == ["oneshot"]
    assert service_keys["ExecStart"] == [
        f"{generate.PYTHON} -m quantum.ctl timer run {timer.name}"]
    assert service_keys["User"] == [generate.USER]


def test_the_drift_check_covers_the_timers(tmp_path: Path) -> None:
    generate.write(tmp_path)
    assert generate.check(tmp_path) == []
    timer, service = TIMERS[0].timer, TIMERS[0].unit
    edited = tmp_path / generate.UNIT_DIR / timer
    edited.write_text(edited.read_text().replace("Persistent=yes", "Persistent=no"))
    (tmp_path / generate.UNIT_DIR / service).unlink()
    stale = tmp_path / generate.UNIT_DIR / "quantum-retired.timer"
    stale.write_text("[Timer]\n")
    assert sorted(generate.check(tmp_path)) == sorted([
        f"{generate.UNIT_DIR}/{timer}", f"{generate.UNIT_DIR}/{service}",
        f"{generate.UNIT_DIR}/quantum-retired.timer"])
    assert generate.main(["--check", "--root", str(tmp_path)]) == 1
    generate.write(tmp_path)
    assert not stale.exists() and generate.check(tmp_path) == []


def test_a_timer_named_like_a_service_is_refused() -> None:
    clash = replace(TIMERS[0], name=SERVICES[0].name)
    with pytest.raises(generate.GenerationError, match="service's unit name"):
        generate.render_systemd(SERVICES, (clash,))
