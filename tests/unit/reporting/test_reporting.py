"""The reporting package on a report built by hand from real bars of ``data/sample``.

Three trades on BTCUSDT and ETHUSDT over the first two days of September 2025, priced at
real opens and closes, so the benchmarks, the candles and the trade marks all meet the
same data the replay would have read.
"""

from __future__ import annotations

import io
import math
import re
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from quantum.replay.data import load_symbol
from quantum.replay.report import daily_sharpe, max_drawdown
from quantum.reporting import render
from quantum.reporting.analysis import (
    TOTAL,
    always_flat,
    benchmarks,
    drawdown_series,
    exit_reasons,
    per_symbol,
    period_returns,
)
from quantum.reporting.page import page_html, resample, write_html
from quantum.reporting.tables import print_report

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"
START = 1_756_684_800_000  # 2025-09-01 00:00 UTC, a Monday (ISO week 36)
STEP = 300_000
END = START + 2 * 86_400_000 - 1  # the close of the last bar of 2025-09-02
FEE, SLIP = 0.0004, 2.0 / 10_000
INITIAL = 10_000.0


def _trade(
    number: int, symbol: str, side: str, quantity: float, entry: int, exit_: int, reason: str
) -> dict[str, Any]:
    """A trade opened at bar ``entry``'s open and closed at bar ``exit_``'s close."""
    data = load_symbol(SAMPLE, symbol, start_ms=START, end_ms=END + 1)
    entry_price, exit_price = float(data.ohlcv[entry, 0]), float(data.ohlcv[exit_, 3])
    sign = 1 if side == "LONG" else -1
    gross = sign * quantity * (exit_price - entry_price)
    fees = quantity * (entry_price + exit_price) * FEE
    funding = 0.5 * number  # any figure: the breakdown only sums it
    entry_ts, exit_ts = int(data.open_time[entry]), int(data.open_time[exit_]) + STEP - 1
    return {
        "trade_id": f"t{number}",
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "entry_price": entry_price,
        "exit_price": exit_price,
        "entry_ts": entry_ts,
        "exit_ts": exit_ts,
        "gross_pnl": gross,
        "fees": fees,
        "funding": funding,
        "net_pnl": gross - fees - funding,
        "exit_reason": reason,
        "holding_seconds": (exit_ts - entry_ts) / 1000,
    }


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    trades = [
        _trade(1, "BTCUSDT", "LONG", 0.05, 10, 40, "take_profit"),
        _trade(2, "ETHUSDT", "SHORT", 1.0, 100, 300, "stop_loss"),
        _trade(3, "BTCUSDT", "SHORT", 0.04, 400, 500, "take_profit"),
    ]
    curve, equity = [], INITIAL
    for trade in trades:
        equity += trade["net_pnl"]
        curve.append([trade["exit_ts"], equity])
    net = [t["net_pnl"] for t in trades]
    return {
        "initial_balance": INITIAL,
        "final_balance": equity,
        "net_pnl": sum(net),
        "gross_pnl": sum(t["gross_pnl"] for t in trades),
        "fees": sum(t["fees"] for t in trades),
        "funding": sum(t["funding"] for t in trades),
        "trades": len(trades),
        "win_rate": sum(x > 0 for x in net) / len(net),
        "max_drawdown": max_drawdown([INITIAL, *(e for _, e in curve)]),
        "sharpe": daily_sharpe([t for t, _ in curve], [e for _, e in curve], INITIAL),
        "exit_reasons": {"stop_loss": 1, "take_profit": 2},
        "klines": 1152,
        "wall_seconds": 4.0,
        "klines_per_second": 288.0,
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "start_ms": START,
        "end_ms": END,
        "trade_list": trades,
        "equity_curve": curve,
    }


def test_per_symbol_rows_add_up_to_the_total(report: dict[str, Any]) -> None:
    *rows, total = per_symbol(report["trade_list"])
    assert [r.symbol for r in rows] == ["BTCUSDT", "ETHUSDT"] and total.symbol == TOTAL
    assert sum(r.trades for r in rows) == total.trades == 3
    for field in ("net_pnl", "fees", "funding"):
        assert sum(getattr(r, field) for r in rows) == pytest.approx(getattr(total, field))
    assert total.net_pnl == pytest.approx(report["net_pnl"])
    assert total.win_rate == pytest.approx(report["win_rate"])
    assert total.best_trade == max(t["net_pnl"] for t in report["trade_list"])
    btc = rows[0]
    assert btc.average_hold_hours == pytest.approx((31 * 5 + 101 * 5) / 2 / 60)


def test_exit_reasons_share_and_order(report: dict[str, Any]) -> None:
    rows = exit_reasons(report["trade_list"])
    assert [(r.reason, r.count) for r in rows] == [("take_profit", 2), ("stop_loss", 1)]
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    assert sum(r.net_pnl for r in rows) == pytest.approx(report["net_pnl"])


def test_period_returns_chain_to_the_overall_return() -> None:
    day = 86_400_000
    saturday = START - 2 * day  # 2025-08-30, ISO week 35
    curve = [[saturday + i * day, 10_000 + 150 * math.sin(i)] for i in range(12)]
    overall = curve[-1][1] / 10_000
    weeks, months = period_returns(curve, 10_000, "week"), period_returns(curve, 10_000, "month")
    assert [r.label for r in weeks] == ["2025-W35", "2025-W36", "2025-W37"]
    assert [r.label for r in months] == ["2025-08", "2025-09"]
    for rows in (weeks, months):
        assert math.prod(1 + r.return_pct / 100 for r in rows) == pytest.approx(overall)
        assert all(b.start_equity == a.end_equity for a, b in pairwise(rows))
        assert all(0 <= r.max_drawdown < 0.05 for r in rows)


def test_period_returns_list_quiet_periods(report: dict[str, Any]) -> None:
    rows = period_returns(report["equity_curve"], INITIAL, "week", end_ms=END + 14 * 86_400_000)
    assert [r.label for r in rows] == ["2025-W36", "2025-W37", "2025-W38"]
    assert rows[0].end_equity == pytest.approx(report["final_balance"])
    assert [r.return_pct for r in rows[1:]] == [0.0, 0.0]


def test_drawdown_series_counts_the_initial_balance_as_a_peak() -> None:
    times, drawdown = drawdown_series([[1, 9_000.0], [2, 11_000.0], [3, 9_900.0]], 10_000)
    assert times.tolist() == [1, 2, 3]
    assert drawdown.tolist() == pytest.approx([0.1, 0.0, 0.1])


def _hand_buy_and_hold(symbols: list[str]) -> tuple[float, list[float]]:
    """The benchmark the long way: a plain loop per bar, on the same real bars."""
    legs = []
    for symbol in symbols:
        data = load_symbol(SAMPLE, symbol, start_ms=START, end_ms=END + 1)
        quantity = INITIAL / len(symbols) / (data.ohlcv[0, 0] * (1 + SLIP) * (1 + FEE))
        paid, marks = 0.0, []
        for open_time, bar in zip(data.open_time.tolist(), data.ohlcv, strict=True):
            paid += quantity * bar[3] * data.funding.get(open_time + STEP, 0.0)
            marks.append(quantity * bar[3] - paid)
        final = quantity * data.ohlcv[-1, 3] * (1 - SLIP) * (1 - FEE) - paid
        legs.append((final, marks))
    curve = [sum(values) for values in zip(*(marks for _, marks in legs), strict=True)]
    return sum(final for final, _ in legs), curve


def test_buy_and_hold_matches_a_hand_computation() -> None:
    held, flat = benchmarks(SAMPLE, ["BTCUSDT", "ETHUSDT"], START, END, INITIAL)
    final, curve = _hand_buy_and_hold(["BTCUSDT", "ETHUSDT"])
    assert held.final_balance == pytest.approx(final, rel=1e-12)
    assert held.net_return_pct == pytest.approx((final / INITIAL - 1) * 100)
    assert held.max_drawdown == pytest.approx(max_drawdown([INITIAL, *curve, final]))
    times = [START + i * STEP + STEP - 1 for i in range(len(curve))]
    expected_sharpe = daily_sharpe([*times, times[-1]], [*curve, final], INITIAL)
    assert held.sharpe == pytest.approx(expected_sharpe)
    assert flat == always_flat(INITIAL)
    assert (flat.final_balance, flat.net_return_pct, flat.max_drawdown, flat.sharpe) == (
        INITIAL,
        0.0,
        0.0,
        0.0,
    )


def test_resampled_candles_keep_the_extremes() -> None:
    data = load_symbol(SAMPLE, "BTCUSDT", start_ms=START, end_ms=END + 1)
    starts, candles = resample(data.open_time, data.ohlcv, 3_600_000)
    assert starts.size == 48 and starts[1] - starts[0] == 3_600_000
    assert candles[0].tolist() == [
        data.ohlcv[0, 0],
        data.ohlcv[:12, 1].max(),
        data.ohlcv[:12, 2].min(),
        data.ohlcv[11, 3],
    ]
    assert candles[:, 1].max() == data.ohlcv[:, 1].max()


def test_print_report_shows_the_key_figures(report: dict[str, Any]) -> None:
    rows = benchmarks(SAMPLE, report["symbols"], START, END, INITIAL)
    console = Console(record=True, width=100, file=io.StringIO())
    print_report(report, rows, console)
    text = console.export_text()
    for expected in (
        "Per symbol",
        "BTCUSDT",
        "ETHUSDT",
        TOTAL,
        "take_profit",
        "Weekly returns",
        "2025-W36",
        "buy & hold",
        "always flat",
        f"{report['net_pnl']:+,.2f}",
        f"{report['fees']:,.2f}",
        f"{rows[0].final_balance:,.2f}",
        f"{report['final_balance']:,.2f}",
    ):
        assert expected in text, expected
    assert max(len(line) for line in text.splitlines()) <= 100


def test_png_starts_with_the_png_signature(report: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from quantum.reporting.plots import write_png

    path = write_png(report, tmp_path / "replay.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained_and_escapes_data(report: dict[str, Any], tmp_path: Path) -> None:
    hostile = dict(report)
    evil = dict(report["trade_list"][1], exit_reason="<script>alert(1)</script>")
    odd = dict(report["trade_list"][0], symbol="<EVIL&CO>")
    hostile["trade_list"] = [report["trade_list"][0], evil, odd]
    page = write_html(hostile, SAMPLE, tmp_path / "replay.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert page.count("<svg") == 3  # equity, BTCUSDT, ETHUSDT; <EVIL&CO> has no data
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;EVIL&amp;CO&gt;" in page and "<EVIL" not in page
    assert page.count('<g class="trade">') == 2  # the third trade's symbol has no candles


def test_render_writes_beside_the_report(report: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    document = dict(report)
    console = Console(record=True, width=100, file=io.StringIO())
    written = render(document, SAMPLE, tmp_path / "replay.json", console)
    assert written == {"png": tmp_path / "replay.png", "html": tmp_path / "replay.html"}
    assert all(p.stat().st_size > 1000 for p in written.values())
    assert [row["name"] for row in document["benchmarks"]] == ["buy & hold", "always flat"]
    assert "buy &amp; hold" in page_html(document, SAMPLE)
    assert "Benchmarks" in console.export_text()


def test_old_reports_without_a_range_still_render(report: dict[str, Any]) -> None:
    old = {k: v for k, v in report.items() if k not in ("start_ms", "end_ms", "symbols")}
    page = page_html(old, SAMPLE)
    assert page.count("<svg") == 3  # the range and the symbols come from the trades
