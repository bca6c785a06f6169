"""Maker entries on the paper book, judged on real bars of ``data/sample``.

A post-only limit entry rests when it would not take liquidity, fills only when a later
bar trades *through* its price (a touch is not a fill), at the limit with the maker fee,
and is cancelled when it has not filled by its expiry. The bars are real BTCUSDT 5-minute
bars; each test searches them for the situation it needs, so nothing here is made up.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from quantum.contracts.events import (
    POST_ONLY_REJECTED,
    ExecutionReport,
    ExitPlan,
    OrderRequest,
    Tick,
)
from quantum.exchange.venues.paper.config import PaperConfig
from quantum.exchange.venues.paper.execution import PaperExchange
from quantum.replay.data import SymbolData, load_symbol
from quantum.risk.policy import Policy, PolicyError, compose

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"
BAR_MS = 300_000
TTL_BARS = 3


@pytest.fixture(scope="module")
def bars() -> SymbolData:
    return load_symbol(SAMPLE, "BTCUSDT", start_ms=1_756_684_800_000,  # 2025-09-01
                       end_ms=1_757_289_600_000)  # 2025-09-08


def tick(bars: SymbolData, i: int) -> Tick:
    o, h, low, c, _ = bars.ohlcv[i]
    return Tick(symbol="BTCUSDT", ts=int(bars.open_time[i]) + BAR_MS - 1, open=o, high=h,
                low=low, close=c, source="replay")


def limit_entry(bars: SymbolData, i: int, limit: float, side: str = "BUY",
                ttl: int = TTL_BARS) -> OrderRequest:
    """A post-only entry decided on bar ``i`` (its close the signal price)."""
    price = float(bars.ohlcv[i, 3])
    sign = 1.0 if side == "BUY" else -1.0
    bar_time = int(bars.open_time[i]) + BAR_MS - 1
    return OrderRequest(
        client_order_id=f"qt-maker{i}{side}", plan_id=f"plan-{i}-{side}", symbol="BTCUSDT",
        side=side, position_side="LONG" if side == "BUY" else "SHORT",  # type: ignore[arg-type]
        quantity=0.01, reference_price=price, leverage=5, reduce_only=False, reason="entry",
        bar_time=bar_time,
        exit_plan=ExitPlan(profile="DEFAULT", stop_loss=price * (1 - sign * 0.05),
                           take_profits=()),
        order_type="LIMIT", limit_price=limit, time_in_force="GTX",
        expires_at=bar_time + ttl * BAR_MS)


def book_after(bars: SymbolData, i: int) -> PaperExchange:
    """A fresh paper book that has seen bar ``i`` (its last price is that bar's close)."""
    book = PaperExchange.fresh(PaperConfig())
    book.on_tick(tick(bars, i))
    return book


def first(bars: SymbolData, found: Callable[[int], bool]) -> int:
    for i in range(len(bars.open_time) - TTL_BARS - 2):
        if found(i):
            return i
    raise AssertionError("the sample has no such stretch")


def reports_over(book: PaperExchange, bars: SymbolData, indices: range) -> list[
        tuple[int, ExecutionReport]]:
    out = []
    for j in indices:
        reports, _, _ = book.on_tick(tick(bars, j))
        out.extend((j, report) for report in reports)
    return out


def test_a_touch_of_the_limit_does_not_fill_a_trade_through_does_at_the_limit(
        bars: SymbolData) -> None:
    low, close = bars.ohlcv[:, 2], bars.ohlcv[:, 3]
    # Bar i+1 reaches down to a price below bar i's close; bar i+2 goes strictly lower.
    i = first(bars, lambda i: low[i + 1] < close[i] and low[i + 2] < low[i + 1])
    limit = float(low[i + 1])  # exactly the next bar's low: touched, not traded through
    book = book_after(bars, i)
    acked = book.submit(limit_entry(bars, i, limit), tick(bars, i).ts)
    assert [r.kind for r in acked] == ["ack"]
    assert reports_over(book, bars, range(i + 1, i + 2)) == []
    assert book.portfolio().pending_plans == (f"plan-{i}-BUY",)
    filled = reports_over(book, bars, range(i + 2, i + 3))
    assert [(j, r.kind) for j, r in filled] == [(i + 2, "fill")]
    fill = filled[0][1]
    assert fill.price == limit  # at the limit, without slippage
    assert fill.fee == pytest.approx(0.01 * limit * 0.0002)  # the maker fee
    position = book.positions["BTCUSDT"]
    assert position.entry_price == limit and position.fees == fill.fee
    assert book.portfolio().pending_plans == () and book.portfolio().pending_orders == 0


def test_a_sell_fills_only_when_a_bar_trades_above_it(bars: SymbolData) -> None:
    high, close = bars.ohlcv[:, 1], bars.ohlcv[:, 3]
    i = first(bars, lambda i: high[i + 1] > close[i] and high[i + 2] > high[i + 1])
    limit = float(high[i + 1])
    book = book_after(bars, i)
    assert [r.kind for r in book.submit(limit_entry(bars, i, limit, "SELL"),
                                        tick(bars, i).ts)] == ["ack"]
    filled = reports_over(book, bars, range(i + 1, i + 3))
    assert [(j, r.kind, r.price) for j, r in filled] == [(i + 2, "fill", limit)]
    assert book.positions["BTCUSDT"].side == "SHORT"


def test_no_fill_without_a_trade_through_and_the_order_expires_after_its_bars(
        bars: SymbolData) -> None:
    low, close = bars.ohlcv[:, 2], bars.ohlcv[:, 3]
    offset = 0.002  # 20 bps below the close
    i = first(bars, lambda i: bool(np.all(low[i + 1:i + 1 + TTL_BARS] > close[i] * (1 - offset))))
    limit = float(close[i]) * (1 - offset)
    book = book_after(bars, i)
    book.submit(limit_entry(bars, i, limit), tick(bars, i).ts)
    assert reports_over(book, bars, range(i + 1, i + TTL_BARS)) == []  # still resting
    assert book.portfolio().pending_orders == 1
    expired = reports_over(book, bars, range(i + TTL_BARS, i + TTL_BARS + 2))
    assert [(j, r.kind, r.reason) for j, r in expired] == [(i + TTL_BARS, "cancel", "expired")]
    assert book.positions == {} and book.pending == {}
    assert book.fees_paid == 0.0 and book.balance == book.initial_balance


@pytest.mark.parametrize(("side", "away"), [("BUY", 0.0), ("BUY", -0.001), ("SELL", 0.0),
                                            ("SELL", 0.001)])
def test_a_post_only_entry_that_would_take_liquidity_is_rejected(
        bars: SymbolData, side: str, away: float) -> None:
    """At the last price or on its far side (a buy at or above it, a sell at or below)."""
    i = 100
    close = float(bars.ohlcv[i, 3])
    limit = close * (1 - away)
    book = book_after(bars, i)
    reports = book.submit(limit_entry(bars, i, limit, side), tick(bars, i).ts)
    assert [(r.kind, r.code) for r in reports] == [("reject", POST_ONLY_REJECTED)]
    assert "Post Only" in (reports[0].message or "")
    assert book.pending == {} and book.portfolio().pending_plans == ()
    assert book.knows(f"qt-maker{i}{side}")  # a copy of it later is a duplicate
    assert book.submit(limit_entry(bars, i, limit, side), tick(bars, i).ts) == []


def test_a_resting_order_survives_the_book_being_restored_from_its_snapshot(
        bars: SymbolData) -> None:
    low, close = bars.ohlcv[:, 2], bars.ohlcv[:, 3]
    i = first(bars, lambda i: low[i + 1] >= close[i] * 0.999 and low[i + 2] < close[i] * 0.999)
    limit = float(close[i]) * 0.999
    book = book_after(bars, i)
    book.submit(limit_entry(bars, i, limit), tick(bars, i).ts)
    reports_over(book, bars, range(i + 1, i + 2))
    restored = book.restored(book.snapshot())
    assert restored.portfolio().pending_plans == (f"plan-{i}-BUY",)
    filled = reports_over(restored, bars, range(i + 2, i + 3))
    assert [(r.kind, r.price) for _, r in filled] == [("fill", limit)]


def test_market_entries_still_fill_at_the_next_open_with_the_taker_fee(
        bars: SymbolData) -> None:
    i = 50
    book = book_after(bars, i)
    order = limit_entry(bars, i, 1.0).model_copy(update={
        "order_type": "MARKET", "limit_price": None, "time_in_force": None,
        "expires_at": None})
    book.submit(order, tick(bars, i).ts)
    filled = reports_over(book, bars, range(i + 1, i + 2))
    price = float(bars.ohlcv[i + 1, 0]) * (1 + 2 / 10_000)
    assert [(r.kind, r.price) for _, r in filled] == [("fill", pytest.approx(price))]
    assert filled[0][1].fee == pytest.approx(0.01 * price * 0.0004)


def test_a_resting_entry_is_cancelled_when_new_risk_is_blocked(bars: SymbolData) -> None:
    i = 200
    limit = float(bars.ohlcv[i, 3]) * 0.9
    book = book_after(bars, i)
    book.submit(limit_entry(bars, i, limit), tick(bars, i).ts)
    assert book.resting_entries
    cancelled = book.cancel_resting(tick(bars, i + 1).ts, "ess_tripped")
    assert [(r.kind, r.reason) for r in cancelled] == [("cancel", "ess_tripped")]
    assert not book.resting_entries and book.pending == {}


def test_old_orders_and_snapshots_still_parse() -> None:
    """Events and books written before maker entries existed read as market orders."""
    order = OrderRequest.model_validate({
        "client_order_id": "qt-old", "plan_id": "p", "symbol": "BTCUSDT", "side": "BUY",
        "position_side": "LONG", "quantity": 1.0, "reference_price": 100.0, "leverage": 1,
        "reduce_only": False, "reason": "entry", "bar_time": 1})
    assert order.order_type == "MARKET" and order.limit_price is None
    snapshot = PaperExchange.fresh(PaperConfig()).snapshot()
    del snapshot["maker_fee"]
    assert PaperExchange.from_snapshot(snapshot).maker_fee == 0.0002
    with pytest.raises(ValueError, match="limit_price"):
        OrderRequest.model_validate({**order.model_dump(), "order_type": "LIMIT"})


@pytest.mark.parametrize(("key", "value"), [("sizing.entry_order", "limit"),
                                            ("sizing.maker_offset_bps", -1.0),
                                            ("sizing.maker_ttl_bars", 0)])
def test_bad_maker_policy_is_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(PolicyError, match=key.split(".")[1]):
        compose(Policy(), {key: value}, by="test", reason="maker")
