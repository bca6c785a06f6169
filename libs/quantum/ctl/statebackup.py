"""Back up and restore the fleet's state in Redis: exactly the keys the registry declares.

Every service's state keys (``quantum:state:…``: the ESS and its audit, the policy and its
history, the portfolio, the execution book, the governor's, exit-brain's and apply-layer's
state, the fleet epoch …) and the keys under them (``K:…``: version counters, per-plan
records) — not the whole Redis instance, so streams, heartbeats and anything foreign are
left alone. Values are kept by type (string, list, hash, set, sorted set) in a JSON
document (bytes base64-encoded) with their time to live, portable across Redis versions.

A restore replaces the declared keys in one ``MULTI``: every declared key that exists now
is deleted and the saved ones are written, so the state is the backup's, key for key.

``python -m quantum.ctl.statebackup dump FILE`` / ``load FILE`` / ``live`` (the services
with a heartbeat, one per line: a restore over a live fleet is refused by restore.sh);
``--redis-url`` or ``QT_REDIS_URL``. Used by scripts/backup.sh and scripts/restore.sh.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from typing import Any

import orjson
import redis

from quantum.bus import connection
from quantum.observability.heartbeat import heartbeat_key
from quantum.registry.fleet import SERVICES

FORMAT = 1


def declared_roots() -> list[str]:
    return sorted({key for spec in SERVICES for key in spec.state_keys})


def declared_keys(client: redis.Redis) -> list[str]:
    """The declared state keys that exist now, and the keys under them."""
    found: set[str] = set()
    roots = declared_roots()
    for key, exists in zip(roots, _pipeline(client, [("exists", r) for r in roots]),
                           strict=True):
        if exists:
            found.add(key)
    for root in roots:
        found.update(k.decode() if isinstance(k, bytes) else k
                     for k in client.scan_iter(match=_escape(root) + ":*", count=1000))
    return sorted(found)


def _escape(pattern: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in pattern)


def _pipeline(client: redis.Redis, calls: list[tuple[Any, ...]]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for name, *arguments in calls:
        getattr(pipe, name)(*arguments)
    return list(pipe.execute())


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _read(client: redis.Redis, key: str, kind: str) -> Any:
    if kind == "string":
        return _b64(client.get(key) or b"")
    if kind == "list":
        return [_b64(v) for v in client.lrange(key, 0, -1)]
    if kind == "hash":
        return {_b64(f): _b64(v) for f, v in client.hgetall(key).items()}
    if kind == "set":
        return sorted(_b64(v) for v in client.smembers(key))
    if kind == "zset":
        return [[_b64(m), s] for m, s in client.zrange(key, 0, -1, withscores=True)]
    raise ValueError(f"state key {key} has type {kind}, which is not backed up")


def dump(client: redis.Redis) -> dict[str, Any]:
    """The declared state as a JSON-able document."""
    entries = []
    for key in declared_keys(client):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "none":  # deleted since the scan
            continue
        ttl_ms = int(client.pttl(key))
        entries.append({"key": key, "type": kind, "ttl_ms": ttl_ms if ttl_ms > 0 else None,
                        "value": _read(client, key, kind)})
    return {"format": FORMAT, "roots": declared_roots(), "keys": entries}


def _write(pipe: Any, entry: dict[str, Any]) -> None:
    key, kind, value = entry["key"], entry["type"], entry["value"]
    raw = base64.b64decode
    if kind == "string":
        pipe.set(key, raw(value))
    elif kind == "list":
        if value:
            pipe.rpush(key, *(raw(v) for v in value))
    elif kind == "hash":
        if value:
            pipe.hset(key, mapping={raw(f): raw(v) for f, v in value.items()})
    elif kind == "set":
        if value:
            pipe.sadd(key, *(raw(v) for v in value))
    elif kind == "zset":
        if value:
            pipe.zadd(key, {raw(m): float(s) for m, s in value})
    else:
        raise ValueError(f"{key}: unknown type {kind!r} in the backup")
    if entry.get("ttl_ms"):
        pipe.pexpire(key, int(entry["ttl_ms"]))


def load(client: redis.Redis, document: dict[str, Any]) -> int:
    """Replace the declared state with ``document``'s; the number of keys written."""
    if document.get("format") != FORMAT or not isinstance(document.get("keys"), list):
        raise ValueError("not a state backup of this format (format 1 expected)")
    declared = set(declared_roots())
    for entry in document["keys"]:
        key = entry.get("key", "")
        if not any(key == root or key.startswith(root + ":") for root in declared):
            raise ValueError(f"{key!r} is no state key the registry declares; refused")
    pipe = client.pipeline(transaction=True)
    current = declared_keys(client)
    if current:
        pipe.delete(*current)
    for entry in document["keys"]:
        _write(pipe, entry)
    pipe.execute()
    return len(document["keys"])


def live_services(client: redis.Redis) -> list[str]:
    names = [spec.name for spec in SERVICES]
    present = _pipeline(client, [("exists", heartbeat_key(n)) for n in names])
    return [name for name, alive in zip(names, present, strict=True) if alive]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantum.ctl.statebackup")
    parser.add_argument("action", choices=("dump", "load", "live"))
    parser.add_argument("file", nargs="?")
    parser.add_argument("--redis-url", default=os.environ.get("QT_REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"))
    arguments = parser.parse_args(argv)
    if arguments.action != "live" and not arguments.file:
        parser.error(f"{arguments.action} needs a FILE")
    client = connection.connect(arguments.redis_url, socket_connect_timeout=3)
    try:
        if arguments.action == "live":
            print("\n".join(live_services(client)))
        elif arguments.action == "dump":
            document = dump(client)
            with open(arguments.file, "wb") as handle:
                handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
            print(f"{len(document['keys'])} state keys")
        else:
            with open(arguments.file, "rb") as handle:
                document = orjson.loads(handle.read())
            print(f"{load(client, document)} state keys restored")
    except redis.RedisError as e:
        print(f"statebackup: Redis: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"statebackup: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
