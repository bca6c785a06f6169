"""Features that read more than one symbol's bars, the same in batch and streaming.

A symbol's features at bar ``t`` (opening at ``T``) may use nothing after ``t``'s close. The
feature-publisher handles the symbols of one bar time one after another (live, in whatever
order their klines arrive), so symbol A's bar ``t`` may be handled before B's. The rule that
holds in replay, in the in-process engine and live alike: **every input from another symbol
is that symbol's bar at ``T - interval`` (the previous bar time)**, which is complete before
any bar at ``T`` exists. The cross-sectional ranks use every symbol's previous bar, A's own
included, so they are one function of one complete cross-section. A symbol with no warmed-up
bar at ``T - interval`` (not in the universe, a gap, not yet warmed up, or live a bar that
has not arrived by the time the next one is handled) is absent from that cross-section; BTC
absent makes BTC's state unavailable. Batch (:func:`compute_universe`) applies exactly this
rule to whole histories; :class:`UniverseFeatures` applies it bar by bar.

The universe is the set of symbols given (the data of a training run, the symbols a
publisher receives): ranks are relative to it.

Funding and mark prices reach the publisher on ``market.tick``; :class:`TickContext` decides
which tick belongs to which bar (see its docstring), and :func:`symbol_frame` builds the same
per-bar inputs from data files as the replay source publishes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from quantum.features.batch import SHARED_COLUMNS, symbol_features
from quantum.features.incremental import RollingBeta
from quantum.features.schema import PARAMETERS, WARMUP_BARS
from quantum.features.streaming import StreamingFeatures

if TYPE_CHECKING:
    from quantum.replay.data import SymbolData

BAR_MS = 300_000
_BLOCK = 8_192  # windows per block in _rolling_beta: ~19 MB an array at 288
_LOG_RETURN, _ROC_12, _ROC_48, _RV_48, _RET_LONG = range(len(SHARED_COLUMNS))
_BETA = f"beta_btc_{PARAMETERS.beta_window}"
_RANK_LONG = f"xs_mom_rank_{PARAMETERS.long_momentum}"
_UNAVAILABLE = {"btc_ret_12": 0.0, "btc_ret_48": 0.0, "btc_rv_48": 0.0, "btc_available": 0.0,
                _BETA: 0.0, "beta_available": 0.0, "xs_mom_rank_48": 0.0, _RANK_LONG: 0.0,
                "xs_vol_rank_48": 0.0, "xs_available": 0.0}


def symbol_frame(data: SymbolData, interval_ms: int = BAR_MS) -> pd.DataFrame:
    """One symbol's bars as :func:`compute_batch` input, with what each bar's tick carries
    in a replay (:class:`quantum.market.replay.ReplaySource`): the mark price of the last 1h
    mark kline closed at the bar's close, and the funding rate of a settlement at the bar's
    close (NaN where none)."""
    from quantum.replay.data import mark_at

    times = data.open_time.astype(np.int64)
    marks = [mark_at(data, t + interval_ms - 1) for t in times.tolist()]
    funding = [data.funding.get(t + interval_ms) for t in times.tolist()]
    frame = pd.DataFrame(data.ohlcv, columns=["open", "high", "low", "close", "volume"],
                         index=times)
    frame["mark_price"] = np.array([np.nan if m is None else m for m in marks], "float64")
    frame["funding_rate"] = np.array([np.nan if f is None else f for f in funding], "float64")
    return frame


def compute_universe(frames: Mapping[str, pd.DataFrame], interval_ms: int = BAR_MS
                     ) -> dict[str, pd.DataFrame]:
    """Every feature of every symbol: :func:`compute_batch` per symbol (index: open time in
    ms), with BTC's state, the beta to BTC and the cross-sectional ranks filled in by the
    rule of this module."""
    per_symbol = {symbol: symbol_features(frame) for symbol, frame in frames.items()}
    grid = np.unique(np.concatenate([np.asarray(f.index, dtype=np.int64)
                                     for f in frames.values()]))
    symbols = sorted(frames)
    shared = {}
    for symbol in symbols:
        values = per_symbol[symbol][1].to_numpy(dtype="float64").copy()
        warm = np.arange(len(values)) >= WARMUP_BARS - 1
        shared[symbol] = (pd.DataFrame(values, index=frames[symbol].index),
                          pd.Series(warm, index=frames[symbol].index))
    ranks = _ranks(shared, symbols, grid)
    btc = shared.get(PARAMETERS.btc_symbol)
    out: dict[str, pd.DataFrame] = {}
    for column, symbol in enumerate(symbols):
        result = per_symbol[symbol][0]
        index = np.asarray(result.index, dtype=np.int64)
        previous = index - interval_ms
        cross = pd.DataFrame(_UNAVAILABLE, index=result.index)
        if btc is not None:
            btc_values = btc[0].reindex(previous).to_numpy()
            btc_warm = btc[1].reindex(previous).fillna(False).to_numpy(dtype=bool)
            cross.loc[btc_warm, "btc_ret_12"] = btc_values[btc_warm, _ROC_12]
            cross.loc[btc_warm, "btc_ret_48"] = btc_values[btc_warm, _ROC_48]
            cross.loc[btc_warm, "btc_rv_48"] = btc_values[btc_warm, _RV_48]
            cross.loc[btc_warm, "btc_available"] = 1.0
            own = shared[symbol][0].reindex(previous).to_numpy()[:, _LOG_RETURN]
            beta, defined = _rolling_beta(own, btc_values[:, _LOG_RETURN],
                                          PARAMETERS.beta_window)
            cross.loc[defined, _BETA] = beta[defined]
            cross.loc[defined, "beta_available"] = 1.0
        positions = np.searchsorted(grid, previous)
        found = (positions < grid.size) & (grid[np.minimum(positions, grid.size - 1)]
                                           == previous)
        rows = np.where(found, positions, 0)
        defined = found & ranks["available"][rows, column]
        for name in ("xs_mom_rank_48", _RANK_LONG, "xs_vol_rank_48"):
            cross.loc[defined, name] = ranks[name][rows[defined], column]
        cross.loc[defined, "xs_available"] = 1.0
        result = result.copy()
        warm = np.arange(len(result)) >= WARMUP_BARS - 1
        result.loc[warm, list(cross.columns)] = cross.to_numpy()[warm]
        out[symbol] = result
    return out


def _ranks(shared: Mapping[str, tuple[pd.DataFrame, pd.Series]], symbols: list[str],
           grid: np.ndarray) -> dict[str, np.ndarray]:
    """Per bar time (rows of ``grid``) and symbol: the three ranks among the symbols warmed
    up at that time, and whether the symbol's rank is defined there."""
    def matrix(column: int) -> np.ndarray:
        values = np.full((grid.size, len(symbols)), np.nan)
        for j, symbol in enumerate(symbols):
            frame, warm = shared[symbol]
            rows = np.searchsorted(grid, np.asarray(frame.index, dtype=np.int64))
            keep = warm.to_numpy()
            values[rows[keep], j] = frame.to_numpy()[keep, column]
        return values

    out: dict[str, np.ndarray] = {}
    for name, column in (("xs_mom_rank_48", _ROC_48), (_RANK_LONG, _RET_LONG),
                         ("xs_vol_rank_48", _RV_48)):
        values = matrix(column)
        present = np.isfinite(values)
        count = present.sum(axis=1)
        rank = np.zeros_like(values)
        for j in range(len(symbols)):
            own = values[:, j : j + 1]
            less = (values < own).sum(axis=1)
            equal = (values == own).sum(axis=1) - 1
            with np.errstate(divide="ignore", invalid="ignore"):
                rank[:, j] = (less + 0.5 * equal) / (count - 1)
        out[name] = rank
        out["available"] = present & (count >= 2)[:, None]
    return out


def _rolling_beta(x: np.ndarray, y: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: cov(x, y) / var(y) over the last ``window`` rows (two-pass), defined where
    every pair in the window is; 0 where ``y`` is constant over the window. Windows go in
    blocks, so memory stays bounded on long histories."""
    beta = np.zeros(x.size)
    defined = np.zeros(x.size, dtype=bool)
    for start in range(0, max(x.size - window + 1, 0), _BLOCK):
        stop = start + _BLOCK + window - 1
        xs = np.lib.stride_tricks.sliding_window_view(x[start:stop], window)
        ys = np.lib.stride_tricks.sliding_window_view(y[start:stop], window)
        complete = np.isfinite(xs).all(axis=1) & np.isfinite(ys).all(axis=1)
        dx = xs - xs.mean(axis=1, keepdims=True)
        dy = ys - ys.mean(axis=1, keepdims=True)
        covariance = (dx * dy).sum(axis=1)
        variance = (dy * dy).sum(axis=1)
        constant = ys.max(axis=1) == ys.min(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(constant, 0.0, covariance / variance)
        rows = slice(start + window - 1, start + window - 1 + len(xs))
        beta[rows] = np.where(complete, value, 0.0)
        defined[rows] = complete
    return beta, defined


class TickContext:
    """Which ``market.tick`` belongs to which bar, for one symbol.

    A bar closing at ``C`` takes the newest mark price of the ticks at or before ``C``, and
    the funding settlements of ticks *before* ``C``. Replay puts a settlement at ``S`` on the
    tick at ``S - 1`` ms (the close of the bar ending at ``S``); the live source on the first
    tick at or after ``S``. Both are before the close of the bar opening at ``S``, and after
    the close of the bar before it for live, so the bar opening at ``S`` is the first to know
    it in both. Ticks after ``C`` wait for the next bar.
    """

    __slots__ = ("fundings", "marks")

    def __init__(self) -> None:
        self.marks: list[tuple[int, float]] = []
        self.fundings: list[tuple[int, float]] = []

    def observe(self, ts: int, mark_price: float | None, funding_rate: float | None) -> None:
        if mark_price is not None:
            self.marks.append((ts, mark_price))
        if funding_rate is not None:
            self.fundings.append((ts, funding_rate))

    def due(self, close_time: int) -> tuple[float | None, list[float]]:
        """The newest mark at or before ``close_time`` and the settlements before it
        (:meth:`consume` them once the bar is folded in)."""
        mark = None
        for ts, price in self.marks:
            if ts <= close_time:
                mark = price
        return mark, [rate for ts, rate in sorted(self.fundings) if ts < close_time]

    def consume(self, close_time: int) -> None:
        self.marks = [(ts, p) for ts, p in self.marks if ts > close_time]
        self.fundings = [(ts, r) for ts, r in self.fundings if ts >= close_time]


class _Member:
    __slots__ = ("beta", "features", "slots", "ticks")

    def __init__(self) -> None:
        self.features = StreamingFeatures()
        self.ticks = TickContext()
        self.slots: dict[int, tuple[tuple[float, ...], bool]] = {}
        self.beta = RollingBeta(PARAMETERS.beta_window)


class UniverseFeatures:
    """The streaming features of every symbol seen, with the cross-symbol inputs of this
    module. One instance serves the whole universe (the feature-publisher holds one)."""

    def __init__(self) -> None:
        self.members: dict[str, _Member] = {}

    def _member(self, symbol: str) -> _Member:
        member = self.members.get(symbol)
        if member is None:
            member = self.members[symbol] = _Member()
        return member

    def observe_tick(self, symbol: str, ts: int, mark_price: float | None,
                     funding_rate: float | None) -> None:
        """A ``market.tick``'s mark price and funding settlement (either may be None)."""
        if mark_price is None and funding_rate is None:
            return
        self._member(symbol).ticks.observe(ts, mark_price, funding_rate)

    def update(self, symbol: str, open_time: int, close_time: int, open: float, high: float,
               low: float, close: float, volume: float) -> dict[str, float] | None:
        """Fold in ``symbol``'s closed bar; its features once warmed up, else ``None``.

        Raises:
            ValueError: as :meth:`StreamingFeatures.update` (nothing is changed).
        """
        member = self._member(symbol)
        mark, rates = member.ticks.due(close_time)
        values = member.features.update(open, high, low, close, volume, mark_price=mark,
                                        funding_rates=rates)
        member.ticks.consume(close_time)
        interval = close_time - open_time + 1
        member.slots[open_time] = (member.features.shared(), member.features.warmed)
        for old in [t for t in member.slots if t < open_time - 3 * interval]:
            del member.slots[old]
        previous = open_time - interval
        btc = self.members.get(PARAMETERS.btc_symbol)
        btc_slot = btc.slots.get(previous) if btc is not None else None
        own_slot = member.slots.get(previous)
        member.beta.push(own_slot[0][_LOG_RETURN] if own_slot is not None else math.nan,
                         btc_slot[0][_LOG_RETURN] if btc_slot is not None else math.nan)
        if values is None:
            return None
        values.update(_UNAVAILABLE)  # a fresh dict of this bar
        if btc_slot is not None and btc_slot[1]:
            shared = btc_slot[0]
            values["btc_ret_12"] = shared[_ROC_12]
            values["btc_ret_48"] = shared[_ROC_48]
            values["btc_rv_48"] = shared[_RV_48]
            values["btc_available"] = 1.0
        if btc is not None and member.beta.ready:
            values[_BETA] = member.beta.beta()
            values["beta_available"] = 1.0
        if own_slot is not None and own_slot[1]:
            self._ranks(values, own_slot[0], previous)
        return values

    def _ranks(self, values: dict[str, float], own: tuple[float, ...], previous: int) -> None:
        section = [slot[0] for m in self.members.values()
                   if (slot := m.slots.get(previous)) is not None and slot[1]]
        count = len(section)
        if count < 2:
            return
        for name, column in (("xs_mom_rank_48", _ROC_48), (_RANK_LONG, _RET_LONG),
                             ("xs_vol_rank_48", _RV_48)):
            mine = own[column]
            less = sum(1 for other in section if other[column] < mine)
            equal = sum(1 for other in section if other[column] == mine) - 1
            values[name] = (less + 0.5 * equal) / (count - 1)
        values["xs_available"] = 1.0


def stream_tables(data: Mapping[str, SymbolData], interval_ms: int = BAR_MS
                  ) -> dict[str, dict[int, dict[str, float] | None]]:
    """Every bar of every symbol through one fresh :class:`UniverseFeatures`, bar time by
    bar time, each bar with its replay tick: symbol → open time → the features the
    publisher would emit (None in warm-up). A backtest primes its publisher with these."""
    frames = {symbol: symbol_frame(d, interval_ms) for symbol, d in data.items()}
    universe = UniverseFeatures()
    tables: dict[str, dict[int, dict[str, float] | None]] = {s: {} for s in frames}
    rows: dict[str, Iterable[tuple[int, list[float]]]] = {}
    for symbol, frame in frames.items():
        rows[symbol] = zip(frame.index.tolist(), frame.to_numpy().tolist(), strict=True)
    times = np.unique(np.concatenate([np.asarray(f.index) for f in frames.values()]))
    iterators = {symbol: iter(r) for symbol, r in rows.items()}
    pending: dict[str, tuple[int, list[float]] | None] = {
        symbol: next(it, None) for symbol, it in iterators.items()}
    for t in times.tolist():
        for symbol in sorted(frames):
            head = pending[symbol]
            if head is None or head[0] != t:
                continue
            o, h, low, c, v, mark, funding = head[1]
            close_time = t + interval_ms - 1
            universe.observe_tick(symbol, close_time, None if mark != mark else mark,
                                  None if funding != funding else funding)
            tables[symbol][t] = universe.update(symbol, t, close_time, o, h, low, c, v)
            pending[symbol] = next(iterators[symbol], None)
    return tables
