"""The equity curve over its drawdown, as a PNG for a chat message or a ticket.

matplotlib is imported inside :func:`write_png`, so importing the reporting package (and
starting ``quantumctl``) does not pay for it. The figure is a bare
:class:`matplotlib.figure.Figure` on an Agg canvas: no pyplot, no global backend switch,
nothing left behind for another user of matplotlib in the same process.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

from quantum.reporting.analysis import drawdown_series, equity_points

EQUITY_COLOUR = "#1f6feb"
DRAWDOWN_COLOUR = "#cf222e"


def _title(report: Mapping[str, Any]) -> str:
    initial = float(report["initial_balance"])
    final = float(report["final_balance"])
    change = (final / initial - 1) * 100 if initial else 0.0
    worst = float(report.get("max_drawdown", 0.0)) * 100
    symbols = ", ".join(str(s) for s in report.get("symbols", []))
    return f"{symbols}  ·  net return {change:+.2f} %  ·  max drawdown {worst:.2f} %".lstrip(" ·")


def _plot_equity(axes: Any, when: np.ndarray, equity: np.ndarray, initial: float) -> None:
    axes.step(when, equity, where="post", color=EQUITY_COLOUR, linewidth=1.2, label="equity")
    axes.axhline(initial, color="0.4", linestyle="--", linewidth=0.9, label="initial balance")
    axes.set_ylabel("Equity (USD)")
    axes.yaxis.set_major_formatter("{x:,.0f}")
    axes.legend(loc="upper left", frameon=False)
    axes.grid(alpha=0.3)
    if equity.size == 0:
        axes.text(0.5, 0.5, "no equity data in the report", ha="center", transform=axes.transAxes)


def _plot_drawdown(axes: Any, when: np.ndarray, drawdown: np.ndarray) -> None:
    below = -drawdown * 100  # drawn downwards from 0 %
    axes.fill_between(when, below, 0.0, step="post", color=DRAWDOWN_COLOUR, alpha=0.4)
    axes.step(when, below, where="post", color=DRAWDOWN_COLOUR, linewidth=0.9)
    axes.set_ylabel("Drawdown (%)")
    axes.set_xlabel("Time (UTC)")
    axes.set_ylim(top=0.0, bottom=min(-0.5, float(np.min(below, initial=0.0)) * 1.1))
    axes.grid(alpha=0.3)


def write_png(report: Mapping[str, Any], path: Path) -> Path:
    """Equity (USD, with the initial balance as a line) above drawdown (%), UTC dates."""
    try:
        import matplotlib.dates as mdates
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise RuntimeError(f"the PNG needs matplotlib, which is not installed ({e})") from None
    initial = float(report["initial_balance"])
    times, equity = equity_points(report)
    _, drawdown = drawdown_series(list(zip(times.tolist(), equity.tolist(), strict=True)), initial)
    when = times.astype("datetime64[ms]")

    figure = Figure(figsize=(11, 6.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    _plot_equity(top, when, equity, initial)
    top.set_title(_title(report), loc="left", fontsize=11)
    _plot_drawdown(bottom, when, drawdown)
    if when.size:
        locator = mdates.AutoDateLocator(tz=UTC)
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
