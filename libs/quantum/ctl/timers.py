"""The periodic jobs the registry's timers start (``quantumctl timer run NAME``).

Each job returns ``(ok, detail)``; :func:`run` times it, prints one JSON line
(``{"event": "timer_result", "timer", "ok", "detail", "duration_s", "ts"}``) and records
the result in the hash :data:`~quantum.registry.fleet.TIMERS_KEY` (``last_run``, and
``last_success`` when it succeeded), which the dashboard exports as
``quantum_timer_last_success_timestamp_seconds{timer=…}``. The exit status is 0 only when
the job succeeded and its success was recorded: a success Prometheus cannot see is a
failure of the timer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import redis

from quantum.bus import connection
from quantum.registry import fleet
from quantum.registry.generate.common import INSTALL_ROOT, STATE_DIR

Job = Callable[[str], tuple[bool, str]]


def _verify(redis_url: str) -> tuple[bool, str]:
    from quantum.ctl import systemd
    from quantum.ctl.truth import drift, truth_map

    document = systemd.add_to(truth_map(connection.connect(redis_url), None))
    found = drift(document)
    if found:
        return False, "; ".join(f"{f['kind']}: {f['subject']}" for f in found[:10])
    return True, f"the live system matches the registry ({document['systemd']['detail']})"


def _ensemble_health(redis_url: str) -> tuple[bool, str]:
    from quantum.ml.registry import ModelRefused, ModelRegistry

    registry = ModelRegistry(Path(os.environ.get("QT_MODELS_DIR", "models")))
    try:
        version = registry.active()
        if version is None:
            return False, f"no active ensemble in {registry.root}"
        problems = registry.verify(version)
        ensemble = registry.load(version)
    except ModelRefused as e:
        return False, str(e)
    if problems:
        return False, f"ensemble {version}: " + "; ".join(f"{k} {v}" for k, v in problems.items())
    return True, f"ensemble {ensemble.version} loads"


def _rl_health(redis_url: str) -> tuple[bool, str]:
    from quantum.rl.policy import PolicyRefused, PolicyRegistry

    registry = PolicyRegistry(Path(os.environ.get("QT_RL_POLICY_DIR", "models/rl")))
    try:
        policy = registry.load_policy()
    except PolicyRefused as e:
        return False, str(e)
    return True, f"sizing policy {policy.version} loads"


def _backup(redis_url: str) -> tuple[bool, str]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(os.environ.get("QT_BACKUP_DIR", f"{STATE_DIR}/backups")) / stamp
    root = Path(INSTALL_ROOT) if Path(INSTALL_ROOT, "scripts").is_dir() else Path.cwd()
    arguments = ["--out", str(out), "--redis-url", redis_url]
    if os.environ.get("QT_MODELS_DIR"):
        arguments += ["--models", os.environ["QT_MODELS_DIR"]]
    done = subprocess.run(["bash", str(root / "scripts" / "backup.sh"), *arguments],
                          capture_output=True, text=True, check=False, timeout=1800,
                          env={**os.environ, "PYTHON": sys.executable})
    lines = (done.stdout + done.stderr).strip().splitlines()
    last = lines[-1] if lines else ""
    return done.returncode == 0, last if done.returncode == 0 else (
        f"backup.sh exited {done.returncode}: {last}")


JOBS: dict[str, Job] = {"verify": _verify, "ensemble-health": _ensemble_health,
                        "rl-health": _rl_health, "backup": _backup}


def record(client: redis.Redis, name: str, ok: bool, detail: str, now: float) -> None:
    raw = client.hget(fleet.TIMERS_KEY, name)
    previous = orjson.loads(raw) if raw else {}
    entry = {"last_run": now, "last_ok": ok, "detail": detail[:500],
             "last_success": now if ok else previous.get("last_success")}
    client.hset(fleet.TIMERS_KEY, name, orjson.dumps(entry))


def last_results(client: redis.Redis) -> dict[str, dict[str, object]]:
    """Timer name → its recorded result, for the timers the registry declares."""
    raw = client.hgetall(fleet.TIMERS_KEY)
    out = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        try:
            out[name] = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
    return out


def run(name: str, redis_url: str, echo: Callable[[str], None] = print) -> int:
    if name not in JOBS:
        raise KeyError(f"unknown timer {name!r}; the registry has: "
                       f"{', '.join(t.name for t in fleet.TIMERS)}")
    started = time.monotonic()
    try:
        ok, detail = JOBS[name](redis_url)
    except (OSError, redis.RedisError, subprocess.SubprocessError, ValueError) as e:
        ok, detail = False, f"{type(e).__name__}: {e}"
    now = time.time()
    try:
        record(connection.connect(redis_url), name, ok, detail, now)
        recorded = True
    except redis.RedisError as e:
        recorded, detail = False, f"{detail}; result not recorded: {e}"
    echo(orjson.dumps({
        "event": "timer_result", "timer": name, "ok": ok and recorded, "detail": detail,
        "duration_s": round(time.monotonic() - started, 3),
        "ts": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
    }).decode())
    return 0 if ok and recorded else 1
