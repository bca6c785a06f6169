#!/usr/bin/env bash
# Restart fleet services one at a time, each only when the previous one is healthy again.
#
#   scripts/rolling-restart.sh [SERVICE...]      (default: every service, downstream first)
#   env: QT_REDIS_URL (redis://127.0.0.1:6379/0), ROLLING_TIMEOUT (120 s), ROLLING_MAX_LAG (1000)
#
# For each service: `systemctl restart quantum-<name>`, then wait until its heartbeat key
# shows a new pid and every consumer group of the service is back under ROLLING_MAX_LAG
# entries; stop at the first service that does not come back (the rest keep running on the
# old code, which is the safe state to inspect). Nothing is lost while a consumer restarts:
# its entries wait in the streams and pending entries are reclaimed. Order: consumers nearest
# the exchange first (exit-brain, execution …) so exits keep working, entry path last, and the
# risk-governor never at the same time as the apply-layer (no orders are approved while it
# is down; fail closed). Ends with `quantumctl verify`.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
export QT_REDIS_URL="${QT_REDIS_URL:-redis://127.0.0.1:6379/0}"
TIMEOUT="${ROLLING_TIMEOUT:-120}"
MAX_LAG="${ROLLING_MAX_LAG:-1000}"
cd "$ROOT"

if [ $# -gt 0 ]; then
  SERVICES=("$@")
else
  mapfile -t SERVICES < <("$PYTHON" - <<'PY'
from quantum.registry.fleet import SERVICES
flow = [s.name for s in SERVICES]
print("\n".join(reversed(flow)))  # the registry lists the data flow; downstream first
PY
)
fi

for name in "${SERVICES[@]}"; do
  unit="quantum-$name.service"
  before="$("$PYTHON" -m quantum.dashboard.rollout pid "$name")"
  echo "rolling-restart: $unit (pid ${before:-none})"
  systemctl restart "$unit"
  if ! "$PYTHON" -m quantum.dashboard.rollout wait "$name" --previous-pid "${before:-0}" \
      --timeout "$TIMEOUT" --max-lag "$MAX_LAG"; then
    echo "rolling-restart: $name did not come back healthy; stopping here" >&2
    systemctl status --no-pager "$unit" | tail -n 20 >&2 || true
    exit 1
  fi
done
"$ROOT/.venv/bin/quantumctl" verify --redis-url "$QT_REDIS_URL"
echo "rolling-restart: done"
