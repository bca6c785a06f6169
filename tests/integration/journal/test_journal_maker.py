"""The journal records what a maker entry really cost: the fill at its limit with the maker
fee, and an entry that expired unfilled as cancelled with no fee (SQLite, the real writer,
events from the real paper book)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from quantum.bus.envelope import new_envelope
from quantum.contracts.events import ExitPlan, OrderRequest, TakeProfit, Tick
from quantum.exchange.venues.paper.config import PaperConfig
from quantum.exchange.venues.paper.execution import PaperExchange
from quantum.journal.database import make_engine, upgrade
from quantum.journal.models import FillRow, OrderRow
from quantum.journal.writer import Journal

BAR_MS = 300_000
START = 1_756_684_799_999
PRICE = 60_000.0


def maker(plan_id: str, limit: float) -> OrderRequest:
    return OrderRequest(
        client_order_id="qt-" + plan_id, plan_id=plan_id, symbol="BTCUSDT", side="BUY",
        position_side="LONG", quantity=0.02, reference_price=PRICE, leverage=5,
        reduce_only=False, reason="entry", bar_time=START,
        exit_plan=ExitPlan(profile="DEFAULT", stop_loss=58_000.0,
                           take_profits=(TakeProfit(price=62_000.0, fraction=1.0),)),
        order_type="LIMIT", limit_price=limit, time_in_force="GTX",
        expires_at=START + 2 * BAR_MS)


def tick(ts: int, low: float) -> Tick:
    return Tick(symbol="BTCUSDT", ts=ts, open=PRICE, high=PRICE * 1.001, low=low, close=PRICE,
                source="replay")


def test_a_maker_fill_and_an_expiry_are_journaled_with_the_fee_paid(tmp_path: Path) -> None:
    book = PaperExchange.fresh(PaperConfig())
    book.on_tick(tick(START, PRICE * 0.999))
    filled, expired = maker("filled", 59_900.0), maker("expired", 59_000.0)
    events: list[Any] = []
    for order in (filled, expired):
        events.append(new_envelope(order, ts=START, source="apply-layer", key=order.plan_id))
        events += [new_envelope(x, ts=START, source="execution", key=f"{order.plan_id}-a")
                   for x in book.submit(order, START)]
    for k, low in ((1, 59_800.0), (2, 59_500.0)):  # fills the first; the second expires
        reports, _, _ = book.on_tick(tick(START + k * BAR_MS, low))
        events += [new_envelope(x, ts=x.ts, source="execution", key=f"{x.plan_id}-{x.kind}")
                   for x in reports]
    engine = make_engine(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    upgrade(engine)
    Journal(engine).write(events)
    with engine.connect() as connection:
        orders = {row.plan_id: row for row in connection.execute(select(OrderRow))}
        fills = list(connection.execute(select(FillRow)))
    engine.dispose()
    assert orders["filled"].status == "filled"
    assert orders["filled"].average_price == 59_900.0
    assert orders["filled"].fees == pytest.approx(0.02 * 59_900.0 * 0.0002)
    assert orders["expired"].status == "cancelled" and orders["expired"].fees == 0.0
    assert [(f.price, f.fee) for f in fills] == [(59_900.0, pytest.approx(0.02 * 59_900 * 2e-4))]
