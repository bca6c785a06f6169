#!/usr/bin/env bash
# Install the fleet on a systemd host (Debian 12), as docs/services.md describes; idempotent.
#
#   scripts/install.sh [--prefix DIR] [--wheels DIR] [--extras ml,rl] [--no-redis] [--no-enable]
#                      [--bus-hosts ADDR,ADDR,...] [--init] [--start]
#   scripts/install.sh --uninstall [--purge]
#
# It creates the `quantum` system user; copies the checkout to PREFIX (default
# /opt/quantum-trader, the path the units use) unless it already is PREFIX; makes the venv
# PREFIX/.venv with the project and its base dependencies (from PyPI, or offline from a
# wheelhouse with --wheels); writes /etc/quantum/<name>.env from the examples (0600, root;
# an existing file is never overwritten); installs the units, the target, any timers and
# the journald drop-in; installs Redis's shipped configuration (deploy/redis/redis.conf as
# /etc/redis/quantum.conf, included from /etc/redis/redis.conf) and restarts it; then
# `systemctl daemon-reload`, enables the target (started with --start) and enables and
# starts the timers (--no-enable does neither). --init runs
# `quantumctl init` (a NEW fleet on this Redis: never after a Redis that lost its state,
# see docs/RUNBOOK.md). --bus-hosts gives the addresses of a replicated bus's Redis and
# Sentinel hosts (deploy/redis/README.md): a drop-in for every quantum-*.service
# (quantum-.service.d/bus-hosts.conf) lets the loopback-only units reach them too.
#
# --uninstall stops and disables the fleet and removes what the install added: units,
# target, timers, drop-in, Redis include, PREFIX (when the install made it), and env files
# still equal to their example. Env files an operator edited, /var/lib/quantum (journal,
# models) and the user stay unless --purge is given.
set -euo pipefail

SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt/quantum-trader
WHEELS=""
EXTRAS=""
REDIS=1
ENABLE=1
START=0
INIT=0
UNINSTALL=0
PURGE=0
BUS_HOSTS=""
PYTHON="${PYTHON:-python3}"
ETC=/etc/quantum
UNIT_DIR=/etc/systemd/system
JOURNALD_DIR=/etc/systemd/journald.conf.d
REDIS_CONF=/etc/redis/redis.conf
REDIS_INCLUDE="include /etc/redis/quantum.conf"
MARK=.installed-by-quantum-install   # in PREFIX: the install made this copy
BUS_DROPIN="$UNIT_DIR/quantum-.service.d/bus-hosts.conf"  # every quantum-*.service

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --wheels) WHEELS="${2:?--wheels needs a directory}"; shift 2 ;;
    --extras) EXTRAS="${2:?--extras needs a list, e.g. ml,rl}"; shift 2 ;;
    --no-redis) REDIS=0; shift ;;
    --no-enable) ENABLE=0; shift ;;
    --start) START=1; shift ;;
    --init) INIT=1; shift ;;
    --bus-hosts) BUS_HOSTS="${2:?--bus-hosts needs addresses, e.g. 10.0.0.11,10.0.0.12}"
                 shift 2 ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root"
command -v systemctl >/dev/null || die "systemctl not found: this installs systemd units"

units() { ls "$SOURCE"/deploy/systemd/ | grep -E '\.(service|target|timer)$'; }

uninstall() {
  local unit
  systemctl disable --now quantum-trader.target >/dev/null 2>&1 || true
  for unit in $(units); do
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
    rm -f "$UNIT_DIR/$unit"
  done
  rm -f "$JOURNALD_DIR/quantum.conf" "$BUS_DROPIN"
  rmdir "$(dirname "$BUS_DROPIN")" 2>/dev/null || true
  if [ -f "$REDIS_CONF" ] && grep -qxF "$REDIS_INCLUDE" "$REDIS_CONF"; then
    sed -i "\\|^${REDIS_INCLUDE}\$|d" "$REDIS_CONF"
    rm -f /etc/redis/quantum.conf
    systemctl try-restart redis-server.service >/dev/null 2>&1 || true
  fi
  if [ -f "$PREFIX/$MARK" ]; then rm -rf "$PREFIX"; fi
  if [ -d "$ETC" ]; then
    local f example
    for f in "$ETC"/*.env; do
      [ -e "$f" ] || continue
      example="$SOURCE/etc/quantum/$(basename "$f").example"
      if [ "$PURGE" = 1 ] || { [ -f "$example" ] && cmp -s "$f" "$example"; }; then
        rm -f "$f"
      else
        say "kept $f (edited; --purge removes it)"
      fi
    done
    rmdir "$ETC" 2>/dev/null || true
  fi
  if [ "$PURGE" = 1 ]; then
    rm -rf /var/lib/quantum
    if id quantum >/dev/null 2>&1; then userdel quantum; fi
  fi
  systemctl daemon-reload
  systemctl restart systemd-journald.service >/dev/null 2>&1 || true
  say "uninstalled"
}

if [ "$UNINSTALL" = 1 ]; then uninstall; exit 0; fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "Python 3.11 or newer is required ($PYTHON)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "$PYTHON lacks venv: apt-get install python3-venv"
[ -z "$WHEELS" ] || [ -d "$WHEELS" ] || die "--wheels $WHEELS: no such directory"
for address in ${BUS_HOSTS//,/ }; do  # IPAddressAllow= takes addresses, not names
  [[ "$address" =~ ^[0-9A-Fa-f.:]+(/[0-9]{1,3})?$ ]] \
    || die "--bus-hosts: $address is not an IP address or prefix"
done

# 1. the user the units run as
if ! id quantum >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/quantum --no-create-home --shell /usr/sbin/nologin quantum
  say "created user quantum"
fi

# 2. the code at the path the units use
if [ "$(cd "$SOURCE" && pwd -P)" != "$(mkdir -p "$PREFIX" && cd "$PREFIX" && pwd -P)" ]; then
  tar -C "$SOURCE" --exclude=./.venv --exclude=./.git --exclude=./var --exclude=./reports \
      --exclude='__pycache__' --exclude='*.egg-info' --exclude=./build -cf - . \
    | tar -C "$PREFIX" -xf -
  touch "$PREFIX/$MARK"
fi
chown -R root:root "$PREFIX"
chmod -R go-w "$PREFIX"

# 3. the venv: the project and its base dependencies (the extras on request)
if [ ! -x "$PREFIX/.venv/bin/python" ]; then "$PYTHON" -m venv "$PREFIX/.venv"; fi
pip_args=(-q --disable-pip-version-check)
if [ -n "$WHEELS" ]; then pip_args+=(--no-index --find-links "$WHEELS"); fi
# A build in a copy: the installed tree is never written to by the build.
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
tar -C "$PREFIX" -cf - pyproject.toml README.md libs services | tar -C "$build" -xf -
target="$build"
if [ -n "$EXTRAS" ]; then target="$build[$EXTRAS]"; fi
"$PREFIX/.venv/bin/python" -m pip install "${pip_args[@]}" "$target"
"$PREFIX/.venv/bin/python" - <<'EOF' || die "the venv cannot import the fleet's modules"
import importlib
from quantum.registry.fleet import SERVICES
for spec in SERVICES:
    importlib.import_module(spec.module + ".__main__")
EOF
chmod -R go-w "$PREFIX/.venv"

# 4. configuration: one env file per service, never overwriting an operator's
install -d -m 0755 -o root -g root "$ETC"
for example in "$SOURCE"/etc/quantum/*.env.example; do
  env_file="$ETC/$(basename "$example" .example)"
  if [ ! -e "$env_file" ]; then
    install -m 0600 -o root -g root "$example" "$env_file"
    say "wrote $env_file"
  fi
done

# 5. units, target, timers, journald drop-in
for unit in $(units); do
  install -m 0644 -o root -g root "$SOURCE/deploy/systemd/$unit" "$UNIT_DIR/$unit"
done
install -d -m 0755 "$JOURNALD_DIR"
install -m 0644 "$SOURCE/deploy/journald/quantum.conf" "$JOURNALD_DIR/quantum.conf"
if [ -n "$BUS_HOSTS" ]; then
  install -d -m 0755 "$(dirname "$BUS_DROPIN")"
  printf '%s\n' "# Written by scripts/install.sh --bus-hosts: the replicated bus's Redis and" \
    "# Sentinel hosts, reachable from the loopback-only units (added to their localhost)." \
    "[Service]" "IPAddressAllow=${BUS_HOSTS//,/ }" > "$BUS_DROPIN"
  chmod 0644 "$BUS_DROPIN"
  say "units may reach the bus hosts ${BUS_HOSTS//,/ }"
fi

# 6. Redis with the shipped configuration
if [ "$REDIS" = 1 ]; then
  if ! command -v redis-server >/dev/null; then
    command -v apt-get >/dev/null || die "redis-server is not installed (or pass --no-redis)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server
  fi
  [ -f "$REDIS_CONF" ] || die "$REDIS_CONF not found (a packaged Redis keeps its config there)"
  install -m 0640 -o root -g "$(stat -c %G "$REDIS_CONF")" \
    "$SOURCE/deploy/redis/redis.conf" /etc/redis/quantum.conf
  grep -qxF "$REDIS_INCLUDE" "$REDIS_CONF" || echo "$REDIS_INCLUDE" >> "$REDIS_CONF"
  systemctl enable redis-server.service >/dev/null 2>&1 || true
  systemctl restart redis-server.service
fi

systemctl daemon-reload
systemctl restart systemd-journald.service || true
if [ "$ENABLE" = 1 ]; then
  systemctl enable quantum-trader.target >/dev/null
  # the timers only schedule their jobs (verify, health checks, backup): started at once
  for unit in $(units | grep -E '\.timer$'); do systemctl enable --now "$unit" >/dev/null; done
fi
if [ "$INIT" = 1 ]; then
  (set -a; . "$ETC/common.env"; set +a
   "$PREFIX/.venv/bin/quantumctl" init --redis-url "${QT_REDIS_URL:-redis://127.0.0.1:6379/0}")
fi
if [ "$START" = 1 ]; then systemctl start quantum-trader.target; fi
say "installed in $PREFIX (units in $UNIT_DIR; settings in $ETC)"
