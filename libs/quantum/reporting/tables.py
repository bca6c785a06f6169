"""The report as tables: built once as plain text cells, printed with rich, reused as HTML.

The cells are formatted here and nowhere else, so the terminal and the HTML page cannot
disagree on a figure. Cells are :class:`rich.text.Text`, never markup: a symbol or exit
reason with ``[`` in it is shown as written, not read as a style.

A figure that can be either way is written with its sign (``+12.30``); the renderers colour
a cell by that leading sign alone, so no renderer needs to know which column is which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from quantum.reporting.analysis import (
    BenchmarkRow,
    exit_reasons,
    per_symbol,
    period_for,
    period_returns,
    report_range,
    strategy_row,
)

MINUS = "-"


@dataclass(frozen=True)
class TableData:
    """A titled table of text cells; ``numeric`` columns are right-aligned, and a
    ``total`` row (if any) is shown apart from the body."""

    title: str
    columns: tuple[str, ...]
    numeric: tuple[bool, ...]
    rows: tuple[tuple[str, ...], ...]
    total: tuple[str, ...] | None = None


def tone(cell: str) -> str:
    """``"pos"``, ``"neg"`` or ``""`` from a cell's leading sign (see the module doc);
    a figure that rounds to zero (``-0.00``) is neutral either way."""
    if cell[:1] not in ("+", MINUS) or not cell.strip("+-0.,% "):
        return ""
    return "pos" if cell.startswith("+") else "neg"


# --- formats ------------------------------------------------------------------------------


def signed(value: float) -> str:
    return f"{value:+,.2f}"


def money(value: float) -> str:
    return f"{value:,.2f}"


def percent(share: float) -> str:
    """A share 0..1 as a percentage."""
    return f"{share * 100:.2f} %"


def signed_percent(value_pct: float) -> str:
    return f"{value_pct:+.2f} %"


def utc_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


# --- tables -------------------------------------------------------------------------------


def overall_table(report: Mapping[str, Any]) -> TableData:
    """The headline figures, as ``quantumctl replay`` computed them."""
    initial = float(report["initial_balance"])
    final = float(report["final_balance"])
    span = report_range(report)
    rows = [
        ("Range (UTC)", f"{utc_day(span[0])} → {utc_day(span[1])}" if span else "—"),
        ("Symbols", ", ".join(str(s) for s in report.get("symbols", [])) or "—"),
        ("Initial balance", money(initial)),
        ("Final balance", money(final)),
        ("Net return", signed_percent((final / initial - 1) * 100 if initial else 0.0)),
        ("Net PnL", signed(float(report.get("net_pnl", final - initial)))),
        ("Gross PnL", signed(float(report.get("gross_pnl", 0.0)))),
        ("Fees", money(float(report.get("fees", 0.0)))),
        ("Funding paid", signed(float(report.get("funding", 0.0)))),
        ("Trades", str(int(report.get("trades", len(report.get("trade_list", [])))))),
        ("Win rate", percent(float(report.get("win_rate", 0.0)))),
        ("Max drawdown", percent(float(report.get("max_drawdown", 0.0)))),
        ("Sharpe (daily, annualised)", f"{float(report.get('sharpe', 0.0)):.2f}"),
        ("Klines replayed", f"{int(report.get('klines', 0)):,}"),
        ("Klines per second", f"{float(report.get('klines_per_second', 0.0)):,.0f}"),
    ]
    return TableData("Overall", ("Figure", "Value"), (False, True), tuple(rows))


def symbol_table(trades: Sequence[Mapping[str, Any]]) -> TableData:
    """Where the PnL came from, and what it cost, symbol by symbol."""
    columns = ("Symbol", "Trades", "Win", "Net PnL", "Fees", "Funding", "Hold h", "Best", "Worst")
    cells = [
        (
            row.symbol,
            str(row.trades),
            percent(row.win_rate),
            signed(row.net_pnl),
            money(row.fees),
            signed(row.funding),
            f"{row.average_hold_hours:.1f}",
            signed(row.best_trade),
            signed(row.worst_trade),
        )
        for row in per_symbol(trades)
    ]
    total = cells.pop()  # per_symbol ends with the TOTAL row
    numeric = (False, *([True] * (len(columns) - 1)))
    return TableData("Per symbol", columns, numeric, tuple(cells), total)


def reason_table(trades: Sequence[Mapping[str, Any]]) -> TableData:
    """Which exits make the money and which give it back."""
    cells = tuple(
        (row.reason, str(row.count), percent(row.share), signed(row.net_pnl), percent(row.win_rate))
        for row in exit_reasons(trades)
    )
    columns = ("Exit reason", "Trades", "Share", "Net PnL", "Win")
    return TableData("Exit reasons", columns, (False, True, True, True, True), cells)


def period_table(report: Mapping[str, Any]) -> TableData:
    """Returns by UTC month, or by ISO week when the range is too short for months."""
    span = report_range(report)
    period = period_for(span[1] - span[0]) if span else "month"
    rows = period_returns(
        report.get("equity_curve", []),
        float(report["initial_balance"]),
        period,
        start_ms=span[0] if span else None,
        end_ms=span[1] if span else None,
    )
    cells = tuple(
        (
            row.label,
            money(row.start_equity),
            money(row.end_equity),
            signed_percent(row.return_pct),
            percent(row.max_drawdown),
        )
        for row in rows
    )
    title = "Weekly returns (ISO weeks, UTC)" if period == "week" else "Monthly returns (UTC)"
    columns = ("Period", "Start equity", "End equity", "Return", "Max drawdown")
    return TableData(title, columns, (False, True, True, True, True), cells)


def _as_row(row: BenchmarkRow | Mapping[str, Any]) -> BenchmarkRow:
    return row if isinstance(row, BenchmarkRow) else BenchmarkRow.from_mapping(row)


def benchmark_table(
    report: Mapping[str, Any], benchmark_rows: Sequence[BenchmarkRow | Mapping[str, Any]]
) -> TableData:
    """The strategy beside holding and doing nothing on the same bars: is it worth it?"""
    rows = [strategy_row(report), *(_as_row(r) for r in benchmark_rows)]
    cells = tuple(
        (
            row.name,
            money(row.final_balance),
            signed_percent(row.net_return_pct),
            percent(row.max_drawdown),
            f"{row.sharpe:.2f}",
        )
        for row in rows
    )
    columns = ("Benchmark (same bars)", "Final balance", "Net return", "Max drawdown", "Sharpe")
    return TableData("Benchmarks", columns, (False, True, True, True, True), cells)


def report_tables(
    report: Mapping[str, Any], benchmark_rows: Sequence[BenchmarkRow | Mapping[str, Any]]
) -> list[TableData]:
    """Every table of the report, in reading order."""
    trades = report.get("trade_list", [])
    return [
        overall_table(report),
        benchmark_table(report, benchmark_rows),
        symbol_table(trades),
        reason_table(trades),
        period_table(report),
    ]


# --- rich ---------------------------------------------------------------------------------

_STYLES = {"pos": "green", "neg": "red", "": ""}


def _cell(text: str, numeric: bool) -> Text:
    return Text(text, style=_STYLES[tone(text)] if numeric else "")


def to_rich(table: TableData) -> Table:
    """A rich table; a cell wraps only at spaces, so a figure is never cut in two, while a
    long text (the symbol list) wraps instead of being cropped."""
    out = Table(title=table.title, title_justify="left", show_footer=table.total is not None)
    for index, (name, numeric) in enumerate(zip(table.columns, table.numeric, strict=True)):
        footer = _cell(table.total[index], numeric) if table.total else ""
        out.add_column(name, footer=footer, justify="right" if numeric else "left")
    for row in table.rows:
        out.add_row(*(_cell(c, n) for c, n in zip(row, table.numeric, strict=True)))
    return out


def print_report(
    report: Mapping[str, Any],
    benchmarks_rows: Sequence[BenchmarkRow | Mapping[str, Any]],
    console: Console,
) -> None:
    """Print every table; piped output gets plain text (rich drops the colours itself)."""
    for table in report_tables(report, benchmarks_rows):
        console.print(to_rich(table))
        console.print()
