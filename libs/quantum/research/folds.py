"""Fold blocks in time, and forward returns of any horizon from one feature dataset.

A fold has four consecutive parts, each separated from the next by an embargo of at least
the horizon (so no label of one part overlaps the next part's bars):

    fit (the booster) | calibration | validation (parameter choice) | test (only reported)

The fit and calibration parts together are the fold's **train** block; nothing of the
validation or test block enters a model. :func:`quantum.ml.walkforward.walk_forward` makes
the train/validation/test split; the calibration part is the newest ``calibration_share``
of train, cut here with its own embargo.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from quantum.ml.dataset import BAR_MS, Dataset
from quantum.ml.walkforward import walk_forward


@dataclass(frozen=True)
class Block:
    """A time range [start_ms, end_ms) of bar open times."""

    start_ms: int
    end_ms: int

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / 86_400_000

    def iso(self) -> list[str]:
        return [_iso(self.start_ms), _iso(self.end_ms)]


@dataclass(frozen=True)
class FoldRows:
    number: int
    fit: np.ndarray
    calibration: np.ndarray
    validation: Block
    test: Block
    train: Block


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def forward_return(data: Dataset, horizon: int) -> np.ndarray:
    """``ln(close[t+h]/close[t])`` for every row of ``data`` (NaN past a symbol's end)."""
    out = np.full(len(data), np.nan)
    for index, symbol in enumerate(data.symbols):
        rows = np.flatnonzero(data.symbol_index == index)
        if rows.size == 0:
            continue
        cumulative = np.concatenate([[0.0], np.cumsum(data.returns[symbol][1:],
                                                      dtype=np.float64)])
        position = data.position[rows]
        ahead = position + horizon
        ok = ahead < cumulative.size
        out[rows[ok]] = cumulative[ahead[ok]] - cumulative[position[ok]]
    return out


def folds(data: Dataset, *, count: int, horizon: int, calibration_share: float = 0.2,
          validation_share: float = 0.1, test_share: float = 0.1) -> list[FoldRows]:
    """``count`` expanding folds tiling the end of the data's range."""
    result = []
    for fold in walk_forward(data.open_time, folds=count, horizon=horizon,
                             validation_share=validation_share, test_share=test_share):
        validation_start, test_start, test_end, first = fold.bounds
        gap = horizon * BAR_MS
        train_end = validation_start - gap
        calibration_start = train_end - int((train_end - first) * calibration_share)
        times = data.open_time[fold.train]
        fit = fold.train[times < calibration_start - gap]
        calibration = fold.train[times >= calibration_start]
        result.append(FoldRows(fold.number, fit, calibration,
                               Block(validation_start, test_start - gap),
                               Block(test_start, test_end), Block(first, train_end)))
    return result
