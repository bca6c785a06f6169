"""Make a local PostgreSQL available for the journal's tests and benchmarks.

Order of attempts: the server answers already; start Debian's cluster
(``pg_ctlcluster --skip-systemctl-redirect <version> main start``); when no cluster exists
and we are root, install Debian's ``postgresql`` package, which creates and starts one. The
result says why when PostgreSQL cannot be had, so a test can skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN_URL_VARIABLE = "QT_TEST_POSTGRES_URL"


def admin_url() -> str:
    return os.environ.get(ADMIN_URL_VARIABLE, DEFAULT_ADMIN_URL)


def answers(url: str, timeout: int = 2) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": timeout})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


def _run(command: list[str], timeout: int) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(command[:3])}: {e}"
    if done.returncode != 0:
        return f"{' '.join(command[:3])} exited {done.returncode}: {done.stderr.strip()[-300:]}"
    return None


def _start_clusters() -> str | None:
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*") if p.is_dir())
    if not versions or shutil.which("pg_ctlcluster") is None:
        return "no PostgreSQL cluster in /etc/postgresql"
    return _run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], 60)


def _install() -> str | None:
    if os.geteuid() != 0:
        return "PostgreSQL is not installed and installing it needs root"
    if shutil.which("apt-get") is None:
        return "PostgreSQL is not installed and there is no apt-get"
    failure = _run(["apt-get", "install", "-y", "-q", "postgresql"], 600)
    if failure is not None:
        _run(["apt-get", "update", "-q"], 300)
        failure = _run(["apt-get", "install", "-y", "-q", "postgresql"], 600)
    return failure


def ensure(url: str | None = None, wait_s: float = 20.0) -> str | None:
    """``None`` when PostgreSQL at ``url`` answers (starting or installing it if needed),
    otherwise the reason it cannot be had."""
    url = url or admin_url()
    if answers(url):
        return None
    failure = _start_clusters()
    if failure is not None and not Path("/etc/postgresql").exists():
        failure = _install() or _start_clusters()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if answers(url):
            return None
        time.sleep(0.5)
    where = make_url(url).render_as_string()
    return f"PostgreSQL at {where} does not answer: {failure or 'timeout'}"


def create_database(url: str | None = None, prefix: str = "qt_journal") -> str:
    """Create a fresh database next to the admin one; returns its URL."""
    admin = make_url(url or admin_url())
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return admin.set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    target = make_url(url)
    admin = make_url(admin_url())
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
    finally:
        engine.dispose()
