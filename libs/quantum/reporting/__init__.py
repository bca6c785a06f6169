"""What people read of a replay: printed tables, a PNG of equity, a self-contained page.

:func:`render` does all of it for a report ``quantumctl replay`` wrote; the modules can be
used alone (:mod:`.analysis` for the figures, :mod:`.tables`, :mod:`.plots`, :mod:`.page`).
matplotlib is imported only when a PNG is drawn, so importing this package stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from quantum.replay.data import DataError, SymbolData
from quantum.reporting.analysis import (
    BenchmarkRow,
    always_flat,
    buy_and_hold,
    load_range,
    report_range,
)
from quantum.reporting.page import write_html
from quantum.reporting.tables import print_report

__all__ = ["render"]


def _load(report: dict[str, Any], data_dir: Path, console: Console) -> dict[str, SymbolData]:
    """The replay's bars, read once for both the benchmark and the candles (reading a
    symbol's file is most of the cost of rendering). Empty when any symbol cannot be
    read: an equal-weight benchmark over only some symbols would mislead."""
    span = report_range(report)
    symbols = [str(s) for s in report.get("symbols", [])]
    if span is None or not symbols:
        console.print("benchmarks skipped: the report names no symbols or time range")
        return {}
    try:
        return dict(zip(symbols, load_range(data_dir, symbols, *span), strict=True))
    except DataError as e:
        console.print(f"benchmarks skipped: {e}", markup=False)
        return {}


def render(
    report: dict[str, Any], data_dir: Path, out_path: Path, console: Console
) -> dict[str, Path]:
    """Compute the benchmarks, print the tables, write ``<stem>.png`` and ``<stem>.html``
    beside ``out_path`` (the report's JSON path); add ``report["benchmarks"]``.

    Returns the paths written, by kind. A PNG that cannot be drawn (matplotlib missing)
    is reported on the console and left out rather than costing the page and the tables.
    The report itself is not written: the caller saves it, benchmarks included.
    """
    loaded = _load(report, data_dir, console)
    initial = float(report["initial_balance"])
    rows: list[BenchmarkRow] = []
    if loaded:
        rows = [buy_and_hold(list(loaded.values()), initial), always_flat(initial)]
    report["benchmarks"] = [row.as_dict() for row in rows]
    print_report(report, rows, console)
    written: dict[str, Path] = {}
    try:
        from quantum.reporting.plots import write_png

        written["png"] = write_png(report, out_path.with_suffix(".png"))
    except RuntimeError as e:
        console.print(f"PNG skipped: {e}", markup=False)
    html = out_path.with_suffix(".html")
    written["html"] = write_html(report, data_dir, html, loaded=loaded)
    return written
