"""A Debian bookworm machine booted with ``systemd-nspawn -b --private-network``.

The root is made once with mmdebstrap from the host's configured Debian mirror and cached
under ``/var/cache/quantum-nspawn/<hash of suite, mirror and package list>/root``; each
boot is ``--ephemeral`` (a throw-away copy), so a run starts from the clean root. Commands
run inside through ``nsenter`` into all of the container's namespaces, as an operator's
shell on the VPS would. The container has no network but its own loopback.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "redis-server",
            "procps", "iproute2", "ca-certificates")
CACHE = Path(os.environ.get("QT_NSPAWN_CACHE", "/var/cache/quantum-nspawn"))
BOOT_PATIENCE_SECONDS = 120.0
ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class MachineError(RuntimeError):
    pass


def host_mirror() -> str:
    """The Debian mirror this host's apt uses (the only one reachable here)."""
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d")
                                                         .glob("*"))]:
        if path.is_file():
            texts.append(path.read_text(errors="replace"))
    for text in texts:
        for match in re.finditer(r"(?:^deb\s+(?:\[[^]]*\]\s+)?|^URIs:\s*)(\S+)", text, re.M):
            uri = match.group(1)
            if "security" not in uri and uri.startswith(("http://", "https://")):
                return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def cannot_boot() -> str | None:
    """Why this host cannot boot a container (None when it can try)."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn, nsenter)"
    for tool in ("systemd-nspawn", "nsenter", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install systemd-container mmdebstrap)"
    return None


def root_dir() -> Path:
    mirror = host_mirror()
    key = hashlib.sha256("\n".join([SUITE, mirror, *PACKAGES]).encode()).hexdigest()[:16]
    return CACHE / key / "root"


def build_root() -> tuple[Path, float]:
    """The cached root (built when missing); and how long building took (0 when cached)."""
    root = root_dir()
    if (root.parent / ".complete").exists():
        return root, 0.0
    started = time.monotonic()
    shutil.rmtree(root.parent, ignore_errors=True)
    root.parent.mkdir(parents=True)
    subprocess.run(["mmdebstrap", "--quiet", "--variant=apt", "--include=" + ",".join(PACKAGES),
                    SUITE, str(root), host_mirror()], check=True)
    (root.parent / ".complete").write_text("\n".join(PACKAGES) + "\n")
    return root, time.monotonic() - started


class Machine:
    """One booted container; ``run`` executes inside it."""

    def __init__(self, root: Path, name: str, binds: dict[str, str], console: Path) -> None:
        self.name = name
        self.console = console
        command = ["systemd-nspawn", "--quiet", "--directory", str(root), "--ephemeral",
                   "--machine", name, "--boot", "--private-network", "--register=no",
                   "--keep-unit"]
        for host, inside in binds.items():
            command.append(f"--bind-ro={host}:{inside}")
        with console.open("wb") as out:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.leader = 0
        self.boot_seconds = 0.0

    def _find_leader(self) -> int:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == self.proc.pid:
                return int(entry.name)
        return 0

    def wait_booted(self) -> None:
        started = time.monotonic()
        deadline = started + BOOT_PATIENCE_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MachineError("systemd-nspawn exited "
                                   f"{self.proc.returncode}:\n{self.console.read_text()[-3000:]}")
            self.leader = self.leader or self._find_leader()
            if self.leader:
                state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
                if state in ("running", "degraded"):
                    self.boot_seconds = time.monotonic() - started
                    return
            time.sleep(0.2)
        raise MachineError(f"not booted within {BOOT_PATIENCE_SECONDS:.0f}s:\n"
                           + self.console.read_text()[-3000:])

    def run(self, command: list[str], check: bool = True, timeout: float = 600.0,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["nsenter", "--target", str(self.leader), "--all", "--", "/usr/bin/env", "-i",
             f"PATH={ENV_PATH}", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
             *command],
            capture_output=True, text=True, timeout=timeout, input=input_text)
        if check and done.returncode != 0:
            raise MachineError(f"{' '.join(command)} exited {done.returncode}:\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def sh(self, script: str, check: bool = True, timeout: float = 600.0) -> str:
        return self.run(["bash", "-c", script], check=check, timeout=timeout).stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(["systemctl", "show", unit, "-p", ",".join(props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def poweroff(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn asks the container's init to halt
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
