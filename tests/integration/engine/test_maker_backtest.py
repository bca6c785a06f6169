"""Maker entries through the whole backtest: real bars, the real handlers, every cost.

With ``sizing.entry_order=maker`` the apply-layer releases post-only limit entries; the
paper book fills them only when a later bar trades through, at the limit with the maker
fee, and every exit stays a market order with the taker fee. So each closed trade's fees
are exactly ``quantity × (entry × maker fee + exit × taker fee)``, and entries that were
never traded through are cancelled as expired or refused as post-only, not filled.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from quantum.engine.backtest import BacktestRequest, run_backtest

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
MAKER = (("sizing.entry_order", "maker"), ("sizing.maker_offset_bps", 5.0),
         ("sizing.maker_ttl_bars", 3))


def backtest(policy: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return run_backtest(BacktestRequest(
        data_dir=SAMPLE, symbols=SYMBOLS, start=datetime(2025, 9, 1, tzinfo=UTC),
        end=datetime(2025, 9, 5, tzinfo=UTC), report_path=None, policy=policy), processes=1)


def test_maker_entries_trade_and_pay_the_maker_fee_in_and_the_taker_fee_out() -> None:
    maker = backtest(MAKER)
    assert maker["trades"] > 5, "the range must trade to prove anything"
    for trade in maker["trade_list"]:
        expected = trade["quantity"] * (trade["entry_price"] * 0.0002
                                        + trade["exit_price"] * 0.0004)
        assert trade["fees"] == pytest.approx(expected, rel=1e-9), trade
    # Fewer entries fill than are released: the rest expired or were refused unfilled.
    events = maker["events"]
    assert events["apply.result"] > maker["trades"]
    assert maker["fees"] == pytest.approx(sum(t["fees"] for t in maker["trade_list"]))


def test_taker_entries_are_unchanged_by_default() -> None:
    taker = backtest(())
    assert taker["trades"] > 5
    for trade in taker["trade_list"]:  # taker in, taker out
        expected = trade["quantity"] * (trade["entry_price"] + trade["exit_price"]) * 0.0004
        assert trade["fees"] == pytest.approx(expected, rel=1e-9), trade
