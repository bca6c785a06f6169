#!/usr/bin/env bash
# Back up the trade journal, the model registry and the fleet's state into one directory.
#
#   scripts/backup.sh [--out DIR] [--database-url URL] [--models DIR] [--redis-url URL]
#
# Journal: SQLite is copied with SQLite's online backup API (consistent while the journal
# writes; no service stop needed) and integrity-checked; PostgreSQL is dumped with
# `pg_dump --format=custom`. Models: a tar of the models directory. Fleet state (with
# --redis-url or QT_REDIS_URL): the state keys the registry declares — ESS and its audit,
# policy and its history, portfolio, execution book, every service's state — as
# state.json (python -m quantum.ctl.statebackup), not the whole Redis. A manifest (what, when, schema revision) and SHA-256 sums are written last, so a
# directory without SHA256SUMS is an interrupted backup. Restore with scripts/restore.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
OUT=""
DATABASE_URL="${QT_DATABASE_URL:-}"
MODELS="$ROOT/models"
REDIS_URL="${QT_REDIS_URL:-}"

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --database-url) DATABASE_URL="$2"; shift 2 ;;
    --models) MODELS="$2"; shift 2 ;;
    --redis-url) REDIS_URL="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "backup: unknown argument $1" >&2; exit 2 ;;
  esac
done

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT:-$ROOT/var/backups/$STAMP}"
mkdir -p "$OUT"
chmod 700 "$OUT"
cd "$ROOT"
URL="$("$PYTHON" -c 'import sys; from quantum.journal.database import resolve_url; print(resolve_url(sys.argv[1]))' "$DATABASE_URL")"
BACKEND="$("$PYTHON" -c 'import sys; from quantum.journal.database import backend; print(backend(sys.argv[1]))' "$URL")"

echo "backup: journal ($BACKEND) -> $OUT"
if [ "$BACKEND" = "sqlite" ]; then
  "$PYTHON" - "$URL" "$OUT/journal.sqlite" <<'PY'
import sqlite3, sys
from sqlalchemy.engine import make_url
source = make_url(sys.argv[1]).database
with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(sys.argv[2]) as dst:
    src.backup(dst)
    status = dst.execute("PRAGMA integrity_check").fetchone()[0]
if status != "ok":
    sys.exit(f"backup: integrity check of the copy failed: {status}")
PY
elif [ "$BACKEND" = "postgresql" ]; then
  LIBPQ_URL="${URL/postgresql+psycopg:/postgresql:}"
  pg_dump --format=custom --no-owner --file="$OUT/journal.pgdump" "$LIBPQ_URL"
else
  echo "backup: unsupported journal backend $BACKEND" >&2; exit 1
fi
REVISION="$("$PYTHON" -m quantum.journal current --url "$URL" | awk '{print $NF}')"

if [ -d "$MODELS" ]; then
  echo "backup: models $MODELS"
  tar -czf "$OUT/models.tar.gz" -C "$(dirname "$MODELS")" "$(basename "$MODELS")"
fi
if [ -n "$REDIS_URL" ]; then
  echo "backup: fleet state $("$PYTHON" -m quantum.ctl.statebackup dump "$OUT/state.json" --redis-url "$REDIS_URL")"
else
  echo "backup: no --redis-url (or QT_REDIS_URL): the fleet state is not in this backup" >&2
fi

"$PYTHON" - "$OUT" "$BACKEND" "$REVISION" "$STAMP" <<'PY'
import json, os, sys
out, backend, revision, stamp = sys.argv[1:5]
files = sorted(f for f in os.listdir(out) if f not in ("manifest.json", "SHA256SUMS"))
manifest = {"created_at": stamp, "journal_backend": backend, "journal_revision": revision,
            "files": files}
with open(os.path.join(out, "manifest.json"), "w") as handle:
    json.dump(manifest, handle, indent=2)
PY
(cd "$OUT" && sha256sum -- * > SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)
chmod 600 "$OUT"/*
echo "backup: done $OUT"
