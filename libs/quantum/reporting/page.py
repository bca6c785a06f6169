"""The report as one self-contained HTML page: tables, equity chart, candles with trades.

The machines that read these pages have no internet, so nothing is fetched: no script, no
font, no stylesheet, no image from elsewhere. Charts are inline SVG written here, scaled
by their ``viewBox`` to the page width. Candles are resampled to at most
:data:`MAX_CANDLES` per chart and each series is drawn as a few ``<path>`` elements rather
than an element per bar, which keeps three weeks of five symbols well under a megabyte.

Every text that comes from the report or the data (symbols, exit reasons, ids) goes
through :func:`html.escape` before it reaches the page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from quantum.replay.data import DataError, SymbolData
from quantum.reporting.analysis import (
    drawdown_series,
    equity_points,
    load_range,
    report_range,
)
from quantum.reporting.tables import TableData, report_tables, tone

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
MONDAY_MS = 4 * DAY_MS  # 1970-01-01 was a Thursday: weekly ticks fall on Mondays
MAX_CANDLES = 720
CANDLE_MS = (
    300_000,
    900_000,
    1_800_000,
    HOUR_MS,
    2 * HOUR_MS,
    4 * HOUR_MS,
    6 * HOUR_MS,
    12 * HOUR_MS,
    DAY_MS,
)
TICK_MS = (
    HOUR_MS,
    3 * HOUR_MS,
    6 * HOUR_MS,
    12 * HOUR_MS,
    DAY_MS,
    2 * DAY_MS,
    7 * DAY_MS,
    14 * DAY_MS,
    28 * DAY_MS,
)
THIN_BUCKETS = 1200  # an equity curve longer than twice this is thinned to its extremes
WIDTH = 1000
LONG_COLOUR, SHORT_COLOUR = "#1a7f37", "#cf222e"
EQUITY_COLOUR, DRAWDOWN_COLOUR = "#1f6feb", "#cf222e"


# --- geometry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """A plot area in SVG units."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height


@dataclass(frozen=True)
class Scale:
    """A linear map of data values ``[low, high]`` onto SVG units ``[start, end]``."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        if self.high == self.low:
            return (self.start + self.end) / 2
        return self.start + (value - self.low) * (self.end - self.start) / (self.high - self.low)


def _n(value: float) -> str:
    """An SVG coordinate: a tenth of a unit is finer than any screen shows."""
    return f"{value:.1f}"


def padded(low: float, high: float, share: float = 0.05) -> tuple[float, float]:
    """A value range with a margin, and some height even when flat."""
    margin = (high - low) * share or abs(high) * 0.01 or 1.0
    return low - margin, high + margin


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (1, 2, 2.5 or 5 × 10^k apart) spanning ``[low, high]``."""
    if not high > low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def time_ticks(start_ms: int, end_ms: int, count: int = 7) -> list[tuple[int, str]]:
    """UTC times on round hours, days or Mondays, labelled with as much as they need."""
    span = max(end_ms - start_ms, 1)
    step = next((s for s in TICK_MS if span / s <= count), TICK_MS[-1])
    first = math.ceil((start_ms - MONDAY_MS) / step) * step + MONDAY_MS
    form = "%b %d" if step >= DAY_MS else "%b %d %H:%M"
    return [
        (t, datetime.fromtimestamp(t / 1000, tz=UTC).strftime(form))
        for t in range(first, end_ms + 1, step)
    ]


def thin(times: np.ndarray, values: np.ndarray, buckets: int = THIN_BUCKETS) -> np.ndarray:
    """Indices to draw: all of a short series; of a long one, each time bucket's first,
    lowest, highest and last point, so no peak or trough is lost."""
    if times.size <= 2 * buckets:
        return np.arange(times.size)
    edges = np.searchsorted(times, np.linspace(times[0], times[-1], buckets + 1)[1:-1])
    bounds = [0, *edges.tolist(), times.size]
    keep = {0, times.size - 1}
    for low, high in pairwise(bounds):
        if high > low:
            part = values[low:high]
            keep.update((low, low + int(np.argmin(part)), low + int(np.argmax(part)), high - 1))
    return np.asarray(sorted(keep))


# --- SVG pieces ---------------------------------------------------------------------------


def _text(x: float, y: float, content: str, css: str = "", anchor: str = "middle") -> str:
    cls = f' class="{css}"' if css else ""
    return f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{cls}>{escape(content)}</text>'


def y_axis(box: Box, y: Scale, ticks: Sequence[float], form: str, label: str) -> list[str]:
    """Horizontal grid lines with their values on the left, and the axis title."""
    parts = []
    for value in ticks:
        at = y(value)
        parts.append(f'<path class="grid" d="M{_n(box.left)} {_n(at)}H{_n(box.right)}"/>')
        parts.append(_text(box.left - 6, at + 4, format(value, form), "tick", "end"))
    middle = box.top + box.height / 2
    parts.append(
        f'<text class="axis" transform="translate(14 {_n(middle)}) rotate(-90)" '
        f'text-anchor="middle">{escape(label)}</text>'
    )
    return parts


def x_axis(box: Box, x: Scale, ticks: Sequence[tuple[int, str]], labels: bool) -> list[str]:
    """Vertical grid lines at the time ticks; their labels under ``box`` if asked."""
    parts = []
    for moment, label in ticks:
        at = x(moment)
        parts.append(f'<path class="grid" d="M{_n(at)} {_n(box.top)}V{_n(box.bottom)}"/>')
        if labels:
            parts.append(_text(at, box.bottom + 16, label, "tick"))
    return parts


def _frame(box: Box) -> str:
    return (
        f'<rect class="frame" x="{_n(box.left)}" y="{_n(box.top)}" '
        f'width="{_n(box.width)}" height="{_n(box.height)}"/>'
    )


def step_path(xs: Iterable[float], ys: Iterable[float]) -> str:
    """A step line: each value held until the next point (the equity between changes)."""
    points = list(zip(xs, ys, strict=True))
    if not points:
        return ""
    (x0, y0), rest = points[0], points[1:]
    return f"M{_n(x0)} {_n(y0)}" + "".join(f"H{_n(x)}V{_n(y)}" for x, y in rest)


def svg(height: float, label: str, parts: Iterable[str]) -> str:
    return (
        f'<svg viewBox="0 0 {WIDTH} {_n(height)}" role="img" aria-label="{escape(label)}">'
        + "".join(parts)
        + "</svg>"
    )


# --- equity chart -------------------------------------------------------------------------


def equity_chart(report: Mapping[str, Any]) -> str:
    """Equity (USD) with the initial balance dashed, over drawdown (%), on one time axis."""
    initial = float(report["initial_balance"])
    times, equity = equity_points(report)
    if times.size == 0:
        return '<p class="note">No equity data in the report.</p>'
    _, drawdown = drawdown_series(list(zip(times.tolist(), equity.tolist(), strict=True)), initial)
    top, bottom = Box(78, 16, 900, 250), Box(78, 290, 900, 100)
    x = Scale(float(times[0]), float(max(times[-1], times[0] + 1)), top.left, top.right)
    low, high = padded(min(float(equity.min()), initial), max(float(equity.max()), initial))
    y = Scale(low, high, top.bottom, top.top)
    deepest = max(float(drawdown.max()) * 100 * 1.1, 0.5)
    d = Scale(0.0, deepest, bottom.top, bottom.bottom)
    ticks = time_ticks(int(times[0]), int(times[-1]))
    keep, keep_dd = thin(times, equity), thin(times, drawdown)
    xs_dd = [x(float(t)) for t in times[keep_dd]]
    under = step_path(xs_dd, [d(v * 100) for v in drawdown[keep_dd]])
    parts = [
        *y_axis(top, y, nice_ticks(low, high), ",.0f", "Equity (USD)"),
        *x_axis(top, x, ticks, labels=False),
        *y_axis(bottom, d, nice_ticks(0.0, deepest, 3), ".1f", "Drawdown (%)"),
        *x_axis(bottom, x, ticks, labels=True),
        f'<path class="initial" d="M{_n(top.left)} {_n(y(initial))}H{_n(top.right)}"/>',
        f'<path d="{step_path([x(float(t)) for t in times[keep]], [y(v) for v in equity[keep]])}"'
        f' fill="none" stroke="{EQUITY_COLOUR}" stroke-width="1.5"/>',
        f'<path d="{under}H{_n(xs_dd[-1])}V{_n(d(0))}H{_n(xs_dd[0])}Z" '
        f'fill="{DRAWDOWN_COLOUR}" fill-opacity="0.35" stroke="{DRAWDOWN_COLOUR}"/>',
        _frame(top),
        _frame(bottom),
        _text((top.left + top.right) / 2, bottom.bottom + 34, "Time (UTC)", "axis"),
    ]
    return svg(bottom.bottom + 42, "Equity and drawdown", parts)


# --- candle charts ------------------------------------------------------------------------


def candle_ms(span_ms: int, max_candles: int = MAX_CANDLES) -> int:
    """The shortest candle (5m up to 1d) that keeps the chart within ``max_candles``."""
    return next((c for c in CANDLE_MS if span_ms / c <= max_candles), CANDLE_MS[-1])


def resample(
    open_time: np.ndarray, ohlcv: np.ndarray, bucket_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Candles of ``bucket_ms`` (UTC-aligned) from shorter bars: open, high, low, close."""
    if open_time.size == 0:
        return open_time, np.empty((0, 4))
    buckets = open_time // bucket_ms * bucket_ms
    starts, first = np.unique(buckets, return_index=True)
    last = np.append(first[1:], open_time.size) - 1
    candles = np.column_stack(
        (
            ohlcv[first, 0],
            np.maximum.reduceat(ohlcv[:, 1], first),
            np.minimum.reduceat(ohlcv[:, 2], first),
            ohlcv[last, 3],
        )
    )
    return starts, candles


def _body(x: float, y_top: float, y_bottom: float, width: float) -> str:
    height = max(y_bottom - y_top, 0.6)
    return f"M{_n(x - width / 2)} {_n(y_top)}h{_n(width)}v{_n(height)}h{_n(-width)}Z"


def candle_paths(
    starts: np.ndarray, candles: np.ndarray, bucket_ms: int, x: Scale, y: Scale
) -> list[str]:
    """Wicks, rising bodies (hollow) and falling bodies (filled) as three paths, in greys
    so that the green and red of the trades stand out."""
    width = max((x(float(bucket_ms)) - x(0.0)) * 0.7, 0.6)
    wicks: list[str] = []
    rising: list[str] = []
    falling: list[str] = []
    for start, (open_, high, low, close) in zip(starts.tolist(), candles.tolist(), strict=True):
        centre = x(start + bucket_ms / 2)
        wicks.append(f"M{_n(centre)} {_n(y(high))}V{_n(y(low))}")
        body = _body(centre, y(max(open_, close)), y(min(open_, close)), width)
        (rising if close >= open_ else falling).append(body)
    return [
        f'<path class="wick" d="{"".join(wicks)}"/>',
        f'<path class="rise" d="{"".join(rising)}"/>',
        f'<path class="fall" d="{"".join(falling)}"/>',
    ]


def _triangle(x: float, y: float, up: bool, colour: str, hollow: bool) -> str:
    """A triangle with its tip on the price: pointing up for a buy, down for a sell."""
    sign = 1 if up else -1
    base = y + sign * 11
    fill = "#fff" if hollow else colour
    return (
        f'<path d="M{_n(x)} {_n(y + sign * 1)}L{_n(x - 6)} {_n(base)}H{_n(x + 6)}Z" '
        f'fill="{fill}" stroke="{colour}" stroke-width="1.5"/>'
    )


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def trade_tooltip(trade: Mapping[str, Any]) -> str:
    """Side, prices and times, net PnL and exit reason, one per line, escaped."""
    lines = [
        f"{trade['side']} {trade['symbol']} (trade {trade.get('trade_id', '?')})",
        f"entry {float(trade['entry_price']):,.6g} at {_utc(int(trade['entry_ts']))}",
        f"exit {float(trade['exit_price']):,.6g} at {_utc(int(trade['exit_ts']))}",
        f"net PnL {float(trade['net_pnl']):+,.2f} USD",
        f"exit reason: {trade.get('exit_reason', '?')}",
    ]
    return escape("\n".join(lines))


def trade_mark(trade: Mapping[str, Any], x: Scale, y: Scale) -> str:
    """Entry triangle (filled), exit triangle (hollow), the path between, a tooltip."""
    long = str(trade["side"]).upper() == "LONG"
    colour = LONG_COLOUR if long else SHORT_COLOUR
    x0, y0 = x(float(trade["entry_ts"])), y(float(trade["entry_price"]))
    x1, y1 = x(float(trade["exit_ts"])), y(float(trade["exit_price"]))
    return (
        f'<g class="trade"><title>{trade_tooltip(trade)}</title>'
        f'<path d="M{_n(x0)} {_n(y0)}L{_n(x1)} {_n(y1)}" stroke="{colour}" '
        f'stroke-width="1.2" stroke-dasharray="4 3" fill="none"/>'
        f"{_triangle(x0, y0, long, colour, hollow=False)}"
        f"{_triangle(x1, y1, not long, colour, hollow=True)}</g>"
    )


def _price_form(high: float) -> str:
    return ",.0f" if high >= 1000 else ",.2f" if high >= 10 else ",.4f"


def candle_chart(
    data: SymbolData, trades: Sequence[Mapping[str, Any]], span: tuple[int, int]
) -> str:
    """One symbol's candles over the replay with its trades marked on them."""
    bucket = candle_ms(span[1] - span[0])
    starts, candles = resample(data.open_time, data.ohlcv, bucket)
    if starts.size == 0:
        return f'<p class="note">No bars for {escape(data.symbol)} in the range.</p>'
    prices = [float(candles[:, 2].min()), float(candles[:, 1].max())]
    prices += [float(t[k]) for t in trades for k in ("entry_price", "exit_price")]
    low, high = padded(min(prices), max(prices))
    box = Box(78, 12, 900, 300)
    x = Scale(float(starts[0]), float(starts[-1] + bucket), box.left, box.right)
    y = Scale(low, high, box.bottom, box.top)
    parts = [
        *y_axis(box, y, nice_ticks(low, high), _price_form(high), "Price (USDT)"),
        *x_axis(box, x, time_ticks(int(starts[0]), int(starts[-1] + bucket)), labels=True),
        *candle_paths(starts, candles, bucket, x, y),
        *(trade_mark(t, x, y) for t in trades),
        _frame(box),
    ]
    return svg(box.bottom + 26, f"{data.symbol} candles and trades", parts)


def _interval_name(bucket_ms: int) -> str:
    if bucket_ms >= DAY_MS:
        return f"{bucket_ms // DAY_MS}d"
    if bucket_ms >= HOUR_MS:
        return f"{bucket_ms // HOUR_MS}h"
    return f"{bucket_ms // 60_000}m"


def _chart_symbols(report: Mapping[str, Any]) -> list[str]:
    """The replayed symbols, then any that only the trades name."""
    named = [str(s) for s in report.get("symbols", [])]
    traded = sorted({str(t["symbol"]) for t in report.get("trade_list", [])} - set(named))
    return [*named, *traded]


def symbol_section(
    report: Mapping[str, Any],
    data_dir: Path,
    symbol: str,
    span: tuple[int, int],
    loaded: SymbolData | None = None,
) -> str:
    """A heading with the symbol's trade count and net PnL, and its candle chart (from
    ``loaded`` when the caller already read the bars, else from ``data_dir``)."""
    trades = [t for t in report.get("trade_list", []) if str(t["symbol"]) == symbol]
    net = sum(float(t["net_pnl"]) for t in trades)
    heading = (
        f"{symbol} · {_interval_name(candle_ms(span[1] - span[0]))} candles · "
        f"{len(trades)} trades · net {net:+,.2f} USD"
    )
    try:
        (data,) = [loaded] if loaded is not None else load_range(data_dir, [symbol], *span)
        body = candle_chart(data, trades, span)
    except DataError as e:
        body = f'<p class="note">No candles: {escape(str(e))}</p>'
    return f'<h3>{escape(heading)}</h3><div class="chart">{body}</div>'


# --- tables -------------------------------------------------------------------------------


def _cell(tag: str, text: str, numeric: bool) -> str:
    classes = " ".join(c for c in ("num" if numeric else "", tone(text) if numeric else "") if c)
    attribute = f' class="{classes}"' if classes else ""
    # A figure and its unit stay on one line; a long text (the symbols) may wrap.
    return f"<{tag}{attribute}>{escape(text).replace(' %', '&nbsp;%')}</{tag}>"


def table_html(table: TableData) -> str:
    """A :class:`TableData` as an HTML table that scrolls sideways on a narrow screen."""
    head = "".join(_cell("th", c, n) for c, n in zip(table.columns, table.numeric, strict=True))
    rows = "".join(
        "<tr>"
        + "".join(_cell("td", c, n) for c, n in zip(row, table.numeric, strict=True))
        + "</tr>"
        for row in table.rows
    )
    foot = ""
    if table.total is not None:
        cells = zip(table.total, table.numeric, strict=True)
        foot = "<tfoot><tr>" + "".join(_cell("td", c, n) for c, n in cells) + "</tr></tfoot>"
    return (
        f'<section><h2>{escape(table.title)}</h2><div class="scroll"><table>'
        f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody>{foot}</table></div></section>"
    )


# --- the page -----------------------------------------------------------------------------

STYLE = """
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1f2328;background:#fff}
main{max-width:1100px;margin:0 auto;padding:12px 16px 40px}
h1{font-size:1.5em;margin:.4em 0 .1em}h2{font-size:1.2em;margin:1.4em 0 .4em}
h3{font-size:1em;margin:1.2em 0 .3em}.sub,.note,.legend{color:#57606a}
.scroll,.chart{overflow-x:auto}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;border-bottom:1px solid #d0d7de;text-align:left}
th{background:#f6f8fa}.num{text-align:right}tfoot td{font-weight:600;border-top:2px solid #8c959f}
.pos{color:#1a7f37}.neg{color:#cf222e}
svg{width:100%;height:auto;display:block;min-width:600px}
svg text{font-size:13px;fill:#57606a}svg .axis{font-size:14px;fill:#1f2328}
.grid{stroke:#d8dee4;stroke-width:1}.frame{fill:none;stroke:#8c959f}
.initial{stroke:#6e7781;stroke-dasharray:6 4;fill:none}
.wick{stroke:#6e7781;stroke-width:1;fill:none}.rise{fill:#fff;stroke:#6e7781}
.fall{fill:#8c959f;stroke:#6e7781}
.trade:hover path{stroke-width:2.5}
.long{color:#1a7f37}.short{color:#cf222e}
"""

LEGEND = (
    '<p class="legend"><span class="long">▲ long</span> / <span class="short">▼ short</span> '
    "entry filled, exit hollow, dashed from one to the other; hover or tap a mark for the "
    "trade. Candles: hollow rising, grey falling.</p>"
)


def _subtitle(report: Mapping[str, Any], span: tuple[int, int] | None) -> str:
    symbols = ", ".join(str(s) for s in report.get("symbols", []))
    when = f"{_utc(span[0])} → {_utc(span[1])}" if span else "no time range"
    return escape(f"{symbols} · {when}" if symbols else when)


def page_html(
    report: Mapping[str, Any],
    data_dir: Path,
    *,
    loaded: Mapping[str, SymbolData] | None = None,
) -> str:
    """The whole page; benchmark rows are read from ``report["benchmarks"]`` if present,
    bars from ``loaded`` (symbol -> the range's bars) where given, else from ``data_dir``."""
    span = report_range(report)
    have = loaded or {}
    tables = [table_html(t) for t in report_tables(report, report.get("benchmarks", []))]
    candles = (
        [symbol_section(report, data_dir, s, span, have.get(s)) for s in _chart_symbols(report)]
        if span is not None
        else []
    )
    return "".join(
        [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>Replay report</title>",
            f"<style>{STYLE}</style></head><body><main>",
            f'<h1>Replay report</h1><p class="sub">{_subtitle(report, span)}</p>',
            *tables[:2],
            '<section><h2>Equity and drawdown</h2><div class="chart">',
            equity_chart(report),
            "</div></section>",
            *tables[2:],
            "<section><h2>Trades on the candles</h2>",
            LEGEND,
            *candles,
            "</section></main></body></html>\n",
        ]
    )


def write_html(
    report: Mapping[str, Any],
    data_dir: Path,
    path: Path,
    *,
    loaded: Mapping[str, SymbolData] | None = None,
) -> Path:
    """Write :func:`page_html` to ``path`` (UTF-8) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page_html(report, data_dir, loaded=loaded), encoding="utf-8")
    return path
