"""The emergency stop system (ESS): a tripped state no new risk gets past.

The state lives in Redis (``quantum:state:ess``), not in any process, so it survives the
restart of every service; only an operator resets it (``quantumctl ess reset --reason``).
Every trip, reset, pause and resume is appended to ``quantum:state:ess:audit``.

Five evaluators can trip it (:mod:`quantum.risk.evaluators`): drawdown (daily, weekly and
the brake from the equity peak), system health (missing heartbeats of required services),
consecutive execution errors, a stale data feed, and the manual trigger here. A trip makes
the risk-governor reject every plan and the apply-layer refuse every entry order; exits are
never blocked. *Pause* is the operator's softer switch: no new entries, no other action.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis
from pydantic import BaseModel, ConfigDict

ESS_KEY = "quantum:state:ess"  # declared in the fleet registry (risk-governor)
ESS_AUDIT_KEY = "quantum:state:ess:audit"
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


def status(client: redis.Redis) -> EssState:
    return parse(client.get(ESS_KEY))


def parse(raw: bytes | None) -> EssState:
    return EssState.model_validate_json(raw) if raw is not None else EssState()


def _audit(pipe: Any, action: str, by: str, reason: str, at: int, extra: dict[str, Any]) -> None:
    entry = {"action": action, "by": by, "reason": reason, "at": at, **extra}
    pipe.lpush(ESS_AUDIT_KEY, orjson.dumps(entry))
    pipe.ltrim(ESS_AUDIT_KEY, 0, AUDIT_LIMIT - 1)


def _update(client: redis.Redis, change: Any) -> tuple[EssState, EssState]:
    """Read-modify-write under WATCH; ``change(old) -> (new, audit action | None, extra)``."""
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(ESS_KEY)
                raw = pipe.get(ESS_KEY)
                old = EssState.model_validate_json(raw) if raw is not None else EssState()
                new, action, by, reason, at, extra = change(old)
                pipe.multi()
                if new != old:
                    pipe.set(ESS_KEY, new.model_dump_json())
                if action is not None:
                    _audit(pipe, action, by, reason, at, extra)
                pipe.execute()
                return old, new
            except redis.WatchError:
                continue


def trip(
    client: redis.Redis, reason: str, by: str, *, evaluator: str = "manual", at: int | None = None
) -> EssState:
    """Trip the ESS (idempotent: an already tripped ESS keeps its first reason)."""
    when = at if at is not None else int(time.time() * 1000)

    def change(old: EssState) -> Any:
        if old.tripped:
            return old, None, by, reason, when, {}
        new = old.model_copy(
            update={
                "tripped": True,
                "reason": reason,
                "evaluator": evaluator,
                "tripped_at": when,
                "by": by,
                "trips": old.trips + 1,
            }
        )
        return new, "trip", by, reason, when, {"evaluator": evaluator}

    return _update(client, change)[1]


def reset(client: redis.Redis, reason: str, by: str) -> EssState:
    """Clear a trip. Operators only (``quantumctl ess reset``); a reason is required."""
    if not reason.strip():
        raise ValueError("a reason is required to reset the emergency stop")
    when = int(time.time() * 1000)

    def change(old: EssState) -> Any:
        new = old.model_copy(
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
