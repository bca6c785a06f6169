"""Contracts refuse bad plans and orders at the edge: empty ids, malformed symbols, times
in the future; and the paper exchange's duplicate guard is bounded by time."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from quantum.bus.envelope import InvalidEvent, decode, encode, new_envelope
from quantum.contracts.events import (
    EVENT_TYPES,
    FUTURE_SKEW_MS,
    ExecutionReport,
    ExitPlan,
    HarvestIntent,
    OrderRequest,
    Plan,
)
from quantum.exchange.venues.paper.execution import PaperExchange

PLAN = ExitPlan(profile="DEFAULT", stop_loss=58_000.0, take_profits=())


def now_ms() -> int:
    return int(time.time() * 1000)


def plan_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "plan_id": "p-1", "intent_id": "i-1", "symbol": "BTCUSDT", "side": "LONG",
        "quantity": 0.01, "reference_price": 60_000.0, "notional": 600.0, "leverage": 5,
        "confidence": 0.8, "size_multiplier": 1.0, "bar_time": now_ms() - 300_000,
        "exit_plan": PLAN.model_dump(),
    }
    fields.update(changes)
    return fields


def entry_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "client_order_id": "qt-p1", "plan_id": "p-1", "symbol": "BTCUSDT", "side": "BUY",
        "position_side": "LONG", "quantity": 0.01, "reference_price": 60_000.0,
        "leverage": 5, "reduce_only": False, "reason": "entry",
        "bar_time": now_ms() - 300_000, "exit_plan": PLAN.model_dump(),
    }
    fields.update(changes)
    return fields


def decoded(model: type[Any], payload: dict[str, Any]) -> Any:
    """Through the real decoder, as the runner reads an entry."""
    sample = model.model_validate(
        plan_fields() if model is Plan else entry_fields())
    fields = encode(new_envelope(sample, ts=now_ms(), source="test", key="k"))
    fields["payload"] = orjson.dumps(payload)
    raw = {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}
    return decode(raw, EVENT_TYPES)


@pytest.mark.parametrize(("change", "field"), [
    ({"plan_id": ""}, "plan_id"),
    ({"intent_id": " "}, "intent_id"),
    ({"symbol": ""}, "symbol"),
    ({"symbol": "btcusdt"}, "symbol"),
    ({"symbol": "BTC"}, "symbol"),
    ({"symbol": "BTCUSD"}, "symbol"),
    ({"symbol": "BTC-USDT"}, "symbol"),
    ({"bar_time": 4_102_444_800_000}, "bar_time"),  # the year 2100: "fresh" forever
    ({"bar_time": -1}, "bar_time"),
])
def test_a_bad_plan_is_refused_by_the_decoder_naming_the_field(
        change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidEvent, match=field):
        decoded(Plan, plan_fields(**change))


@pytest.mark.parametrize(("change", "field"), [
    ({"client_order_id": ""}, "client_order_id"),
    ({"client_order_id": "qt-" + "x" * 40}, "client_order_id"),  # Binance allows 36
    ({"client_order_id": "qt plan"}, "client_order_id"),
    ({"plan_id": ""}, "plan_id"),
    ({"reason": ""}, "reason"),
    ({"symbol": "ETH/USDT"}, "symbol"),
    ({"bar_time": now_ms() + FUTURE_SKEW_MS + 86_400_000}, "bar_time"),
])
def test_a_bad_order_is_refused_by_the_decoder_naming_the_field(
        change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidEvent, match=field):
        decoded(OrderRequest, entry_fields(**change))


@pytest.mark.parametrize("symbol", ["BTCUSDT", "1000PEPEUSDT", "ETHUSDC", "BTCUSDT_250328"])
def test_well_formed_symbols_and_a_small_clock_skew_pass(symbol: str) -> None:
    plan = decoded(Plan, plan_fields(symbol=symbol, bar_time=now_ms() + 60_000)).payload
    assert plan.symbol == symbol


def test_a_harvest_in_the_future_or_without_ids_is_refused() -> None:
    good = {"harvest_id": "h-1", "position_id": "p-1", "symbol": "BTCUSDT", "side": "LONG",
            "fraction": 1.0, "price": 60_000.0, "reason": "stop_loss", "ts": now_ms()}
    HarvestIntent.model_validate(good)
    for change in ({"harvest_id": ""}, {"position_id": ""},
                   {"ts": now_ms() + FUTURE_SKEW_MS + 60_000}):
        with pytest.raises(ValueError, match=next(iter(change))):
            HarvestIntent.model_validate({**good, **change})


def test_a_book_report_is_a_valid_execution_report() -> None:
    from quantum.contracts.events import BookSummary

    summary = BookSummary(source="rebuilt_from_venue", balance=9_000.0, positions=("ETHUSDT",),
                          open_orders=1, detail="x")
    report = ExecutionReport.book_report(summary, 5)
    again = ExecutionReport.model_validate_json(report.model_dump_json())
    assert (again.kind, again.reason, again.book) == ("book", "rebuilt_from_venue", summary)


# --- the paper exchange's duplicate guard ---------------------------------------------------


def order(i: int, ts: int) -> OrderRequest:
    return OrderRequest.model_validate(entry_fields(client_order_id=f"qt-{i}", plan_id=f"p-{i}",
                                                    bar_time=ts))


def test_paper_client_ids_are_kept_for_a_time_window_not_a_count() -> None:
    book = PaperExchange(10_000.0, 0.0004, 2.0, 0.004, order_retention_ms=3_600_000)
    start = 1_756_684_800_000
    for i in range(2_000):  # a burst far past the old 500-id bound, inside the window
        assert book.submit(order(i, start + i), start + i)
    assert book.knows("qt-0") and book.submit(order(0, start), start + 3_000) == []
    restored = PaperExchange.from_snapshot(orjson.loads(orjson.dumps(book.snapshot())))
    assert restored.knows("qt-0") and restored.seen_orders == book.seen_orders
    later = start + 3_600_000 + 10_000
    restored.submit(order(9_999, later), later)  # event time moves on: old ids are pruned
    assert not restored.knows("qt-0") and restored.knows("qt-9999")


def test_a_snapshot_with_the_old_list_of_ids_still_loads() -> None:
    book = PaperExchange(10_000.0, 0.0004, 2.0, 0.004)
    data = book.snapshot()
    data["seen_orders"], data["clock_ms"] = ["qt-a", "qt-b"], 42
    data.pop("order_retention_ms")
    restored = PaperExchange.from_snapshot(data)
    assert restored.seen_orders == {"qt-a": 42, "qt-b": 42}
