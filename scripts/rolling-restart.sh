#!/usr/bin/env bash
# Restart fleet services one at a time, each only when the previous one is healthy again.
#
#   scripts/rolling-restart.sh [SERVICE...]      (default: every service, downstream first)
#   env: QT_REDIS_URL (redis://127.0.0.1:6379/0), ROLLING_TIMEOUT (120 s), ROLLING_MAX_LAG (1000),
#        ROLLING_MODE (auto: systemd when it runs the units, else the local supervisor)
#
# For each service: `systemctl restart quantum-<name>` under systemd, or `quantumctl restart
# <name>` for a fleet run by the local supervisor (`quantumctl up`), then wait until its heartbeat key
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
QUANTUMCTL="${QUANTUMCTL:-$ROOT/.venv/bin/quantumctl}"
[ -x "$QUANTUMCTL" ] || QUANTUMCTL=quantumctl
MODE="${ROLLING_MODE:-auto}"
cd "$ROOT"
if [ "$MODE" = "auto" ]; then
  if [ -d /run/systemd/system ] && systemctl cat quantum-trader.target >/dev/null 2>&1; then
    MODE=systemd
  else
    MODE=local
  fi
fi
case "$MODE" in
  systemd|local) ;;
  *) echo "rolling-restart: ROLLING_MODE must be auto, systemd or local, not $MODE" >&2; exit 2 ;;
esac

if [ $# -gt 0 ]; then
  SERVICES=("$@")
else
  mapfile -t SERVICES < <("$PYTHON" - "$MODE" <<'PY'
import sys
from quantum.registry.fleet import SERVICES
flow = [s.name for s in SERVICES]
if sys.argv[1] == "local":  # only what the local supervisor runs
    from quantum.ctl.runstate import RunPaths, read_state
    state = read_state(RunPaths.from_environment()) or {}
    supervised = {s.get("name") for s in state.get("services", [])}
    flow = [name for name in flow if name in supervised]
print("\n".join(reversed(flow)))  # the registry lists the data flow; downstream first
PY
)
fi

for name in "${SERVICES[@]}"; do
  unit="quantum-$name.service"
  before="$("$PYTHON" -m quantum.dashboard.rollout pid "$name")"
  if [ "$MODE" = "systemd" ]; then
    echo "rolling-restart: $unit (pid ${before:-none})"
    systemctl restart "$unit"
  else
    echo "rolling-restart: $name under the local supervisor (pid ${before:-none})"
    "$QUANTUMCTL" restart "$name" --timeout "$TIMEOUT"
  fi
  if ! "$PYTHON" -m quantum.dashboard.rollout wait "$name" --previous-pid "${before:-0}" \
      --timeout "$TIMEOUT" --max-lag "$MAX_LAG"; then
    echo "rolling-restart: $name did not come back healthy; stopping here" >&2
    if [ "$MODE" = "systemd" ]; then
      systemctl status --no-pager "$unit" | tail -n 20 >&2 || true
    fi
    exit 1
  fi
done
"$ROOT/.venv/bin/quantumctl" verify --redis-url "$QT_REDIS_URL"
echo "rolling-restart: done"
