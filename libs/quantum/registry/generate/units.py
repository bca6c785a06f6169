"""The systemd units: ``deploy/systemd/quantum-<name>.service``, one per registered service.

Each runs ``python -m <module>`` as ``Type=notify`` with a watchdog, reads
``/etc/quantum/common.env`` then its own env file, and is sandboxed. Decisions, for
systemd 252 (Debian 12):

* Back-off: ``RestartSteps=``/``RestartMaxDelaySec=`` arrive in systemd 254, so 252 restarts
  after a fixed ``RestartSec=2``; the start limit (``StartLimitBurst`` starts within
  ``StartLimitIntervalSec``) turns a crash loop into a failed unit that alerts, instead of
  the thousands of restarts the audits found. Exit status 78 (bad config) is not restarted.
* ``MemoryDenyWriteExecute=yes`` everywhere: CPython, numpy (precompiled OpenBLAS kernels
  chosen at run time, no code generation), pydantic-core, orjson, hiredis, XGBoost and
  LightGBM (precompiled C++) never map memory writable and executable at once;
  ``tests/unit/test_systemd.py`` runs the fleet's imports and numpy (and XGBoost, LightGBM
  or torch when installed) under the kernel's equivalent ``PR_SET_MDWE``. torch's CPU
  kernels are different: oneDNN and fbgemm JIT-compile code into W+X pages, which this
  setting refuses with EPERM, so a torch model member needs the flag lifted for its service
  (a registry field, not an edit of the generated unit).
* ``SystemCallFilter=@system-service`` minus ``@privileged @resources`` with
  ``SystemCallErrorNumber=EPERM``: a denied call fails with an error the service can report
  rather than killing it with SIGSYS.
* ``ProcSubset=pid`` hides ``/proc/stat``; prometheus_client's process collector reads boot
  time from it and so exports no ``process_*`` metrics under these units.
* ``StateDirectory=quantum`` creates ``/var/lib/quantum`` owned by the service user before
  the sandbox is set up, so ``ReadWritePaths=/var/lib/quantum`` (models, journal) always
  exists; everything else is read-only (``ProtectSystem=strict``).
* Services with ``loopback_only`` get ``IPAddressDeny=any`` + ``IPAddressAllow=localhost``:
  they reach Redis and are scraped on loopback only. The others (Binance) keep the network.
"""

from __future__ import annotations

from quantum.registry.fleet import ServiceSpec
from quantum.registry.generate.common import (
    DO_NOT_EDIT,
    ENV_DIR,
    EXIT_BAD_CONFIG,
    GENERATED_BY,
    INSTALL_ROOT,
    PYTHON,
    REDIS_UNITS,
    RESTART_SECONDS,
    START_LIMIT_BURST,
    START_LIMIT_INTERVAL_SECONDS,
    STATE_DIR,
    STOP_TIMEOUT_SECONDS,
    TARGET,
    USER,
    WATCHDOG_SECONDS,
)


def _hardening(spec: ServiceSpec) -> list[str]:
    lines = [
        "# Sandbox: systemd-analyze security rates this unit 2.0 or lower (tested).",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "PrivateMounts=yes",
        "PrivateUsers=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "ProcSubset=pid",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "RemoveIPC=yes",
        "KeyringMode=private",
        "DevicePolicy=closed",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged @resources",
        "SystemCallErrorNumber=EPERM",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "UMask=0077",
        "StateDirectory=quantum",
        "StateDirectoryMode=0750",
        f"ReadWritePaths={STATE_DIR}",
    ]
    if spec.loopback_only:
        lines += [
            "# Loopback only: Redis and the metrics scrape are on this host.",
            "IPAddressDeny=any",
            "IPAddressAllow=localhost",
        ]
    else:
        lines.append("# Reaches the exchange: the network stays open, the sandbox does not.")
    return lines


def render_unit(spec: ServiceSpec) -> str:
    after = " ".join(
        ["network-online.target", REDIS_UNITS, *(f"quantum-{name}.service" for name in spec.after)]
    )
    lines = [
        f"# {GENERATED_BY}",
        f"# {DO_NOT_EDIT}",
        "[Unit]",
        f"Description=Quantum Trader {spec.name}: {spec.description}",
        f"Documentation=file:{INSTALL_ROOT}/docs/services.md",
        f"PartOf={TARGET}",
        "Wants=network-online.target",
        f"After={after}",
        "# No RestartSteps= before systemd 254: a fixed RestartSec and a start limit instead,",
        "# so a crash loop ends in a failed unit rather than endless restarts.",
        f"StartLimitIntervalSec={START_LIMIT_INTERVAL_SECONDS}",
        f"StartLimitBurst={START_LIMIT_BURST}",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"WatchdogSec={WATCHDOG_SECONDS}",
        f"User={USER}",
        f"Group={USER}",
        f"WorkingDirectory={INSTALL_ROOT}",
        f"EnvironmentFile={ENV_DIR}/common.env",
        f"EnvironmentFile={ENV_DIR}/{spec.env_file}",
        "Environment=PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1",
        f"ExecStart={PYTHON} -m {spec.module}",
        "Restart=on-failure",
        f"RestartSec={RESTART_SECONDS}",
        f"# Exit {EXIT_BAD_CONFIG} (EX_CONFIG) is a bad setting: restarting cannot fix it.",
        f"RestartPreventExitStatus={EXIT_BAD_CONFIG}",
        f"TimeoutStopSec={STOP_TIMEOUT_SECONDS}",
        f"MemoryMax={spec.memory_max}",
        *_hardening(spec),
        "",
        "[Install]",
        f"WantedBy={TARGET}",
    ]
    return "\n".join(lines) + "\n"
