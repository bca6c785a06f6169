"""The periodic jobs: ``deploy/systemd/quantum-<name>.timer`` and its oneshot service.

Each timer (``Persistent=yes``: a run missed while the host was down happens at boot)
starts a ``Type=oneshot`` service that runs ``python -m quantum.ctl timer run <name>``
(:mod:`quantum.ctl.timers`): the job, one JSON result line, and the success time in Redis.
The jobs read systemd (``systemctl show``) and unit files, so they keep a lighter sandbox
than the services: no ``PrivateUsers=`` or ``ProtectProc=`` (systemctl must reach PID 1
over D-Bus), the rest as strict. They are not part of the target: a timer is enabled on its
own (``timers.target``), and ``systemctl stop quantum-trader.target`` leaves it running.
"""

from __future__ import annotations

from quantum.registry.fleet import TimerSpec
from quantum.registry.generate.common import (
    DO_NOT_EDIT,
    ENV_DIR,
    GENERATED_BY,
    INSTALL_ROOT,
    PYTHON,
    STATE_DIR,
    USER,
)

JOB_TIMEOUT_SECONDS = 1800


def render_timer(spec: TimerSpec) -> str:
    lines = [
        f"# {GENERATED_BY}",
        f"# {DO_NOT_EDIT}",
        "[Unit]",
        f"Description=Quantum Trader timer {spec.name}: {spec.description}",
        f"Documentation=file:{INSTALL_ROOT}/docs/services.md",
        "",
        "[Timer]",
        f"OnCalendar={spec.on_calendar}",
        "Persistent=yes",
        "AccuracySec=1min",
        f"Unit={spec.unit}",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]
    return "\n".join(lines) + "\n"


def render_timer_service(spec: TimerSpec) -> str:
    env_files = [f"EnvironmentFile=-{ENV_DIR}/{name}" for name in spec.env_files]
    lines = [
        f"# {GENERATED_BY}",
        f"# {DO_NOT_EDIT}",
        "[Unit]",
        f"Description=Quantum Trader job {spec.name}: {spec.description}",
        f"Documentation=file:{INSTALL_ROOT}/docs/services.md",
        "After=network-online.target redis-server.service",
        "",
        "[Service]",
        "Type=oneshot",
        f"User={USER}",
        f"Group={USER}",
        f"WorkingDirectory={INSTALL_ROOT}",
        f"EnvironmentFile={ENV_DIR}/common.env",
        *env_files,
        "Environment=PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TZ=UTC",
        f"ExecStart={PYTHON} -m quantum.ctl timer run {spec.name}",
        f"TimeoutStartSec={JOB_TIMEOUT_SECONDS}",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "UMask=0077",
        "StateDirectory=quantum",
        "StateDirectoryMode=0750",
        f"ReadWritePaths={STATE_DIR}",
    ]
    return "\n".join(lines) + "\n"
