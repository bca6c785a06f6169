"""The env file examples: ``etc/quantum/common.env.example`` and ``<name>.env.example``.

An operator installs them as ``/etc/quantum/*.env`` (mode 0600) and keeps only the lines
they change. Each key carries its description, and whether it is a secret, required or
unset by default; the values are the defaults, written so that systemd's
``EnvironmentFile=`` and pydantic-settings read them back equal (a test loads every example
and compares it with the defaults).
"""

from __future__ import annotations

import textwrap

from quantum.config import FleetSettings
from quantum.registry.fleet import ServiceSpec
from quantum.registry.generate.common import DO_NOT_EDIT, ENV_DIR, GENERATED_BY
from quantum.registry.generate.settings import Setting, settings_class, settings_of


def _env_lines(setting: Setting) -> list[str]:
    """Comment lines and the assignment; an unset key's assignment is commented out, because
    an empty value would be read as an empty string (or an empty secret), not as unset."""
    lines = [f"# {line}" for line in textwrap.wrap(setting.description, 86)]
    if setting.secret:
        lines.append("# secret: set on the host, never in git.")
    elif setting.required:
        lines.append("# required: the service refuses to start without it.")
    elif setting.unset:
        lines.append("# unset by default.")
    prefix = "#" if setting.unset else ""
    lines.append(f"{prefix}{setting.env_name}={setting.value}")
    return lines


def render_common_env() -> str:
    lines = [
        f"# {GENERATED_BY}",
        f"# {DO_NOT_EDIT}",
        "# Settings every service shares (quantum.config:FleetSettings). Install as",
        f"# {ENV_DIR}/common.env, mode 0600, owner root: systemd reads it before it drops",
        "# privileges. Keep only the lines you change; the others are the defaults.",
    ]
    for setting in settings_of(FleetSettings, inherited=True):
        lines += ["", *_env_lines(setting)]
    return "\n".join(lines) + "\n"


def render_service_env(spec: ServiceSpec) -> str:
    cls = settings_class(spec)
    lines = [
        f"# {GENERATED_BY}",
        f"# {DO_NOT_EDIT}",
        f"# {spec.name} settings ({spec.settings}), on top of common.env. Install as",
        f"# {ENV_DIR}/{spec.env_file}, mode 0600, owner root. Keep only the lines you change.",
    ]
    own = settings_of(cls, inherited=False)
    if not own:
        lines += ["", "# This service has no settings of its own."]
    for setting in own:
        lines += ["", *_env_lines(setting)]
    return "\n".join(lines) + "\n"
