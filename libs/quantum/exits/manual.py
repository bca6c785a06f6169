"""An operator's forced exit of one position, from ``quantumctl exit`` or the dashboard.

The operator never publishes an order. :func:`request_exit` checks that the position is
open in execution's portfolio, then, in one Redis transaction, appends a request to
``quantum:state:exit-brain:requests`` and its audit entry to the operator audit trail
(``quantum:state:ess:audit``, action ``force_exit``). The exit-brain picks pending requests
up within a second (:func:`take`) and closes the position the way it closes any other: a
reduce-only ``harvest.intent`` with the reason :data:`REASON`, stamped with the
exit-brain's own clock (the event clock in a replay, so a forced close in a replay happens
in market time, not at the wall time the button was pressed), and removes the requests in
the same commit, over the value it read (compare-and-set: a request added meanwhile makes
the commit ``STALE`` and is handled on the next turn).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quantum.contracts.events import PortfolioState
from quantum.registry.fleet import EXIT_REQUESTS_KEY, PORTFOLIO_KEY
from quantum.risk import ess

REASON = "manual_exit"
MAX_PENDING = 100


class ExitRefused(ValueError):
    """The request cannot be made (no such open position, too many pending); one line."""


class ExitRequest(BaseModel):
    """One pending forced exit; ``mark_price`` is the portfolio's at request time (the
    exit-brain prefers the newest close it saw)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(min_length=1, max_length=64)
    position_id: str = Field(min_length=1, max_length=64)
    symbol: str
    side: str
    mark_price: float = Field(gt=0)
    reason: str = Field(min_length=1, max_length=500)
    by: str = Field(min_length=1, max_length=200)
    at: int  # wall ms of the request (the audit's time, not the fill's)


def pending(raw: bytes | None) -> list[ExitRequest]:
    """The requests a stored value holds; an unreadable value holds none (the exit-brain
    logs and clears it rather than stalling every later request behind it)."""
    if not raw:
        return []
    try:
        items = orjson.loads(raw)
        return [ExitRequest.model_validate(item) for item in items]
    except (orjson.JSONDecodeError, ValidationError, TypeError):
        return []


def request_exit(client: redis.Redis, position_id: str, reason: str, by: str) -> ExitRequest:
    """Ask the exit-brain to close ``position_id`` in full, audited; raises
    :class:`ExitRefused` when execution's portfolio shows no such open position."""
    reason = reason.strip()
    if not reason:
        raise ExitRefused("a reason is required to force an exit")
    raw = client.get(PORTFOLIO_KEY)
    if raw is None:
        raise ExitRefused("no portfolio in Redis (is execution running?)")
    portfolio = PortfolioState.model_validate_json(raw)
    position = next((p for p in portfolio.positions if p.position_id == position_id), None)
    if position is None:
        raise ExitRefused(f"no open position {position_id!r}")
    request = ExitRequest(
        request_id=uuid.uuid4().hex, position_id=position.position_id, symbol=position.symbol,
        side=position.side, mark_price=position.mark_price, reason=reason, by=by,
        at=int(time.time() * 1000))
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(EXIT_REQUESTS_KEY)
                queued = pending(pipe.get(EXIT_REQUESTS_KEY))
                if any(q.position_id == position_id for q in queued):
                    pipe.unwatch()
                    raise ExitRefused(f"an exit of {position_id!r} is already pending")
                if len(queued) >= MAX_PENDING:
                    pipe.unwatch()
                    raise ExitRefused(f"{MAX_PENDING} exits already pending; is exit-brain up?")
                document = [q.model_dump() for q in queued] + [request.model_dump()]
                pipe.multi()
                pipe.set(EXIT_REQUESTS_KEY, orjson.dumps(document))
                ess.append_audit(pipe, "force_exit", by, reason, request.at, {
                    "position_id": position.position_id, "symbol": position.symbol,
                    "side": position.side, "request_id": request.request_id})
                pipe.execute()
                return request
            except redis.WatchError:
                continue


def waiting(client: redis.Redis) -> list[dict[str, Any]]:
    """The pending requests, for status views."""
    return [q.model_dump() for q in pending(client.get(EXIT_REQUESTS_KEY))]
