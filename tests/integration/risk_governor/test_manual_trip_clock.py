"""A manual ESS trip on an event-clock fleet: the trip's announcement (and so the forced
closes the exit-brain makes from it) carries the fleet's event time, not the wall time of
the command (issue 14: a 397-day trade)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import redis

from quantum.bus.runner import Outbox
from quantum.contracts.events import ExecutionReport, PortfolioState, RiskEvent
from quantum.contracts.streams import RISK_EVENTS
from quantum.journal.synthetic import round_trips
from quantum.registry.fleet import PORTFOLIO_KEY
from quantum.risk import ess


def test_a_manual_trip_is_announced_at_the_fleets_event_time(
        r: redis.Redis, on_bus: Callable[..., Any]) -> None:
    events = list(round_trips(4, open_last=True))
    state = [e.payload for e in events if isinstance(e.payload, PortfolioState)][-1]
    r.set(PORTFOLIO_KEY, orjson.dumps(state.model_dump(mode="json")))
    governor = on_bus("risk-governor", clock="event")
    report = next(e for e in reversed(events) if isinstance(e.payload, ExecutionReport))
    governor.commit(governor.deliver(report))  # the governor's clock: this event's time
    tripped = ess.trip(r, "operator drill", by="alice@host")
    assert tripped.tripped_at > report.ts + 86_400_000  # stamped with the wall clock
    out = Outbox(governor.runner.sub.produces)
    governor.service.on_idle(out, now=1e9)
    [announcement] = [e for s, e in out.events if s == RISK_EVENTS]
    assert isinstance(announcement.payload, RiskEvent)
    assert announcement.payload.kind == "ess_tripped"
    assert announcement.ts == report.ts
