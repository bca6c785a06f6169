#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh.
#
#   scripts/restore.sh BACKUP_DIR [--database-url URL] [--models DIR] [--redis-url URL] [--force]
#
# Checks the SHA-256 sums first. Refuses while any fleet service has a heartbeat (stop the
# fleet first: `systemctl stop quantum-trader.target`, or `quantumctl down`) unless --force.
# SQLite: the current file is kept beside it as *.before-restore-<time>; PostgreSQL:
# `pg_restore --clean --if-exists` into the configured database. Models: the current
# directory is moved aside the same way. Finally the journal schema is migrated to head, so
# an older backup opens with today's code. Fleet state (state.json, when the backup has it):
# the registry's declared state keys are replaced by the backup's in one transaction (ESS,
# policy and its history, portfolio, execution book …); nothing else in Redis is touched.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
SOURCE="${1:-}"
[ -n "$SOURCE" ] && [ "${SOURCE#-}" = "$SOURCE" ] || { sed -n '2,4p' "$0"; exit 2; }
shift
DATABASE_URL="${QT_DATABASE_URL:-}"
MODELS="$ROOT/models"
REDIS_URL="${QT_REDIS_URL:-redis://127.0.0.1:6379/0}"
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --database-url) DATABASE_URL="$2"; shift 2 ;;
    --models) MODELS="$2"; shift 2 ;;
    --redis-url) REDIS_URL="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    *) echo "restore: unknown argument $1" >&2; exit 2 ;;
  esac
done

SOURCE="$(cd "$SOURCE" && pwd)"
[ -f "$SOURCE/SHA256SUMS" ] || { echo "restore: $SOURCE has no SHA256SUMS (incomplete backup?)" >&2; exit 1; }
(cd "$SOURCE" && sha256sum --check --quiet SHA256SUMS) || { echo "restore: checksum mismatch" >&2; exit 1; }
cd "$ROOT"

if [ -f "$SOURCE/state.json" ] && ! "$PYTHON" -m quantum.ctl.statebackup live --redis-url "$REDIS_URL" >/dev/null; then
  echo "restore: the backup holds fleet state but Redis (--redis-url) does not answer" >&2; exit 1
fi
if [ "$FORCE" -eq 0 ]; then
  ALIVE="$("$PYTHON" -m quantum.ctl.statebackup live --redis-url "$REDIS_URL" 2>/dev/null | paste -sd, -)" || ALIVE=""
  if [ -n "$ALIVE" ]; then
    echo "restore: the fleet is running ($ALIVE have a heartbeat); stop it first (or --force)" >&2; exit 1
  fi
fi

URL="$("$PYTHON" -c 'import sys; from quantum.journal.database import resolve_url; print(resolve_url(sys.argv[1]))' "$DATABASE_URL")"
BACKEND="$("$PYTHON" -c 'import sys; from quantum.journal.database import backend; print(backend(sys.argv[1]))' "$URL")"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"

if [ "$BACKEND" = "sqlite" ]; then
  [ -f "$SOURCE/journal.sqlite" ] || { echo "restore: the backup holds no SQLite journal" >&2; exit 1; }
  TARGET="$("$PYTHON" -c 'import sys; from sqlalchemy.engine import make_url; print(make_url(sys.argv[1]).database)' "$URL")"
  mkdir -p "$(dirname "$TARGET")"
  if [ -f "$TARGET" ]; then
    mv "$TARGET" "$TARGET.before-restore-$STAMP"
    rm -f "$TARGET-wal" "$TARGET-shm"
  fi
  cp "$SOURCE/journal.sqlite" "$TARGET"
  echo "restore: journal -> $TARGET"
else
  [ -f "$SOURCE/journal.pgdump" ] || { echo "restore: the backup holds no PostgreSQL dump" >&2; exit 1; }
  LIBPQ_URL="${URL/postgresql+psycopg:/postgresql:}"
  pg_restore --clean --if-exists --no-owner --single-transaction --dbname="$LIBPQ_URL" "$SOURCE/journal.pgdump"
  echo "restore: journal -> PostgreSQL"
fi
"$PYTHON" -m quantum.journal upgrade --url "$URL"

if [ -f "$SOURCE/models.tar.gz" ]; then
  if [ -d "$MODELS" ]; then
    mv "$MODELS" "$MODELS.before-restore-$STAMP"
  fi
  mkdir -p "$MODELS"
  tar -xzf "$SOURCE/models.tar.gz" -C "$MODELS" --strip-components=1
  echo "restore: models -> $MODELS"
fi
if [ -f "$SOURCE/state.json" ]; then
  echo "restore: fleet state $("$PYTHON" -m quantum.ctl.statebackup load "$SOURCE/state.json" --redis-url "$REDIS_URL")"
fi
echo "restore: done; start the fleet again and check: quantumctl status"
