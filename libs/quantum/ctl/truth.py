"""The truth map: what Redis holds, set against what the fleet registry declares.

The earlier system's registry contradicted its runtime (streams nobody consumed, groups nobody
fed). ``quantumctl status``, ``report`` and ``verify`` all read this one document, so an
operator and a script see the same facts:

* services: heartbeat (``quantum:heartbeat:<service>``, written every second by the runner
  with a TTL, so its presence means alive) and, from the supervisor's state file, pid and
  restarts;
* streams: length, last entry time (from its id), groups with pending and lag, producer;
* flags, each a drift or a hazard:

  ``missing_heartbeat``   a required service has no heartbeat (trading fails closed)
  ``gave_up``             the local supervisor stopped restarting a service
  ``dead_stream``         consumers are declared but the producer has no heartbeat, or the
                          stream has entries and no consumer group reads them
  ``missing_group``       a group the registry declares does not exist on its stream
  ``orphan_group``        a group exists that the registry does not declare
  ``undeclared_stream``   a ``quantum:stream:*`` key outside the catalogue
  ``undeclared_state_key`` a ``quantum:state:*`` key no service owns (a key ``K:…`` under an
                          owned key ``K`` counts as owned)
  ``redis_not_durable``   the Redis does not keep its data (AOF off, or keys may be evicted):
                          a restart would lose the ESS, the books and the guards
  ``redis_no_replica``    behind Sentinel, the master has no replica in sync: execution
                          holds every order (its intent cannot be confirmed)

Where systemd runs, :mod:`quantum.ctl.systemd` adds the units' and timers' state and its
own flags (``unit_failed``, ``unit_restarts``, ``unit_not_installed``, ``unit_file_differs``,
``timer_never_ran``).

``verify`` fails on the kinds in :data:`DRIFT_KINDS`; the rest are runtime hazards that
``status`` shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from quantum.bus.streams import DLQ, PREFIX
from quantum.contracts.streams import CATALOGUE
from quantum.ctl.entries import as_entries
from quantum.observability.heartbeat import heartbeat_key, standby_key
from quantum.registry import fleet
from quantum.registry.fleet import STATE_PREFIX

DRIFT_KINDS = frozenset({
    "missing_heartbeat", "missing_group", "orphan_group", "undeclared_stream",
    "undeclared_state_key",
    "unit_not_installed", "unit_file_differs",  # quantum.ctl.systemd, where systemd runs
})
_LAG_PAGE = 10_000


@dataclass(frozen=True)
class Flag:
    """One finding: its kind, what it is about (a service, stream or key) and why."""

    kind: str
    subject: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail}


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _id_time(entry_id: str) -> str:
    """The UTC time encoded in a stream entry id (its milliseconds part)."""
    millis = int(entry_id.split("-", 1)[0])
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")


def _id_key(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


def heartbeats(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Service name → its heartbeat document, for the services that have one."""
    names = [spec.name for spec in fleet.SERVICES]
    values = client.mget([heartbeat_key(name) for name in names])
    beats = {}
    for name, raw in zip(names, values, strict=True):
        if raw is None:
            continue
        try:
            beat = orjson.loads(raw)
        except orjson.JSONDecodeError:
            beat = {}
        beats[name] = beat if isinstance(beat, dict) else {}
    return beats


STANDBY_MAX_AGE_S = 60.0  # a standby's beat older than this is a leftover, not a standby


def standbys(client: redis.Redis, now: float) -> dict[str, list[dict[str, Any]]]:
    """Service name → its standby instances (consumer, host, pid, age), freshest first: the
    beats of ``quantum:standby:<service>`` (:class:`~quantum.observability.heartbeat.Beacon`),
    older than :data:`STANDBY_MAX_AGE_S` left out."""
    names = [spec.name for spec in fleet.SERVICES]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(standby_key(name))
    found: dict[str, list[dict[str, Any]]] = {}
    for name, fields in zip(names, pipe.execute(), strict=True):
        rows = []
        for raw in (fields or {}).values():
            try:
                beat = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            ts = beat.get("ts") if isinstance(beat, dict) else None
            if not isinstance(ts, int | float) or now - ts > STANDBY_MAX_AGE_S:
                continue
            rows.append({"consumer": beat.get("consumer"), "host": beat.get("host"),
                         "pid": beat.get("pid"), "heartbeat_age_s": round(now - ts, 3)})
        if rows:
            found[name] = sorted(rows, key=lambda row: row["heartbeat_age_s"])
    return found


def service_rows(
    beats: dict[str, dict[str, Any]], state: dict[str, Any] | None, now: float,
    standing_by: dict[str, list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    supervised = {entry["name"]: entry for entry in (state or {}).get("services", [])
                  if isinstance(entry, dict) and "name" in entry}
    rows = []
    for spec in fleet.SERVICES:
        beat = beats.get(spec.name)
        process = supervised.get(spec.name, {})
        beat_ts = beat.get("ts") if beat else None
        rows.append({
            "name": spec.name,
            "required": spec.required,
            "port": spec.port,
            "state": "up" if beat is not None else "down",
            "pid": (beat or {}).get("pid", process.get("pid")),
            "consumer": (beat or {}).get("consumer"),
            "host": (beat or {}).get("host"),
            "standby": (standing_by or {}).get(spec.name, []),
            "heartbeat_age_s": round(now - float(beat_ts), 3)
            if isinstance(beat_ts, int | float) else None,
            "supervised": bool(process),
            "process_alive": process.get("alive") if process else None,
            "restarts": process.get("restarts") if process else None,
            "last_exit": process.get("last_exit") if process else None,
            "gave_up": process.get("gave_up") if process else None,
        })
    return rows


def group_lag(client: redis.Redis, key: str, group: dict[str, Any], last_id: str | None) -> int:
    """Entries not yet delivered to the group. Redis 7 reports it; older ones do not, and
    Redis 7 gives none either after deletions, so count past ``last-delivered-id``."""
    reported = group.get("lag")
    if reported is not None:
        return int(reported)
    delivered = _text(group.get("last-delivered-id", "0-0"))
    if last_id is None or _id_key(delivered) >= _id_key(last_id):
        return 0
    count, start = 0, "(" + delivered
    while True:
        page = as_entries(client.xrange(key, min=start, max="+", count=_LAG_PAGE))
        count += len(page)
        if len(page) < _LAG_PAGE:
            return count
        start = "(" + page[-1][0]


def stream_row(
    client: redis.Redis, key: str, declared_groups: tuple[str, ...], producer: str | None
) -> dict[str, Any]:
    exists = bool(client.exists(key))
    length = int(client.xlen(key)) if exists else 0
    last = as_entries(client.xrevrange(key, count=1)) if exists else []
    last_id = last[0][0] if last else None
    groups = []
    for group in client.xinfo_groups(key) if exists else []:
        name = _text(group["name"])
        groups.append({
            "name": name,
            "declared": name in declared_groups,
            "consumers": int(group.get("consumers") or 0),
            "pending": int(group.get("pending") or 0),
            "lag": group_lag(client, key, group, last_id),
            "last_delivered_id": _text(group.get("last-delivered-id", "0-0")),
        })
    return {
        "name": key.removeprefix(PREFIX),
        "key": key,
        "exists": exists,
        "length": length,
        "last_entry_id": last_id,
        "last_entry_time": _id_time(last_id) if last_id else None,
        "producer": producer,
        "declared_groups": list(declared_groups),
        "groups": groups,
    }


def _owned_state_keys() -> set[str]:
    return {key for spec in fleet.SERVICES for key in spec.state_keys} | {fleet.TIMERS_KEY}


def _is_owned(key: str, owned: set[str]) -> bool:
    return key in owned or any(key.startswith(prefix + ":") for prefix in owned)


def _stream_flags(row: dict[str, Any], beats: dict[str, dict[str, Any]]) -> list[Flag]:
    flags = []
    name = row["name"]
    present = {group["name"] for group in row["groups"]}
    for group in row["declared_groups"]:
        if group not in present:
            flags.append(Flag("missing_group", name,
                              f"group {group} is declared but does not exist on {row['key']}"))
    for group in row["groups"]:
        if not group["declared"]:
            flags.append(Flag("orphan_group", f"{name}/{group['name']}",
                              f"group {group['name']} on {row['key']} is not in the registry"))
    if name == DLQ.name:
        return flags  # written by any consumer, read by operators: neither check applies
    producer = row["producer"]
    if row["declared_groups"] and (producer is None or producer not in beats):
        who = f"its producer {producer}" if producer else "no producer is declared and it"
        flags.append(Flag("dead_stream", name,
                          f"consumers {', '.join(row['declared_groups'])} are declared but "
                          f"{who} has no heartbeat"))
    if row["length"] and not row["groups"]:
        flags.append(Flag("dead_stream", name,
                          f"{row['length']} entries and no consumer group reads them"))
    return flags


def truth_map(client: redis.Redis, state: dict[str, Any] | None) -> dict[str, Any]:
    """Services, streams and flags, as plain data (JSON-ready)."""
    now = time.time()
    beats = heartbeats(client)
    services = service_rows(beats, state, now, standbys(client, now))
    producers = fleet.producers()
    groups = fleet.consumer_groups()
    flags: list[Flag] = []
    for row in services:
        if row["required"] and row["state"] == "down":
            flags.append(Flag("missing_heartbeat", row["name"],
                              "a required service has no heartbeat"))
        if row["gave_up"]:
            flags.append(Flag("gave_up", row["name"],
                              f"the supervisor stopped restarting it (last exit "
                              f"{row['last_exit']})"))
    streams = []
    for spec in CATALOGUE.values():
        row = stream_row(client, spec.key, groups.get(spec.name, ()), producers.get(spec.name))
        streams.append(row)
        flags.extend(_stream_flags(row, beats))
    catalogued = {spec.key for spec in CATALOGUE.values()}
    for key in sorted(_text(k) for k in client.scan_iter(match=PREFIX + "*", count=1000)):
        if key in catalogued:
            continue
        flags.append(Flag("undeclared_stream", key, "not in the stream catalogue"))
        if _text(client.type(key)) == "stream":
            row = stream_row(client, key, (), None)
            flags.extend(flag for flag in _stream_flags(row, beats)
                         if flag.kind == "orphan_group")
    owned = _owned_state_keys()
    for key in sorted(_text(k) for k in client.scan_iter(match=STATE_PREFIX + "*", count=1000)):
        if not _is_owned(key, owned):
            flags.append(Flag("undeclared_state_key", key, "no service in the registry owns it"))
    durability = redis_durability(client)
    flags.extend(_redis_flags(durability))
    trading = trading_state(client, beats)
    for reason in trading["blocked_by"]:
        flags.append(Flag("trading_blocked", "entries", reason))
    return {
        "generated_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "services": services,
        "streams": streams,
        "trading": trading,
        "redis": durability,
        "flags": [flag.as_dict() for flag in flags],
    }


def _redis_flags(durability: dict[str, Any]) -> list[Flag]:
    flags = []
    if not durability["durable"]:
        flags.append(Flag("redis_not_durable", "redis", durability["detail"]))
    replication = durability.get("replication") or {}
    if replication.get("sentinel") and not replication.get("replicas_in_sync"):
        flags.append(Flag("redis_no_replica", "redis",
                          f"master {replication.get('master')} has no replica in sync: "
                          "orders are held until one is"))
    return flags


def redis_durability(client: redis.Redis) -> dict[str, Any]:
    """Whether the Redis keeps its data across a restart (AOF on, nothing evicted): the
    fleet's state lives there (deploy/redis/redis.conf)."""
    try:
        config = {**client.config_get("appendonly"), **client.config_get("maxmemory-policy")}
    except redis.ResponseError as e:  # CONFIG renamed or disabled: say so, do not guess
        return {"durable": False, "detail": f"CONFIG GET refused: {e}"}
    appendonly = _text(config.get("appendonly", "")) == "yes"
    policy_name = _text(config.get("maxmemory-policy", ""))
    problems = []
    if not appendonly:
        problems.append("appendonly is off: a restart loses every key")
    if policy_name != "noeviction":
        problems.append(f"maxmemory-policy is {policy_name}: keys may be evicted")
    replication = redis_replication(client)
    detail = "; ".join(problems) or "AOF on, noeviction"
    if replication["sentinel"]:
        detail += (f"; master {replication['master']} (via Sentinel), "
                   f"{replication['replicas_in_sync']} replica(s) in sync")
    return {"durable": not problems, "appendonly": appendonly, "maxmemory_policy": policy_name,
            "replication": replication, "detail": detail}


def redis_replication(client: redis.Redis) -> dict[str, Any]:
    """The node the client talks to: its role and replicas online; behind a Sentinel URL,
    which master the Sentinels name (:mod:`quantum.bus.connection`)."""
    from quantum.bus import connection

    address = connection.master_address(client)
    info = client.info("replication")
    in_sync = sum(1 for key, value in info.items()
                  if key.startswith("slave") and isinstance(value, dict)
                  and value.get("state") == "online")
    return {"sentinel": address is not None, "role": _text(info.get("role", "")),
            "master": None if address is None else f"{address[0]}:{address[1]}",
            "replicas_in_sync": in_sync}


def trading_state(client: redis.Redis, beats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whether new entries can be placed, and if not, every reason why (fail closed)."""
    from quantum.risk import ess, fleetstate, policy

    state = ess.status(client)
    blocked = []
    epoch = fleetstate.read(client)
    if epoch is None:
        blocked.append("no fleet epoch: state lost, or never initialised (`quantumctl init`)")
    if state.tripped:
        blocked.append(f"emergency stop tripped ({state.evaluator}): {state.reason}")
    if state.paused:
        blocked.append(f"trading paused by {state.paused_by}")
    if "risk-governor" not in beats:
        blocked.append("risk-governor has no heartbeat: the apply-layer refuses every approval")
    raw = client.get(fleet.APPLY_REFUSAL_KEY)
    last_refusal = orjson.loads(raw) if raw else None
    return {
        "entries_allowed": not blocked,
        "blocked_by": blocked,
        "ess": state.model_dump(),
        "policy_version": policy.version(client),
        "fleet_epoch": epoch.epoch if epoch is not None else None,
        "last_refusal": last_refusal,
    }


def drift(document: dict[str, Any]) -> list[dict[str, str]]:
    """The flags that mean the live system differs from the registry."""
    return [flag for flag in document["flags"] if flag["kind"] in DRIFT_KINDS]
