"""Generate deployment files and reference docs from the fleet registry.

Run ``python -m quantum.registry.generate`` to write them, ``--check`` to list the files
that differ from what would be written (exit 1) without touching anything. Everything is
derived from :data:`quantum.registry.fleet.SERVICES`, the settings classes it names, the
stream catalogue, the event contracts and :mod:`quantum.contracts.routing`, so a service
added to the registry gets its unit, env file, launcher entry and docs by regenerating.
Output is deterministic (registry order, no timestamps), which is what lets a test and
``quantumctl units --check`` fail on drift.

One module per output (paths relative to the repository root):

* :mod:`.units`: ``deploy/systemd/quantum-<name>.service`` (and the unit decisions for
  systemd 252);
* :mod:`.target`: ``deploy/systemd/quantum-trader.target``;
* :mod:`.envfiles`: ``etc/quantum/common.env.example`` and ``etc/quantum/<name>.env.example``,
  from the keys :mod:`.settings` reads off the settings classes;
* :mod:`.launcher`: ``deploy/launcher.json``, the local supervisor's table;
* :mod:`.docs_streams`: ``docs/streams.md`` (payload tables from :mod:`.docs_fields`);
* :mod:`.docs_services`: ``docs/services.md``.

:mod:`.common` holds the paths, host layout and unit limits they share, :mod:`.docs_common`
the Markdown helpers and stream topology of both docs, :mod:`.files` the file set
(:func:`render`, :func:`check`, :func:`write`; generated files whose service left the
registry are reported by ``check`` and removed by ``write``) and :mod:`.cli` the command
line. This package re-exports the names callers used when it was a single module.
"""

from __future__ import annotations

from quantum.registry.generate.cli import main
from quantum.registry.generate.common import (
    COMMON_ENV_EXAMPLE,
    DO_NOT_EDIT,
    ENV_DIR,
    ENV_EXAMPLE_DIR,
    EXIT_BAD_CONFIG,
    GENERATED_BY,
    INSTALL_ROOT,
    LAUNCHER,
    OWNED_PATTERNS,
    PYTHON,
    REDIS_UNITS,
    RESTART_SECONDS,
    ROOT,
    SERVICES_DOC,
    START_LIMIT_BURST,
    START_LIMIT_INTERVAL_SECONDS,
    STATE_DIR,
    STREAMS_DOC,
    TARGET,
    UNIT_DIR,
    USER,
    WATCHDOG_SECONDS,
    GenerationError,
)
from quantum.registry.generate.docs_common import producers_of
from quantum.registry.generate.docs_fields import describe_type
from quantum.registry.generate.docs_services import render_services_doc
from quantum.registry.generate.docs_streams import render_streams_doc
from quantum.registry.generate.envfiles import render_common_env, render_service_env
from quantum.registry.generate.files import check, render, render_systemd, write
from quantum.registry.generate.launcher import render_launcher
from quantum.registry.generate.settings import (
    Setting,
    _is_secret,  # private, but tests/unit/test_registry.py checks secrets with it
    attribute_docs,
    settings_class,
    settings_of,
)
from quantum.registry.generate.target import render_target
from quantum.registry.generate.timers import render_timer, render_timer_service
from quantum.registry.generate.units import render_unit

__all__ = [
    "COMMON_ENV_EXAMPLE",
    "DO_NOT_EDIT",
    "ENV_DIR",
    "ENV_EXAMPLE_DIR",
    "EXIT_BAD_CONFIG",
    "GENERATED_BY",
    "INSTALL_ROOT",
    "LAUNCHER",
    "OWNED_PATTERNS",
    "PYTHON",
    "REDIS_UNITS",
    "RESTART_SECONDS",
    "ROOT",
    "SERVICES_DOC",
    "START_LIMIT_BURST",
    "START_LIMIT_INTERVAL_SECONDS",
    "STATE_DIR",
    "STREAMS_DOC",
    "TARGET",
    "UNIT_DIR",
    "USER",
    "WATCHDOG_SECONDS",
    "GenerationError",
    "Setting",
    "_is_secret",
    "attribute_docs",
    "check",
    "describe_type",
    "main",
    "producers_of",
    "render",
    "render_common_env",
    "render_launcher",
    "render_service_env",
    "render_services_doc",
    "render_streams_doc",
    "render_systemd",
    "render_target",
    "render_timer",
    "render_timer_service",
    "render_unit",
    "settings_class",
    "settings_of",
    "write",
]
