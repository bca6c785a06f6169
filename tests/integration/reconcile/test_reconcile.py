"""reconcile against the venue stand-in: drift injected behind the fleet's back is found,
handled, reported once, and the passes converge."""

from __future__ import annotations

from typing import Any

import orjson
import redis

from quantum.bus.redisports import redis_ports
from quantum.bus.runner import Outbox
from quantum.contracts.events import EVENT_TYPES, ReconcileEvent
from quantum.exchange.venues.binance.config import LiveConfig
from quantum.exchange.venues.binance.execution import LiveExchange
from quantum.exchange.venues.binance.http import BinanceFutures
from quantum.registry.fleet import EXECUTION_KEY, service
from quantum.standin.binance_rest import FuturesVenue
from services.reconcile.config import Settings
from services.reconcile.service import Reconcile


def ports(client: redis.Redis) -> Any:
    """A service's Redis ports on the wall clock, as its factory is handed them."""
    return redis_ports(client, EVENT_TYPES, event_clock=False)



def adapter(venue: FuturesVenue) -> BinanceFutures:
    return BinanceFutures(api_key=venue.account.api_key, api_secret=venue.account.api_secret,
                          rest_url=venue.rest_url)


def outbox() -> Outbox:
    return Outbox(frozenset(s.name for s in service("reconcile").produces))


def kinds(events: list[ReconcileEvent]) -> list[tuple[str, str]]:
    return sorted((e.kind, e.action) for e in events)


def test_drift_is_found_handled_and_converges(r: redis.Redis) -> None:
    with FuturesVenue(prices={"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0}) as venue:
        book = LiveExchange(adapter(venue), LiveConfig(protective_orders=False))
        book.restore({"positions": {"ETHUSDT": {
            "position_id": "p-eth", "symbol": "ETHUSDT", "side": "LONG", "quantity": 1.0,
            "initial_quantity": 1.0, "entry_price": 3_000.0, "leverage": 5, "opened_ts": 1,
            "stop_distance": 30.0, "exit_plan": None, "mark_price": 3_000.0}}})
        r.set(EXECUTION_KEY, orjson.dumps(book.snapshot()))
        venue.open_position_behind("BTCUSDT", 0.01, 59_000.0)  # opened by hand
        reconcile = Reconcile(Settings(exchange="paper"), ports(r), adapter(venue))
        first = reconcile.run_pass(outbox(), 1)
        assert kinds(first) == [("missing_position", "close_out"),
                                ("unknown_position", "protected")]
        stops = venue.snapshot()["algo"]
        assert len(stops) == 1 and float(stops[0]["triggerPrice"]) == 57_820.0
        # execution closes out what the exchange lacks
        missing = next(e for e in first if e.kind == "missing_position")
        _, trades = book.on_reconcile(missing)
        assert trades[0].exit_reason == "reconcile_missing" and not book.positions
        r.set(EXECUTION_KEY, orjson.dumps(book.snapshot()))
        second = reconcile.run_pass(outbox(), 2)
        assert kinds(second) == [("resolved", "none")]
        assert len(venue.snapshot()["algo"]) == 1, "a second pass must not stack stops"
        assert reconcile.run_pass(outbox(), 3) == []  # converged
        venue.close_position_behind("BTCUSDT")
        fourth = reconcile.run_pass(outbox(), 4)
        assert ("orphan_order", "cancelled") in kinds(fourth)
        assert venue.snapshot()["algo"] == []


def test_close_policy_flattens_an_unknown_position_once(r: redis.Redis) -> None:
    with FuturesVenue(prices={"BTCUSDT": 60_000.0}) as venue:
        venue.open_position_behind("BTCUSDT", -0.02, 61_000.0)
        reconcile = Reconcile(Settings(unknown_position_policy="close"), ports(r), adapter(venue))
        assert kinds(reconcile.run_pass(outbox(), 1)) == [("unknown_position", "closed")]
        assert venue.snapshot()["positions"] == {}
        assert kinds(reconcile.run_pass(outbox(), 2)) == [("resolved", "none")]
        assert len(venue.snapshot()["order_log"]) == 1


def test_an_unreachable_exchange_is_reported_and_never_blocks(r: redis.Redis) -> None:
    with FuturesVenue() as venue:
        unreachable = BinanceFutures(api_key="k", api_secret="s",
                                     rest_url="http://127.0.0.1:9", timeout_s=0.5)
        reconcile = Reconcile(Settings(), ports(r), unreachable)
        events = reconcile.run_pass(outbox(), 1)
        assert kinds(events) == [("exchange_unreachable", "retry next interval")]
        assert reconcile.run_pass(outbox(), 2) == []  # reported once
        reconcile.adapter = adapter(venue)
        assert kinds(reconcile.run_pass(outbox(), 3)) == [("resolved", "none")]
