"""journal settings: where the journal database is."""

from __future__ import annotations

from pydantic import Field

from quantum.config import FleetSettings, SecretStr


class Settings(FleetSettings):
    """Attributes:
    database_url: SQLAlchemy URL of the journal; empty = SQLite: journal.sqlite in systemd's
        STATE_DIRECTORY (/var/lib/quantum), else var/journal.sqlite under the working
        directory. postgresql://user:password@host:5432/db selects PostgreSQL (psycopg 3).
        A secret: it may hold a password.
    database_retry_s: while the database is unreachable, how often to try it again; no
        entry is read (they wait, pending or unread, in the streams) until it answers.
    """

    database_url: SecretStr = SecretStr("")
    database_retry_s: float = Field(1.0, gt=0, le=60)
