"""The emergency stop system (ESS): a tripped state no new risk gets past.

The state lives in Redis (``quantum:state:ess``), not in any process, so it survives the
restart of every service; only an operator resets it (``quantumctl ess reset --reason``).
Every trip, reset, pause and resume is appended to ``quantum:state:ess:audit``, and so is
every position an operator forces closed (:mod:`quantum.exits.manual`): one trail of the
operator's hands, whether they came through ``quantumctl`` or the dashboard.

Five evaluators can trip it (:mod:`quantum.risk.evaluators`): drawdown (daily, weekly and
the brake from the equity peak), system health (missing heartbeats of required services),
consecutive execution errors, a stale data feed, and the manual trigger here. A trip makes
the risk-governor reject every plan and the apply-layer refuse every entry order; exits are
never blocked. *Pause* is the operator's softer switch: no new entries, no other action.

Unknown state is unsafe state: a missing or unreadable key reads as **tripped** with the
reason ``state_unknown`` (:data:`UNKNOWN`), never as clear. A new fleet is given a clear ESS
by :func:`quantum.risk.fleetstate.initialise` (``quantumctl init``); a Redis that lost its
data therefore stops new risk by itself, and the runners add the explicit ``state_lost``
trip when they notice the fleet epoch is gone (:mod:`quantum.risk.fleetstate`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis
from pydantic import BaseModel, ConfigDict

from quantum.registry.fleet import ESS_AUDIT_KEY, ESS_KEY

AUDIT_LIMIT = 10_000


class EssState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tripped: bool = False
    reason: str = ""
    evaluator: str = ""
    tripped_at: int = 0  # ms, wall clock (or event time in a replay)
    by: str = ""
    paused: bool = False
    paused_by: str = ""
    trips: int = 0

    @property
    def blocks_new_risk(self) -> bool:
        return self.tripped or self.paused

    @property
    def block_reason(self) -> str | None:
        if self.tripped:
            return "ess_tripped"
        if self.paused:
            return "trading_paused"
        return None


UNKNOWN = EssState(tripped=True, reason="state_unknown", evaluator="state", by="nobody")
CLEAR = EssState()


def status(client: redis.Redis) -> EssState:
    return parse(client.get(ESS_KEY))


def parse(raw: bytes | None) -> EssState:
    """The stored state; a missing or unreadable value is :data:`UNKNOWN` (tripped)."""
    if raw is None:
        return UNKNOWN
    try:
        return EssState.model_validate_json(raw)
    except ValueError:
        return UNKNOWN.model_copy(update={"reason": "state_unreadable"})


def stored(raw: bytes | None) -> EssState | None:
    """The stored state, or None when the key is missing or unreadable."""
    if raw is None:
        return None
    try:
        return EssState.model_validate_json(raw)
    except ValueError:
        return None


def _audit(pipe: Any, action: str, by: str, reason: str, at: int, extra: dict[str, Any]) -> None:
    entry = {"action": action, "by": by, "reason": reason, "at": at, **extra}
    pipe.lpush(ESS_AUDIT_KEY, orjson.dumps(entry))
    pipe.ltrim(ESS_AUDIT_KEY, 0, AUDIT_LIMIT - 1)


def append_audit(pipe: Any, action: str, by: str, reason: str, at: int,
                 extra: dict[str, Any]) -> None:
    """Queue an operator action's audit entry on ``pipe`` (inside its MULTI), in the same
    shape as the ESS's own entries."""
    _audit(pipe, action, by, reason, at, extra)


def _update(client: redis.Redis, change: Any) -> tuple[EssState, EssState]:
    """Read-modify-write under WATCH; ``change(old) -> (new, audit action | None, extra)``."""
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(ESS_KEY)
                found = stored(pipe.get(ESS_KEY))
                old = found if found is not None else UNKNOWN
                new, action, by, reason, at, extra = change(old)
                pipe.multi()
                if new != old or found is None:
                    pipe.set(ESS_KEY, new.model_dump_json())
                if action is not None:
                    _audit(pipe, action, by, reason, at, extra)
                pipe.execute()
                return old, new
            except redis.WatchError:
                continue


def _trip_of(old: EssState, reason: str, by: str, evaluator: str, at: int) -> EssState | None:
    """``old`` tripped, or None when it is a trip already (a trip keeps its first reason).
    :data:`UNKNOWN` (a missing or unreadable key) is tripped from a clear state."""
    if old.tripped and old is not UNKNOWN:
        return None
    return (CLEAR if old is UNKNOWN else old).model_copy(update={
        "tripped": True, "reason": reason, "evaluator": evaluator, "tripped_at": at, "by": by,
        "trips": old.trips + 1,
    })


def tripped(
    raw: bytes | None, reason: str, by: str, *, evaluator: str, at: int
) -> tuple[EssState, dict[str, Any] | None]:
    """The ESS after a trip on the stored value ``raw``, and the audit entry of the trip
    (None when it was tripped already). Pure, so a service can commit the trip through its
    outbox (:meth:`Outbox.compare_and_set`)."""
    found = stored(raw)
    old = found if found is not None else UNKNOWN
    new = _trip_of(old, reason, by, evaluator, at)
    if new is None:
        return old, None
    return new, {"action": "trip", "by": by, "reason": reason, "at": at, "evaluator": evaluator}


def trip(
    client: redis.Redis, reason: str, by: str, *, evaluator: str = "manual", at: int | None = None
) -> EssState:
    """Trip the ESS (idempotent: an already tripped ESS keeps its first reason)."""
    when = at if at is not None else int(time.time() * 1000)

    def change(old: EssState) -> Any:
        new = _trip_of(old, reason, by, evaluator, when)
        if new is None:
            return old, None, by, reason, when, {}
        return new, "trip", by, reason, when, {"evaluator": evaluator}

    return _update(client, change)[1]


def reset(client: redis.Redis, reason: str, by: str) -> EssState:
    """Clear a trip. Operators only (``quantumctl ess reset``); a reason is required."""
    if not reason.strip():
        raise ValueError("a reason is required to reset the emergency stop")
    when = int(time.time() * 1000)

    def change(old: EssState) -> Any:
        new = (CLEAR if old is UNKNOWN else old).model_copy(
            update={"tripped": False, "reason": "", "evaluator": "", "tripped_at": 0, "by": ""}
        )
        return new, "reset", by, reason, when, {"was": old.reason}

    return _update(client, change)[1]


def pause(client: redis.Redis, by: str, reason: str = "operator pause") -> EssState:
    when = int(time.time() * 1000)
    return _update(
        client,
        lambda old: (
            old.model_copy(update={"paused": True, "paused_by": by}),
            "pause",
            by,
            reason,
            when,
            {},
        ),
    )[1]


def resume(client: redis.Redis, by: str, reason: str = "operator resume") -> EssState:
    when = int(time.time() * 1000)
    return _update(
        client,
        lambda old: (
            old.model_copy(update={"paused": False, "paused_by": ""}),
            "resume",
            by,
            reason,
            when,
            {},
        ),
    )[1]


def audit(client: redis.Redis, count: int = 50) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in client.lrange(ESS_AUDIT_KEY, 0, count - 1)]
