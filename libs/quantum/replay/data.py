"""Reading bundled market data: 5m klines, and where present funding rates and mark prices.

Files follow ``shared/data`` (``<SYMBOL>-5m.csv.gz``: open_time,open,high,low,close,volume;
``<SYMBOL>-funding.csv.gz``: funding_time,funding_rate; ``<SYMBOL>-mark-1h.csv.gz``:
open_time,open,high,low,close). A bad row is refused with the file and line named.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INTERVAL_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}
HOUR_MS = 3_600_000


class DataError(ValueError):
    """Market data that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class SymbolData:
    symbol: str
    open_time: np.ndarray  # int64 ms
    ohlcv: np.ndarray  # float64, shape (n, 5)
    funding: dict[int, float]  # funding_time ms -> rate
    mark_open_time: np.ndarray  # int64 ms of 1h mark klines (may be empty)
    mark_close: np.ndarray


def _rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    try:
        with gzip.open(path, "rt", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[: len(columns)]] != list(columns):
                raise DataError(f"{path}: expected header {','.join(columns)}, got {header}")
            yield from enumerate(reader, start=2)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def _parse(path: Path, line_no: int, row: list[str], width: int) -> list[float]:
    if len(row) < width:
        raise DataError(f"{path}:{line_no}: expected {width} fields, got {len(row)}: {row}")
    try:
        values = [float(x) for x in row[:width]]
    except ValueError:
        raise DataError(f"{path}:{line_no}: not a number in {row}") from None
    if not all(math.isfinite(v) for v in values):
        raise DataError(f"{path}:{line_no}: non-finite value in {row}")
    return values


def kline_path(data_dir: Path, symbol: str, interval: str = "5m") -> Path:
    return data_dir / f"{symbol}-{interval}.csv.gz"


def available_symbols(data_dir: Path, interval: str = "5m") -> list[str]:
    return sorted(p.name.split("-")[0] for p in data_dir.glob(f"*-{interval}.csv.gz"))


def load_symbol(
    data_dir: Path,
    symbol: str,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    interval: str = "5m",
) -> SymbolData:
    """Load one symbol's bars in ``[start_ms, end_ms)`` with its funding and mark prices."""
    path = kline_path(data_dir, symbol, interval)
    if not path.exists():
        have = ", ".join(available_symbols(data_dir, interval)) or "none"
        raise DataError(f"no {interval} klines for {symbol} in {data_dir} (symbols there: {have})")
    step = INTERVAL_MS[interval]
    times: list[int] = []
    bars: list[list[float]] = []
    previous = -1
    for line_no, row in _rows(path, ("open_time", "open", "high", "low", "close", "volume")):
        values = _parse(path, line_no, row, 6)
        open_time = int(values[0])
        if open_time % step or open_time <= previous:
            raise DataError(
                f"{path}:{line_no}: open_time {open_time} not increasing on the {interval} grid"
            )
        previous = open_time
        o, h, low, c, v = values[1:]
        if min(o, h, low, c) <= 0 or v < 0 or h < max(o, c) or low > min(o, c):
            raise DataError(f"{path}:{line_no}: inconsistent bar {row}")
        if (start_ms is not None and open_time < start_ms) or (
            end_ms is not None and open_time >= end_ms
        ):
            continue
        times.append(open_time)
        bars.append([o, h, low, c, v])
    funding: dict[int, float] = {}
    funding_path = data_dir / f"{symbol}-funding.csv.gz"
    if funding_path.exists():
        for line_no, row in _rows(funding_path, ("funding_time", "funding_rate")):
            t, rate = _parse(funding_path, line_no, row, 2)
            funding[int(t)] = rate
    mark_times: list[int] = []
    mark_close: list[float] = []
    mark_path = data_dir / f"{symbol}-mark-1h.csv.gz"
    if mark_path.exists():
        for line_no, row in _rows(mark_path, ("open_time", "open", "high", "low", "close")):
            values = _parse(mark_path, line_no, row, 5)
            mark_times.append(int(values[0]))
            mark_close.append(values[4])
    return SymbolData(
        symbol=symbol,
        open_time=np.asarray(times, dtype=np.int64),
        ohlcv=np.asarray(bars, dtype=np.float64).reshape(-1, 5),
        funding=funding,
        mark_open_time=np.asarray(mark_times, dtype=np.int64),
        mark_close=np.asarray(mark_close, dtype=np.float64),
    )


def mark_at(data: SymbolData, ts: int) -> float | None:
    """The close of the last 1h mark kline closed at or before ``ts`` (no look-ahead)."""
    if data.mark_open_time.size == 0:
        return None
    # closed at or before ts: open_time + 1h - 1 <= ts, i.e. open_time <= ts - 1h + 1
    index = int(np.searchsorted(data.mark_open_time, ts - HOUR_MS + 1, side="right")) - 1
    return float(data.mark_close[index]) if index >= 0 else None
