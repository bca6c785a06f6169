"""The ledger's attribution and comparison rules, on records and rows built here."""

from __future__ import annotations

from typing import Any

import pytest

from quantum.exchange.income import IncomeRecord
from quantum.ledger.compare import Tolerance, compare, day_of

HOUR = 3_600_000
DAY0 = 1_756_684_800_000  # 2025-09-01T00:00Z


def trade(trade_id: str, entry: int, exit_: int, *, symbol: str = "BTCUSDT", pnl: float = 10.0,
          fees: float = 0.5, funding: float = 0.1) -> dict[str, Any]:
    return {"trade_id": trade_id, "symbol": symbol, "side": "LONG", "entry_ts": entry,
            "exit_ts": exit_, "gross_pnl": pnl, "fees": fees, "funding": funding,
            "net_pnl": pnl - fees - funding}


def income(kind: str, amount: float, ts: int, *, symbol: str = "BTCUSDT", trade_id: str = "",
           asset: str = "USDT") -> IncomeRecord:
    return IncomeRecord(symbol=symbol, income_type=kind, amount=amount, asset=asset,
                        time_ms=ts, tran_id=f"{kind}-{ts}", trade_id=trade_id)


def booked(entry: int, exit_: int, **named: Any) -> list[IncomeRecord]:
    """What a venue books for ``trade(…)``'s defaults."""
    return [income("COMMISSION", -0.25, entry, **named), income("FUNDING_FEE", -0.1, entry + 1,
                                                               **named),
            income("REALIZED_PNL", 10.0, exit_, **named), income("COMMISSION", -0.25, exit_,
                                                                 **named)]


def run(trades: list[dict[str, Any]], records: list[IncomeRecord],
        open_positions: list[dict[str, Any]] | None = None, **kw: Any) -> Any:
    return compare(trades, open_positions or [], records, since_ms=DAY0,
                   until_ms=kw.pop("until_ms", DAY0 + 2 * 24 * HOUR),
                   tolerance=Tolerance(absolute=0.01, ratio=0.0005), slack_ms=5_000, **kw)


def test_records_within_a_trades_life_and_slack_match_it() -> None:
    entry, exit_ = DAY0 + HOUR, DAY0 + 2 * HOUR
    result = run([trade("t1", entry, exit_)], booked(entry - 3_000, exit_ + 4_000))
    assert result.differences == [] and result.trades[0]["income_records"] == 4
    assert result.days[0]["day"] == day_of(exit_) == "2025-09-01"


def test_a_named_trade_wins_over_time_and_a_stray_record_is_unattributed() -> None:
    entry, exit_ = DAY0 + HOUR, DAY0 + 2 * HOUR
    records = booked(entry, exit_, trade_id="t1")
    records.append(income("COMMISSION", -0.3, DAY0 + 10 * HOUR))  # no trade, no position
    result = run([trade("t1", entry, exit_)], records)
    assert result.trades[0]["status"] == "match"
    assert [d.key for d in result.differences] == ["day:2025-09-01:fees"]
    assert result.differences[0].difference == pytest.approx(0.3)
    assert len(result.unattributed) == 1


def test_income_of_an_open_position_waits() -> None:
    records = [income("COMMISSION", -0.25, DAY0 + 5 * HOUR),
               income("FUNDING_FEE", -0.1, DAY0 + 8 * HOUR)]
    result = run([], records, [{"symbol": "BTCUSDT", "opened_ts": DAY0 + 5 * HOUR}])
    assert result.differences == [] and result.waiting == 2


def test_other_assets_and_types_are_counted_apart() -> None:
    entry, exit_ = DAY0 + HOUR, DAY0 + 2 * HOUR
    records = [*booked(entry, exit_), income("COMMISSION", -0.001, exit_, asset="BNB"),
               income("TRANSFER", 100.0, exit_)]
    result = run([trade("t1", entry, exit_)], records)
    assert result.differences == []
    assert result.ignored == {"asset BNB": 1, "type TRANSFER": 1}


def test_small_component_differences_that_add_up_show_as_net() -> None:
    entry, exit_ = DAY0 + HOUR, DAY0 + 2 * HOUR
    records = [income("COMMISSION", -0.259, entry), income("FUNDING_FEE", -0.109, entry + 1),
               income("REALIZED_PNL", 9.995, exit_), income("COMMISSION", -0.25, exit_)]
    result = run([trade("t1", entry, exit_)], records)
    assert {d.component for d in result.differences} == {"net"}


def test_a_journal_trade_the_venue_never_booked_differs() -> None:
    result = run([trade("t1", DAY0 + HOUR, DAY0 + 2 * HOUR)], [])
    assert result.trades[0]["status"] == "differs"
    assert result.trades[0]["differing"] == ["realised_pnl", "fees", "funding"]


def test_trades_after_the_settling_cutoff_take_their_income_unreported() -> None:
    entry, exit_ = DAY0 + HOUR, DAY0 + 2 * HOUR
    result = run([trade("t1", entry, exit_)], booked(entry, exit_), until_ms=exit_ - 1)
    assert result.trades == [] and result.unattributed == [] and result.differences == []
