"""The service reference: ``docs/services.md``.

One table of every registered service (module, port, required, streams), the settings all
services share, then a section per service: its unit and env file, limits, the streams it
consumes (with their producers), inspects and produces, the state keys it owns and its
settings table. It closes with what the units' hardening means for a service and how to
install the fleet on a host. Everything comes from the registry, the settings classes and
the constants the units are rendered with, so the doc describes the units as written.
"""

from __future__ import annotations

from collections.abc import Sequence

from quantum.config import FleetSettings
from quantum.registry.fleet import TIMERS, TIMERS_KEY, ServiceSpec
from quantum.registry.generate.common import (
    DO_NOT_EDIT,
    ENV_DIR,
    EXIT_BAD_CONFIG,
    GENERATED_BY,
    INSTALL_ROOT,
    RESTART_SECONDS,
    START_LIMIT_BURST,
    START_LIMIT_INTERVAL_SECONDS,
    STATE_DIR,
    TARGET,
    USER,
    WATCHDOG_SECONDS,
)
from quantum.registry.generate.docs_common import anchor, cell, producers_of
from quantum.registry.generate.settings import Setting, settings_class, settings_of


def _settings_table(settings: Sequence[Setting]) -> list[str]:
    rows = ["| key | default | description |", "| --- | --- | --- |"]
    for setting in settings:
        if setting.secret:
            default = "secret, empty"
        elif setting.required:
            default = "required"
        elif setting.unset:
            default = "unset"
        else:
            default = f"`{setting.value}`" if setting.value else "empty"
        rows.append(f"| `{setting.env_name}` | {cell(default)} | {cell(setting.description)} |")
    return rows


def render_services_doc(services: Sequence[ServiceSpec]) -> str:
    producer_of = producers_of(services)
    lines = [
        "# Services",
        "",
        f"{GENERATED_BY} {DO_NOT_EDIT}",
        "",
        "Each runs as `python -m <module>` under `deploy/systemd/quantum-<name>.service`",
        f"(grouped by `{TARGET}`) or under the local launcher (`deploy/launcher.json`), reads",
        f"`{ENV_DIR}/common.env` then `{ENV_DIR}/<name>.env` (examples in `etc/quantum/`),",
        "and consumes with the consumer group named after itself.",
        "",
        "| service | module | port | required | consumes | produces |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for spec in services:
        consumes = ", ".join(s.name for s in spec.consumes) or "—"
        produces = ", ".join(s.name for s in spec.produces) or "—"
        lines.append(
            f"| [{spec.name}](#{anchor(spec.name)}) | `{spec.module}` | {spec.port} | "
            f"{'yes' if spec.required else 'no'} | {consumes} | {produces} |"
        )
    lines += [
        "",
        "## Settings every service shares",
        "",
        f"`quantum.config:FleetSettings`, in `{ENV_DIR}/common.env`.",
        "",
        *_settings_table(settings_of(FleetSettings, inherited=True)),
    ]
    for spec in services:
        lines += ["", *_service_section(spec, producer_of)]
    lines += ["", *_hardening_section(), "", *_two_hosts_section(), "", *_timers_section(), "",
              *_install_section()]
    return "\n".join(lines) + "\n"


_PLACEMENT = {
    "active-standby": "active-standby (one instance holds `quantum:lease:<name>` and works; "
                      "the other takes over when its lease lapses)",
    "both": "both hosts at once (it keeps no order-sensitive state)",
}


def _service_section(spec: ServiceSpec, producer_of: dict[str, str]) -> list[str]:
    network = "loopback only" if spec.loopback_only else "open (reaches the exchange)"
    required = "yes: trading stops when its heartbeat is missing" if spec.required else "no"
    lines = [
        f"## {spec.name}",
        "",
        f"{spec.description}.",
        "",
        f"- module: `{spec.module}` (settings `{spec.settings}`)",
        f"- unit: `{spec.unit}`, env file `{ENV_DIR}/{spec.env_file}`",
        f"- port: {spec.port}",
        f"- required: {required}",
        f"- memory: `MemoryMax={spec.memory_max}`; network: {network}",
        f"- runs in replay: {'yes' if spec.replay else 'no'}",
        f"- on two hosts: {_PLACEMENT[spec.placement]}",
        *_stream_lines(spec, producer_of),
    ]
    keys = ", ".join(f"`{key}`" for key in spec.state_keys) or "none"
    lines += [f"- state keys owned: {keys}", ""]
    own = settings_of(settings_class(spec), inherited=False)
    if own:
        lines += [f"Settings (`{ENV_DIR}/{spec.env_file}`):", "", *_settings_table(own)]
    else:
        lines.append("No settings of its own.")
    return lines


def _stream_lines(spec: ServiceSpec, producer_of: dict[str, str]) -> list[str]:
    """The service's consumed (with their producers), inspected and produced streams."""
    lines: list[str] = []
    if spec.consumes:
        lines.append(f"- consumes (group `{spec.group}`):")
        lines += [
            f"  - `{s.name}` from {producer_of.get(s.name, 'no producer')}" for s in spec.consumes
        ]
    else:
        lines.append("- consumes: nothing")
    if spec.inspects:
        lines.append("- inspects (no group): " + ", ".join(f"`{s.name}`" for s in spec.inspects))
    if spec.produces:
        lines.append("- produces: " + ", ".join(f"`{s.name}`" for s in spec.produces))
    else:
        lines.append("- produces: nothing")
    return lines


def _hardening_section() -> list[str]:
    return [
        "## Unit hardening",
        "",
        f"Every unit runs as the `{USER}` user with `Type=notify` and a {WATCHDOG_SECONDS} s",
        f"watchdog, restarts on failure after {RESTART_SECONDS} s within a start limit",
        f"({START_LIMIT_BURST} starts in {START_LIMIT_INTERVAL_SECONDS} s; systemd 252 has no",
        f"restart back-off), never restarts on exit {EXIT_BAD_CONFIG} (bad config), and is",
        "sandboxed so that `systemd-analyze security` rates it 2.0 or lower (tested).",
        "`MemoryDenyWriteExecute=yes`: numpy runs under it (tested with the kernel's",
        "`PR_SET_MDWE`, as are XGBoost and LightGBM when installed; both are precompiled,",
        "without JIT); torch's oneDNN/fbgemm JIT kernels need writable executable memory, so",
        "a torch member needs the flag lifted for its service. `ProcSubset=pid` hides",
        "`/proc/stat`, so prometheus_client exports no `process_*` metrics. The only writable",
        f"path is `{STATE_DIR}`. Loopback-only services may talk to localhost only",
        "(`IPAddressAllow=localhost`): Redis and the Prometheus scraper must be on the host.",
    ]


def _two_hosts_section() -> list[str]:
    return [
        "## Two hosts",
        "",
        "Install the same units and env files on a primary and a standby host (Redis behind",
        "Sentinel, `deploy/redis/`). `QT_INSTANCE` is empty by default, so each host's",
        "consumers are named `<service>-<hostname>`. An `active-standby` service holds its",
        "lease `quantum:lease:<service>` on one host; only that instance reads, runs its",
        "timers and commits (the commit script refuses any other: `NOTLEADER`), and only it",
        "writes `quantum:heartbeat:<service>`; the other beats in `quantum:standby:<service>`.",
        "When the active instance's lease lapses (`QT_HEARTBEAT_TTL_S`: its host is gone, it",
        "hangs, or it is cut off), the standby takes the lease within a second, restores the",
        "state and claims every entry the old one left pending at once; a clean stop",
        "releases the lease, so a planned switch-over takes about a second. A process killed",
        "on its own host takes its own lease back at once when systemd restarts it.",
        "`quantumctl status` shows which host holds each service.",
    ]


def _timers_section() -> list[str]:
    lines = [
        "## Timers",
        "",
        "Periodic jobs, each a `quantum-<name>.timer` (`Persistent=yes`) starting a oneshot",
        "`quantum-<name>.service` that runs `python -m quantum.ctl timer run <name>`: the job,",
        "one JSON `timer_result` line in the journal, and its result in "
        f"`{TIMERS_KEY}` (hash),",
        "exported by the dashboard as `quantum_timer_last_success_timestamp_seconds{timer=…}`",
        "beside `quantum_timer_period_seconds`; `QuantumTimerNotSucceeding` fires when the",
        "last success is older than twice the period. `quantumctl status` shows each timer's",
        "last and next run and flags one that never ran. Reconcile has no timer: the service",
        "compares continuously.",
        "",
        "| timer | schedule (`OnCalendar=`) | period | env files | does |",
        "| --- | --- | --- | --- | --- |",
    ]
    for timer in TIMERS:
        env_files = ", ".join(f"`{name}`" for name in ("common.env", *timer.env_files))
        lines.append(f"| `{timer.timer}` | `{timer.on_calendar}` | {timer.period_seconds} s | "
                     f"{env_files} | {cell(timer.description)} |")
    return lines


def _install_section() -> list[str]:
    return [
        "## Installing on a host",
        "",
        "One command, as root, from a checkout (Debian 12; idempotent):",
        "",
        "```sh",
        "scripts/install.sh            # --wheels DIR installs offline; --extras ml,rl; --start",
        "scripts/install.sh --uninstall   # --purge also removes edited env files, state, user",
        "```",
        "",
        f"It creates the `{USER}` system user, copies the checkout to `{INSTALL_ROOT}` with "
        "its venv in `.venv` (the project and its base dependencies: every service starts on "
        "them, tested), writes "
        f"`{ENV_DIR}/<name>.env` from `etc/quantum/*.env.example` (0600, root; an existing "
        "file is never overwritten), installs the units, the target, the timers (enabled and "
        "started) and the journald drop-in "
        "(`deploy/journald/quantum.conf`: a persistent journal capped at 1 GB and 30 days, "
        "20,000 lines per unit per 30 s), Redis with `deploy/redis/redis.conf`, runs "
        f"`systemctl daemon-reload` and enables `{TARGET}`. `--init` initialises a new fleet "
        "(`quantumctl init`) on first install only. Its steps, by hand:",
        "",
        "```sh",
        f"useradd --system --home-dir {STATE_DIR} --shell /usr/sbin/nologin {USER}",
        f"{INSTALL_ROOT}/.venv/bin/pip install {INSTALL_ROOT}",
        f"install -d -m 0755 {ENV_DIR}",
        "for f in etc/quantum/*.env.example; do",
        f'  target="{ENV_DIR}/$(basename "$f" .example)"',
        '  [ -e "$target" ] || install -m 0600 -o root "$f" "$target"; done',
        "install -m 0644 deploy/systemd/* /etc/systemd/system/",
        "install -D -m 0644 deploy/journald/quantum.conf "
        "/etc/systemd/journald.conf.d/quantum.conf",
        f"systemctl daemon-reload && systemctl enable --now {TARGET}",
        "```",
        "",
        "On the VPS, check what a container could not: `systemd-analyze security "
        "quantum-<name>` (2.0 or lower), `systemctl show -p IPAddressDeny,MemoryMax "
        "quantum-<name>` and that the host has cgroup v2 (`stat -fc %T /sys/fs/cgroup` prints "
        "`cgroup2fs`), without which systemd accepts `IPAddressDeny=` and `MemoryMax=` "
        "silently and enforces neither.",
    ]
