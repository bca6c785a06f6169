"""The whole file set: every output rendered, compared with a tree, written, pruned.

:func:`render` maps each repository-relative path to its content, calling the module that
owns that output; :func:`check` lists the paths whose file differs or is stale (a unit or
env example whose service left the registry), and :func:`write` rewrites the former and
deletes the latter. Only files matching ``OWNED_PATTERNS`` are ever deleted, so an
operator's real ``etc/quantum/<name>.env`` is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from quantum.registry.fleet import SERVICES, TIMERS, ServiceSpec, TimerSpec
from quantum.registry.generate.common import (
    COMMON_ENV_EXAMPLE,
    ENV_EXAMPLE_DIR,
    LAUNCHER,
    OWNED_PATTERNS,
    ROOT,
    SERVICES_DOC,
    STREAMS_DOC,
    TARGET,
    UNIT_DIR,
    GenerationError,
)
from quantum.registry.generate.docs_services import render_services_doc
from quantum.registry.generate.docs_streams import render_streams_doc
from quantum.registry.generate.envfiles import render_common_env, render_service_env
from quantum.registry.generate.journald import JOURNALD_DROPIN, render_journald
from quantum.registry.generate.launcher import render_launcher
from quantum.registry.generate.target import render_target
from quantum.registry.generate.timers import render_timer, render_timer_service
from quantum.registry.generate.units import render_unit


def render(services: Sequence[ServiceSpec] = SERVICES) -> dict[str, str]:
    """Every generated file: repository-relative path → content."""
    names = [spec.name for spec in services]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise GenerationError(f"services registered twice: {', '.join(duplicates)}")
    files = render_systemd(services)
    files[JOURNALD_DROPIN] = render_journald()
    files[COMMON_ENV_EXAMPLE] = render_common_env()
    for spec in services:
        files[f"{ENV_EXAMPLE_DIR}/{spec.env_file}.example"] = render_service_env(spec)
    files[LAUNCHER] = render_launcher(services)
    files[STREAMS_DOC] = render_streams_doc(services)
    files[SERVICES_DOC] = render_services_doc(services)
    return files


def render_systemd(
    services: Sequence[ServiceSpec] = SERVICES, timers: Sequence[TimerSpec] = TIMERS
) -> dict[str, str]:
    """The files of ``deploy/systemd/``: units, the target, timers and their services."""
    files: dict[str, str] = {}
    for spec in services:
        files[f"{UNIT_DIR}/{spec.unit}"] = render_unit(spec)
    files[f"{UNIT_DIR}/{TARGET}"] = render_target(services)
    taken = {spec.unit for spec in services}
    for timer in timers:
        if timer.unit in taken:
            raise GenerationError(f"timer {timer.name}'s service {timer.unit} is a service's "
                                  "unit name")
        files[f"{UNIT_DIR}/{timer.timer}"] = render_timer(timer)
        files[f"{UNIT_DIR}/{timer.unit}"] = render_timer_service(timer)
    return files


def _stale(root: Path, files: dict[str, str]) -> list[str]:
    found = {
        path.relative_to(root).as_posix()
        for pattern in OWNED_PATTERNS
        for path in root.glob(pattern)
    }
    return sorted(found - set(files))


def check(root: Path = ROOT) -> list[str]:
    """Paths (repository-relative) that differ from the generator's output, or are stale."""
    files = render()
    differing = [
        path
        for path, content in files.items()
        if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != content
    ]
    return differing + _stale(root, files)


def write(root: Path = ROOT) -> list[str]:
    """Write the files that differ and delete stale ones; return their paths."""
    files = render()
    changed: list[str] = []
    for path, content in files.items():
        target = root / path
        if target.is_file() and target.read_text(encoding="utf-8") == content:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        changed.append(path)
    for path in _stale(root, files):
        (root / path).unlink()
        changed.append(path)
    return changed
