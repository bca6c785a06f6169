"""The fleet epoch: how a service tells a Redis that lost its data from a new install.

``quantumctl init`` writes ``quantum:state:fleet`` once per fleet: a random epoch id, when
and by whom, and a clear emergency stop beside it. Every runner reads the epoch at start
and again with each heartbeat (one extra ``GET`` in the same round trip):

* at start, no epoch means the state was lost (or the fleet was never initialised);
* while running, an epoch that disappears or changes means the Redis the service talks to
  is not the one whose state it restored (restarted empty, failed over to a stale replica,
  flushed).

Either way the service trips the ESS with reason ``state_lost`` — no new risk until an
operator has looked and reset it — and reloads its state. Exits are never blocked. An
operator who has checked the books after a loss runs ``quantumctl init --after-loss`` to
write a new epoch (runners adopt one marked ``after_loss`` without tripping again), then
``quantumctl ess reset``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis

from quantum.registry.fleet import ESS_KEY, FLEET_KEY
from quantum.risk import ess

STATE_LOST = "state_lost"


@dataclass(frozen=True)
class Epoch:
    epoch: str
    created_at: int  # ms, wall clock
    by: str
    after_loss: bool = False

    def document(self) -> bytes:
        return orjson.dumps(self.__dict__)


def parse(raw: bytes | None) -> Epoch | None:
    """The stored epoch; None when missing or unreadable (both mean: not this fleet's)."""
    if raw is None:
        return None
    try:
        data: dict[str, Any] = orjson.loads(raw)
        return Epoch(
            epoch=str(data["epoch"]),
            created_at=int(data["created_at"]),
            by=str(data["by"]),
            after_loss=bool(data.get("after_loss", False)),
        )
    except (ValueError, KeyError, TypeError):
        return None


def read(client: redis.Redis) -> Epoch | None:
    return parse(client.get(FLEET_KEY))


def initialise(client: redis.Redis, by: str, *, after_loss: bool = False) -> tuple[Epoch, bool]:
    """Write a new epoch if none exists; returns it and whether it was written now.

    A first initialisation also stores a clear ESS (only if no ESS key exists: a tripped
    stop is never cleared here). ``after_loss`` marks an operator's re-initialisation after
    a loss: the ESS is left as it is, tripped, for ``quantumctl ess reset``.
    """
    epoch = Epoch(uuid.uuid4().hex, int(time.time() * 1000), by, after_loss)
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(FLEET_KEY, ESS_KEY)
                existing = parse(pipe.get(FLEET_KEY))
                if existing is not None:
                    pipe.reset()
                    return existing, False
                ess_missing = pipe.get(ESS_KEY) is None
                pipe.multi()
                pipe.set(FLEET_KEY, epoch.document())
                if ess_missing and not after_loss:
                    pipe.set(ESS_KEY, ess.CLEAR.model_dump_json())
                pipe.execute()
                return epoch, True
            except redis.WatchError:
                continue


def declare_lost(client: redis.Redis, service: str, detail: str, at: int | None = None) -> None:
    """Trip the ESS with ``state_lost`` (idempotent: a trip keeps its first reason)."""
    ess.trip(client, f"{STATE_LOST}: {detail}", by=service, evaluator=STATE_LOST, at=at)


def initialise_local(client: redis.Redis, record: Path, by: str) -> tuple[Epoch | None, str]:
    """The local fleet's start (``quantumctl up``): initialise a new Redis, but never hide a
    loss. ``record`` (in the local state directory) remembers the epoch last seen; a Redis
    without an epoch where one was recorded has lost its state, and is left uninitialised so
    every service trips the ESS with ``state_lost``. Returns the epoch and what happened."""
    current = read(client)
    known = record.read_text().strip() if record.is_file() else ""
    if current is None and known:
        return None, f"state lost: this Redis has no fleet epoch, but epoch {known} ran here"
    if current is None:
        current, _ = initialise(client, by)
        outcome = "initialised a new fleet"
    else:
        outcome = "existing fleet"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(current.epoch + "\n")
    return current, outcome
