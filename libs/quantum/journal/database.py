"""The journal database: where it is, the engine, its migrations, and a reachability probe.

SQLite by default (``var/journal.sqlite`` under the working directory, or
``$STATE_DIRECTORY/journal.sqlite`` under systemd), PostgreSQL when
``QT_DATABASE_URL`` names one (``postgresql+psycopg://user@host:5432/db``; a plain
``postgresql://`` URL is taken to mean the psycopg 3 driver). The schema is owned by Alembic:
:func:`upgrade` runs the migrations in ``migrations/`` to head, so the journal service, the
dashboard and an operator's ``python -m quantum.journal upgrade`` all converge on one schema.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

DEFAULT_SQLITE_PATH = Path("var") / "journal.sqlite"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
CONNECT_TIMEOUT_SECONDS = 3

# The errors that mean "the database cannot be reached or used right now" (as opposed to a
# bug in a row): the journal then leaves its entries pending and reports itself unhealthy.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (OperationalError, DBAPIError, OSError)


def resolve_url(configured: str) -> str:
    """The SQLAlchemy URL to use: ``configured``, or the default SQLite file — in systemd's
    ``$STATE_DIRECTORY`` (``/var/lib/quantum``, the one writable place under the units'
    ``ProtectSystem=strict``) when it is set, else ``var/`` under the working directory."""
    if not configured:
        state_directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        if state_directory:
            return f"sqlite:///{Path(state_directory) / DEFAULT_SQLITE_PATH.name}"
        return f"sqlite:///{DEFAULT_SQLITE_PATH}"
    if configured.startswith("postgresql://") or configured.startswith("postgres://"):
        return "postgresql+psycopg://" + configured.split("://", 1)[1]
    return configured


def redact(url: str) -> str:
    """The URL with its password hidden, for logs and health output."""
    return make_url(url).render_as_string(hide_password=True)


def backend(url: str) -> str:
    """``sqlite`` or ``postgresql`` (the dialect name)."""
    return make_url(url).get_backend_name()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the dashboard read while the journal writes; NORMAL sync is durable in WAL
    mode across process crashes (only an OS crash can lose the last transactions)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``url``; creates the SQLite file's directory when missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": CONNECT_TIMEOUT_SECONDS})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )


def alembic_config(url: str) -> Config:
    """An Alembic configuration for ``url`` without an ``alembic.ini`` on disk."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (idempotent: a current schema is left as is)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def probe(engine: Engine) -> str | None:
    """``None`` when the database answers ``SELECT 1``; otherwise why not (one line)."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except UNAVAILABLE_ERRORS as e:
        return _one_line(e)
    return None


def _one_line(error: BaseException) -> str:
    message = str(getattr(error, "orig", None) or error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}"[:300]
