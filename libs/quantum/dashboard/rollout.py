"""Health gates for ``scripts/rolling-restart.sh``: is a restarted service back?

``python -m quantum.dashboard.rollout pid NAME`` prints the pid in the service's heartbeat;
``wait NAME --previous-pid P`` returns 0 once the heartbeat shows another pid (the new
process runs its loop) and every consumer group of the service is at most ``--max-lag``
entries behind, 1 on timeout. Kept apart from the shell script so the gate is tested.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import orjson
import redis

from quantum.bus import connection
from quantum.ctl.truth import group_lag
from quantum.observability.heartbeat import heartbeat_key
from quantum.registry.fleet import service


def heartbeat_pid(client: redis.Redis, name: str) -> int | None:
    raw = client.get(heartbeat_key(name))
    if raw is None:
        return None
    beat = orjson.loads(raw)
    pid = beat.get("pid") if isinstance(beat, dict) else None
    return pid if isinstance(pid, int) else None


def backlog(client: redis.Redis, name: str) -> int:
    """The largest lag of the service's consumer groups (0 for a service consuming nothing)."""
    spec = service(name)
    worst = 0
    for stream in spec.consumes:
        if not client.exists(stream.key):
            continue
        last = client.xrevrange(stream.key, count=1)
        last_id = _text(last[0][0]) if last else None
        for group in client.xinfo_groups(stream.key):
            if _text(group["name"]) == spec.group:
                worst = max(worst, group_lag(client, stream.key, group, last_id))
    return worst


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def wait_back(client: redis.Redis, name: str, previous_pid: int, timeout: float,
              max_lag: int) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout
    state = "no heartbeat yet"
    while time.monotonic() < deadline:
        pid = heartbeat_pid(client, name)
        if pid is not None and pid != previous_pid:
            lag = backlog(client, name)
            if lag <= max_lag:
                return True, f"{name} is back (pid {pid}, lag {lag})"
            state = f"pid {pid}, lag {lag} > {max_lag}"
        time.sleep(0.2)
    return False, f"{name} not back within {timeout:.0f}s: {state}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantum.dashboard.rollout")
    parser.add_argument("action", choices=("pid", "wait"))
    parser.add_argument("service")
    parser.add_argument("--previous-pid", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--max-lag", type=int, default=1000)
    parser.add_argument("--redis-url",
                        default=os.environ.get("QT_REDIS_URL", "redis://127.0.0.1:6379/0"))
    arguments = parser.parse_args(argv)
    client = connection.connect(arguments.redis_url, socket_connect_timeout=3)
    if arguments.action == "pid":
        pid = heartbeat_pid(client, arguments.service)
        print(pid if pid is not None else "")
        return 0
    ok, message = wait_back(client, arguments.service, arguments.previous_pid,
                            arguments.timeout, arguments.max_lag)
    print(f"rollout: {message}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
