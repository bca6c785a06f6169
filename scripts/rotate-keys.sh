#!/usr/bin/env bash
# Rotate a secret in the fleet's env files without ever printing or passing it on a command
# line (argv is visible in `ps`).
#
#   scripts/rotate-keys.sh dashboard [--env-dir /etc/quantum] [--restart]
#       new random control and read tokens for the dashboard API (256 bits each)
#   BINANCE_NEW_API_KEY=… BINANCE_NEW_API_SECRET=… scripts/rotate-keys.sh binance [--env-dir …] [--restart]
#       new Binance API key and secret for execution and reconcile (from the environment)
#   QT_NEW_DATABASE_URL=… scripts/rotate-keys.sh database [--env-dir …] [--restart]
#       a new journal database URL (password change) for journal and dashboard-api
#
# Each env file is rewritten atomically (temp file, 0600, rename) keeping its other lines; the
# old file is kept as <file>.previous (0600) for a rollback. Only a SHA-256 fingerprint of a
# new value is printed. --restart restarts the affected units one by one
# (scripts/rolling-restart.sh). Revoke the old Binance key on the exchange afterwards.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
WHAT="${1:-}"
[ -n "$WHAT" ] || { sed -n '2,17p' "$0"; exit 2; }
shift
ENV_DIR="/etc/quantum"
RESTART=0
while [ $# -gt 0 ]; do
  case "$1" in
    --env-dir) ENV_DIR="$2"; shift 2 ;;
    --restart) RESTART=1; shift ;;
    *) echo "rotate-keys: unknown argument $1" >&2; exit 2 ;;
  esac
done

# set_keys FILE KEY=ENVVAR...: set each KEY to the value of the environment variable ENVVAR.
set_keys() {
  local file="$1"; shift
  "$PYTHON" - "$file" "$@" <<'PY'
import hashlib, os, sys, tempfile
path, pairs = sys.argv[1], [p.split("=", 1) for p in sys.argv[2:]]
values = {key: os.environ[variable] for key, variable in pairs}
lines = open(path).read().splitlines() if os.path.exists(path) else []
kept = [line for line in lines if line.split("=", 1)[0].strip() not in values]
text = "\n".join(kept + [f"{key}={value}" for key, value in values.items()]) + "\n"
directory = os.path.dirname(os.path.abspath(path))
os.makedirs(directory, exist_ok=True)
if os.path.exists(path):
    previous = path + ".previous"
    with open(path, "rb") as src, open(os.open(previous, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as dst:
        dst.write(src.read())
handle, temporary = tempfile.mkstemp(dir=directory, prefix=".rotate-")
with os.fdopen(handle, "w") as out:
    out.write(text)
os.chmod(temporary, 0o600)
os.replace(temporary, path)
for key, value in values.items():
    print(f"rotate-keys: {path}: {key} set (sha256 {hashlib.sha256(value.encode()).hexdigest()[:12]})")
PY
}

case "$WHAT" in
  dashboard)
    QT_NEW_CONTROL_TOKEN="$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))')"
    QT_NEW_READ_TOKEN="$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))')"
    export QT_NEW_CONTROL_TOKEN QT_NEW_READ_TOKEN
    set_keys "$ENV_DIR/dashboard-api.env" QT_CONTROL_TOKEN=QT_NEW_CONTROL_TOKEN QT_READ_TOKEN=QT_NEW_READ_TOKEN
    UNITS="dashboard-api"
    echo "rotate-keys: read the new tokens from $ENV_DIR/dashboard-api.env (root only)"
    ;;
  binance)
    : "${BINANCE_NEW_API_KEY:?set BINANCE_NEW_API_KEY in the environment}"
    : "${BINANCE_NEW_API_SECRET:?set BINANCE_NEW_API_SECRET in the environment}"
    for service in execution reconcile; do
      set_keys "$ENV_DIR/$service.env" QT_BINANCE_API_KEY=BINANCE_NEW_API_KEY QT_BINANCE_API_SECRET=BINANCE_NEW_API_SECRET
    done
    UNITS="reconcile execution"
    ;;
  database)
    : "${QT_NEW_DATABASE_URL:?set QT_NEW_DATABASE_URL in the environment}"
    for service in journal dashboard-api; do
      set_keys "$ENV_DIR/$service.env" QT_DATABASE_URL=QT_NEW_DATABASE_URL
    done
    UNITS="journal dashboard-api"
    ;;
  *) echo "rotate-keys: unknown secret '$WHAT' (dashboard, binance, database)" >&2; exit 2 ;;
esac

if [ "$RESTART" -eq 1 ]; then
  # shellcheck disable=SC2086
  "$ROOT/scripts/rolling-restart.sh" $UNITS
else
  echo "rotate-keys: restart to apply: scripts/rolling-restart.sh $UNITS"
fi
