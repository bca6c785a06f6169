"""An operator's forced exit (``quantumctl exit``, the dashboard) on a real Redis: the
request is audited, the exit-brain closes the position on its own clock (market time on
the event clock, never the wall time of the command) and clears the request in the same
commit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import redis
from typer.testing import CliRunner

from quantum.bus.envelope import new_envelope
from quantum.contracts.events import ExecutionReport, HarvestIntent, PortfolioState, Tick
from quantum.contracts.streams import HARVEST_INTENT
from quantum.ctl.main import app
from quantum.exits import manual
from quantum.journal.synthetic import round_trips
from quantum.registry.fleet import EXIT_REQUESTS_KEY, PORTFOLIO_KEY
from quantum.risk import ess


def open_position(r: redis.Redis) -> tuple[list[Any], PortfolioState]:
    """The synthetic journal's events with its last trade open, and the portfolio showing it."""
    events = list(round_trips(40, open_last=True))
    state = [e.payload for e in events if isinstance(e.payload, PortfolioState)][-1]
    r.set(PORTFOLIO_KEY, orjson.dumps(state.model_dump(mode="json")))
    return events, state


def harvests(out: Any) -> list[HarvestIntent]:
    return [e.payload for s, e in out.events
            if s == HARVEST_INTENT and isinstance(e.payload, HarvestIntent)]


def test_a_forced_exit_closes_on_the_event_clock_and_is_audited(
        r: redis.Redis, redis_url: str, on_bus: Callable[..., Any]) -> None:
    events, state = open_position(r)
    position = state.positions[0]
    brain = on_bus("exit-brain", clock="event")
    fill = next(e for e in events if isinstance(e.payload, ExecutionReport)
                and e.payload.position_id == position.position_id and e.payload.kind == "fill"
                and not e.payload.reduce_only)
    market_ms = fill.ts + 300_000
    tick = Tick(symbol=position.symbol, ts=market_ms, open=position.mark_price,
                high=position.mark_price, low=position.mark_price, close=position.mark_price,
                mark_price=position.mark_price, source="replay")
    brain.commit(brain.deliver(fill, new_envelope(tick, ts=market_ms, source="market-publisher",
                                                  key="t1")))

    refused = CliRunner().invoke(app, ["exit", "position-0", "--reason", "drill",
                                       "--redis-url", redis_url])
    assert refused.exit_code == 2 and "no open position 'position-0'" in refused.output
    result = CliRunner().invoke(app, ["exit", position.position_id, "--reason", "drill",
                                      "--redis-url", redis_url])
    assert result.exit_code == 0, result.output
    again = CliRunner().invoke(app, ["exit", position.position_id, "--reason", "twice",
                                     "--redis-url", redis_url])
    assert again.exit_code == 2 and "already pending" in again.output
    audit = ess.audit(r, 1)[0]
    assert audit["action"] == "force_exit" and audit["reason"] == "drill"
    assert audit["position_id"] == position.position_id and "@" in audit["by"]

    from quantum.bus.runner import Outbox

    out = Outbox(brain.runner.sub.produces)
    brain.service.on_idle(out, now=2e9)  # wall time far beyond the market's
    brain.commit(out)
    [harvest] = harvests(out)
    assert harvest.position_id == position.position_id and harvest.fraction == 1.0
    assert harvest.reason == manual.REASON
    assert harvest.ts == market_ms  # the fleet's clock, not the wall clock
    assert orjson.loads(r.get(EXIT_REQUESTS_KEY) or b"null") == []
    out = Outbox(brain.runner.sub.produces)
    brain.service.on_idle(out, now=2e9 + 5)
    assert harvests(out) == []  # handled once


def test_an_unfollowed_position_is_still_closed(r: redis.Redis,
                                                on_bus: Callable[..., Any]) -> None:
    """The exit-brain lost track (state lost): the exit still goes out; execution refuses
    it if the position is gone. Exits are never blocked."""
    _, state = open_position(r)
    position = state.positions[0]
    brain = on_bus("exit-brain")  # the wall clock
    manual.request_exit(r, position.position_id, "drill", "dashboard:test")
    from quantum.bus.runner import Outbox

    out = Outbox(brain.runner.sub.produces)
    brain.service.on_idle(out, now=1e9)
    brain.commit(out)
    [harvest] = harvests(out)
    assert (harvest.symbol, harvest.side) == (position.symbol, position.side)
    assert harvest.price == position.mark_price and harvest.reason == manual.REASON
    assert manual.waiting(r) == []
