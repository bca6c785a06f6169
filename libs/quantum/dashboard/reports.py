"""Finished reports (``quantumctl replay`` / ``quantumctl backtest``) opened by the dashboard.

Why the page reads the report rather than running the journal in replays: the report is
the replay's own record, written by the same code for both engines (the fleet replay and
the in-process backtest, :func:`quantum.replay.report.assemble`), and it is complete the
moment the run ends. A journal in the replay would put SQL writes on the barrier's critical
path (every bar waits for every replayed group), would have to be built in the in-process
engine too to keep the two engines equal, and would mix a replay's trades into the live
journal. So a replay's page is its report, shown with the same tables and charts as live:
the trade list, the per-pair table, equity and drawdown, and the candles with each trade's
entry and exit (the bars read from the report's own ``data_dir``).

Only files directly inside the configured reports directory whose names match
:data:`NAME` are served; a name is never joined to a path before it is checked.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from quantum.dashboard.queries import summary_of

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\.json$"
_NAME = re.compile(NAME)
MAX_BYTES = 256 * 2**20


class ReportNotFound(LookupError):
    """No such report (or not one the dashboard may open)."""


class ReportUnreadable(ValueError):
    """The file is there but is no report: one line saying why."""


@dataclass(frozen=True)
class Loaded:
    mtime_ns: int
    size: int
    document: dict[str, Any]


class Reports:
    """The reports directory, with each report parsed once per modification."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._cache: dict[str, Loaded] = {}
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        if self.directory is None or not _NAME.fullmatch(name):
            raise ReportNotFound(name)
        path = self.directory / name
        if not path.is_file():
            raise ReportNotFound(name)
        return path

    def listing(self) -> list[dict[str, Any]]:
        """Every report in the directory, newest first, with its headline figures."""
        if self.directory is None or not self.directory.is_dir():
            return []
        rows: list[dict[str, Any]] = []
        for path in sorted(self.directory.glob("*.json")):
            if not _NAME.fullmatch(path.name):
                continue
            try:
                report = self.load(path.name)
            except (ReportNotFound, ReportUnreadable):
                continue
            rows.append({"name": path.name, "kind": kind(report),
                         "modified_ms": path.stat().st_mtime_ns // 1_000_000,
                         "trades": int(report.get("trades", len(report["trade_list"]))),
                         "net_pnl": float(report.get("net_pnl", 0.0)),
                         "symbols": [str(s) for s in report.get("symbols", [])]})
        rows.sort(key=lambda row: row["modified_ms"], reverse=True)
        return rows

    def load(self, name: str) -> dict[str, Any]:
        path = self._path(name)
        stat = path.stat()
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and (cached.mtime_ns, cached.size) == (stat.st_mtime_ns,
                                                                         stat.st_size):
                return cached.document
        if stat.st_size > MAX_BYTES:
            raise ReportUnreadable(f"{name}: larger than {MAX_BYTES // 2**20} MiB")
        try:
            document = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as e:
            raise ReportUnreadable(f"{name}: not JSON ({e})") from None
        if not isinstance(document, dict) or not isinstance(document.get("trade_list"), list) \
                or "initial_balance" not in document:
            raise ReportUnreadable(f"{name}: not a replay or backtest report "
                                   "(no trade_list / initial_balance)")
        with self._lock:
            self._cache[name] = Loaded(stat.st_mtime_ns, stat.st_size, document)
        return document


def kind(report: dict[str, Any]) -> str:
    return "backtest" if report.get("engine") == "backtest" else "replay"


def summary(name: str, report: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name, "kind": kind(report),
        "initial_balance": float(report["initial_balance"]),
        "final_balance": float(report.get("final_balance", report["initial_balance"])),
        "trades": len(report["trade_list"]), "net_pnl": float(report.get("net_pnl", 0.0)),
        "max_drawdown": float(report.get("max_drawdown", 0.0)),
        "start_ms": _int_or_none(report.get("start_ms")),
        "end_ms": _int_or_none(report.get("end_ms")),
        "symbols": [str(s) for s in report.get("symbols", [])],
        "open_positions_at_end": int(report.get("open_positions_at_end", 0)),
    }


def _int_or_none(value: Any) -> int | None:
    return int(value) if value is not None else None


def _trade(raw: dict[str, Any]) -> dict[str, Any]:
    entry_ts, exit_ts = int(raw["entry_ts"]), int(raw["exit_ts"])
    return {
        "trade_id": str(raw["trade_id"]), "symbol": str(raw["symbol"]), "side": str(raw["side"]),
        "quantity": float(raw["quantity"]), "entry_price": float(raw["entry_price"]),
        "exit_price": float(raw["exit_price"]), "entry_ts": entry_ts, "exit_ts": exit_ts,
        "gross_pnl": float(raw.get("gross_pnl", 0.0)), "fees": float(raw.get("fees", 0.0)),
        "funding": float(raw.get("funding", 0.0)), "net_pnl": float(raw["net_pnl"]),
        "r_multiple": raw.get("r_multiple"), "exit_reason": str(raw["exit_reason"]),
        "holding_seconds": float(raw.get("holding_seconds", (exit_ts - entry_ts) / 1000)),
        "leverage": int(raw.get("leverage", 1)),
    }


def trades(report: dict[str, Any], *, symbol: str | None, limit: int,
           offset: int) -> dict[str, Any]:
    """A page of the report's trades in the live trade list's shape, newest exit first."""
    rows = [_trade(t) for t in report["trade_list"] if not symbol or t["symbol"] == symbol]
    rows.sort(key=lambda t: (t["exit_ts"], t["trade_id"]), reverse=True)
    return {"items": rows[offset:offset + limit], "total": len(rows), "limit": limit,
            "offset": offset}


def stats(report: dict[str, Any], *, symbol: str | None) -> dict[str, Any]:
    """The live statistics' shape (overall and per symbol), computed from the trades."""
    rows = [_trade(t) for t in report["trade_list"] if not symbol or t["symbol"] == symbol]
    by_symbol = []
    for name in sorted({t["symbol"] for t in rows}):
        by_symbol.append(summary_of([t for t in rows if t["symbol"] == name]) | {"symbol": name})
    return {**summary_of(rows), "max_drawdown": float(report.get("max_drawdown", 0.0)),
            "by_symbol": by_symbol}


def equity(report: dict[str, Any], *, since: int | None, until: int | None,
           points: int) -> list[dict[str, Any]]:
    """Equity and drawdown (the initial balance counts as the first peak), bucketed to at
    most ``points`` points: each the last value of its bucket with the bucket's low."""
    initial = float(report["initial_balance"])
    curve = [(int(t), float(e)) for t, e in report.get("equity_curve", [])]
    start = _int_or_none(report.get("start_ms"))
    if start is not None and (not curve or curve[0][0] > start):
        curve.insert(0, (start, initial))
    if not curve:
        return []
    times = np.asarray([t for t, _ in curve], dtype=np.int64)
    values = np.asarray([e for _, e in curve], dtype=np.float64)
    peak = np.maximum.accumulate(np.maximum(values, initial))
    drawdown = np.where(peak > 0, (peak - values) / np.where(peak > 0, peak, 1.0), 0.0)
    keep = np.ones(times.size, dtype=bool)
    if since is not None:
        keep &= times >= since
    if until is not None:
        keep &= times <= until
    times, values, drawdown = times[keep], values[keep], drawdown[keep]
    if times.size == 0:
        return []
    bucket = max(1, -(-(int(times[-1]) - int(times[0]) + 1) // points))
    keys = (times - times[0]) // bucket
    out = []
    _, first = np.unique(keys, return_index=True)
    last = np.append(first[1:], times.size) - 1
    for lo, hi in zip(first, last, strict=True):
        out.append({"ts": int(times[hi]), "equity": float(values[hi]), "balance": None,
                    "drawdown": float(drawdown[hi]), "low": float(values[lo:hi + 1].min())})
    return out


def chart(report: dict[str, Any], *, symbol: str, limit: int) -> dict[str, Any]:
    """Candles of ``symbol`` over the report's range (from its data directory, resampled to
    at most ``limit``), with each of its trades' entry and exit."""
    from quantum.replay.data import DataError, load_symbol
    from quantum.reporting.analysis import report_range
    from quantum.reporting.page import candle_ms, resample

    marks = [_mark(_trade(t)) for t in report["trade_list"] if t["symbol"] == symbol]
    marks.sort(key=lambda m: m["entry_ts"])
    document: dict[str, Any] = {"symbol": symbol, "source": "report", "interval": "5m",
                                "candles": [], "trades": marks, "open": [],
                                "note": "stop levels are not recorded in reports"}
    span = report_range(report)
    data_dir = report.get("data_dir")
    if span is None or not data_dir:
        document["note"] = "the report names no data directory or range: no candles"
        return document
    try:
        data = load_symbol(Path(str(data_dir)), symbol, start_ms=span[0], end_ms=span[1] + 1)
    except DataError as e:
        document["note"] = f"no candles: {e}"
        return document
    bucket = candle_ms(span[1] - span[0], limit)
    starts, ohlc = resample(data.open_time, data.ohlcv, bucket)
    document["interval"] = f"{bucket // 60_000}m"
    document["candles"] = [
        {"open_time": int(t), "close_time": int(t) + bucket - 1, "open": float(o[0]),
         "high": float(o[1]), "low": float(o[2]), "close": float(o[3]), "volume": 0.0}
        for t, o in zip(starts[-limit:], ohlc[-limit:], strict=True)]
    return document


def _mark(trade: dict[str, Any], stop_loss: float | None = None) -> dict[str, Any]:
    return {key: trade[key] for key in ("trade_id", "side", "entry_ts", "entry_price",
                                        "exit_ts", "exit_price", "exit_reason", "net_pnl")} | {
        "stop_loss": stop_loss}


def mark(trade: dict[str, Any], stop_loss: float | None) -> dict[str, Any]:
    """A trade as a chart mark (the live chart's, with the stop from the journal)."""
    return _mark(trade, stop_loss)
