"""Training data: features, labels and return windows for every labelled bar of a data dir.

Features come from :func:`quantum.features.compute_universe` (the definition the
feature-publisher streams, over the chosen symbols with their funding and mark prices), so a
model sees in training exactly the numbers it is served.
Rows are ordered by bar time (then symbol), which is what walk-forward splitting needs.
The forecasting members read windows of the last ``window`` one-bar log returns ending at a
row's bar; those are the ``log_ret_1`` values the ai-engine buffers per symbol at serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from quantum.features import FEATURE_NAMES, compute_universe, symbol_frame
from quantum.ml.labels import UNLABELLED, LabelSpec, direction_labels, future_log_return
from quantum.replay.data import available_symbols, load_symbol

BAR_MS = 300_000
WINDOW = 64  # bars of history the forecasting members read (the architecture's sequence)


@dataclass(frozen=True)
class Dataset:
    """Labelled rows of one or more symbols, in time order.

    ``features`` is float32 (rows x features, columns in ``FEATURE_NAMES`` order). The
    per-symbol one-bar log return series (``returns[symbol]``, indexed by position) and each
    row's position in it (``position``) let :meth:`windows` cut the forecasters' inputs.
    """

    symbols: tuple[str, ...]
    features: np.ndarray
    labels: np.ndarray
    future_return: np.ndarray
    open_time: np.ndarray
    symbol_index: np.ndarray
    position: np.ndarray
    returns: dict[str, np.ndarray]
    return_times: dict[str, np.ndarray]
    spec: LabelSpec

    def __len__(self) -> int:
        return int(self.labels.size)

    def subset(self, rows: np.ndarray) -> Dataset:
        """The same data restricted to ``rows`` (indices into this dataset)."""
        return Dataset(self.symbols, self.features[rows], self.labels[rows],
                       self.future_return[rows], self.open_time[rows], self.symbol_index[rows],
                       self.position[rows], self.returns, self.return_times, self.spec)

    def windows(self, rows: np.ndarray | None = None, window: int = WINDOW) -> np.ndarray:
        """float32 (rows x window): the last ``window`` one-bar log returns up to each row."""
        rows = np.arange(len(self)) if rows is None else rows
        out = np.empty((rows.size, window), dtype=np.float32)
        offsets = np.arange(-window + 1, 1)
        for index, symbol in enumerate(self.symbols):
            mask = self.symbol_index[rows] == index
            if mask.any():
                positions = self.position[rows][mask][:, None] + offsets
                out[mask] = self.returns[symbol][positions]
        return out

    def feature(self, name: str) -> np.ndarray:
        return self.features[:, FEATURE_NAMES.index(name)]

    @property
    def time_range(self) -> tuple[str, str]:
        """ISO times of the first and last labelled bar (their open times)."""
        return (_iso(int(self.open_time.min())), _iso(int(self.open_time.max())))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def to_ms(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def load_dataset(
    data_dir: Path,
    symbols: tuple[str, ...] | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    spec: LabelSpec | None = None,
) -> Dataset:
    """Features and labels of ``symbols`` (default: every symbol in ``data_dir``).

    Bars in ``[start, end)`` are used; a row needs complete features, a label (its future
    lies inside the range, so no label peeks past ``end``) and a full return window.
    """
    spec = spec or LabelSpec()
    chosen = tuple(symbols) if symbols else tuple(available_symbols(data_dir))
    if not chosen:
        raise ValueError(f"no 5m kline files in {data_dir}")
    parts: list[tuple[np.ndarray, ...]] = []
    returns: dict[str, np.ndarray] = {}
    return_times: dict[str, np.ndarray] = {}
    loaded = {symbol: load_symbol(data_dir, symbol, start_ms=to_ms(start), end_ms=to_ms(end))
              for symbol in chosen}
    for symbol, data in loaded.items():
        if data.open_time.size < 2:
            raise ValueError(f"{symbol}: too few bars in the chosen range")
    # The chosen symbols are the universe of the cross-symbol features (BTC's state, the
    # beta to BTC, the cross-sectional ranks), as the publisher's are the symbols it serves.
    universe = compute_universe({symbol: symbol_frame(data) for symbol, data in loaded.items()})
    for index, symbol in enumerate(chosen):
        data = loaded[symbol]
        features = universe[symbol].to_numpy(dtype=np.float64)
        close = data.ohlcv[:, 3]
        log_returns = np.zeros(close.size, dtype=np.float32)
        log_returns[1:] = np.log(close[1:] / close[:-1])
        future = future_log_return(close, spec.horizon)
        labels = direction_labels(future, spec.dead_zone)
        position = np.arange(close.size)
        usable = (np.isfinite(features).all(axis=1) & (labels != UNLABELLED)
                  & (position >= WINDOW))
        returns[symbol] = log_returns
        return_times[symbol] = data.open_time
        parts.append((features[usable].astype(np.float32), labels[usable], future[usable],
                      data.open_time[usable], np.full(int(usable.sum()), index),
                      position[usable]))
    columns = [np.concatenate([p[i] for p in parts]) for i in range(6)]
    order = np.lexsort((columns[4], columns[3]))
    if order.size == 0:
        raise ValueError(f"no labelled rows for {', '.join(chosen)} in the chosen range "
                         "(each symbol needs more than the feature warm-up of bars)")
    return Dataset(chosen, columns[0][order], columns[1][order], columns[2][order],
                   columns[3][order], columns[4][order], columns[5][order], returns,
                   return_times, spec)
