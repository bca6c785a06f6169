"""Walk-forward splits by time, with purging and an embargo.

Each fold has three consecutive time blocks: **train** (everything before), **validation**
(ensemble weights and calibration are learned here) and **test** (only scored). Between
consecutive blocks lies a gap of ``embargo_bars`` (at least the label horizon): a training
row's label looks ``horizon`` bars ahead, so without the gap its label would overlap the
next block's bars (purging), and serial correlation of features would carry over (embargo).
Folds move forward in time and the test blocks do not overlap; nothing is ever fitted on
a later fold's test block, and the last fold's test block is never used to choose anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantum.ml.dataset import BAR_MS


@dataclass(frozen=True)
class Fold:
    """Row indices of one fold, and the time bounds that produced them (open times, ms)."""

    number: int
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    bounds: tuple[int, int, int, int]  # validation start, test start, test end, first time


def walk_forward(
    open_time: np.ndarray,
    *,
    folds: int,
    horizon: int,
    embargo_bars: int | None = None,
    validation_share: float = 0.1,
    test_share: float = 0.1,
    min_train_share: float = 0.3,
) -> list[Fold]:
    """``folds`` expanding-window folds over the last part of the time range.

    The test blocks tile the end of the range (``test_share`` of it each); each validation
    block (``validation_share``) precedes its test block; train is everything before the
    validation block minus the gap. ``embargo_bars`` defaults to the horizon and may not be
    shorter.
    """
    embargo = horizon if embargo_bars is None else embargo_bars
    if embargo < horizon:
        raise ValueError(f"embargo of {embargo} bars is shorter than the horizon {horizon}")
    first, last = int(open_time.min()), int(open_time.max()) + BAR_MS
    span = last - first
    gap = embargo * BAR_MS
    test_span = int(span * test_share)
    validation_span = int(span * validation_share)
    result: list[Fold] = []
    for number in range(folds):
        test_end = last - (folds - 1 - number) * test_span
        test_start = test_end - test_span
        validation_start = test_start - gap - validation_span
        train_end = validation_start - gap
        if train_end - first < span * min_train_share:
            raise ValueError(f"fold {number}: too little training data; use fewer folds "
                             "or smaller blocks")
        # a row at t is labelled by bars up to t + horizon: it must end before the gap ends
        train = np.flatnonzero(open_time < train_end)
        validation = np.flatnonzero((open_time >= validation_start)
                                    & (open_time < test_start - gap))
        test = np.flatnonzero((open_time >= test_start) & (open_time < test_end))
        result.append(Fold(number, train, validation, test,
                           (validation_start, test_start, test_end, first)))
    return result


def final_split(open_time: np.ndarray, *, horizon: int, validation_share: float = 0.15,
                embargo_bars: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation rows of the production fit: the newest block validates."""
    embargo = horizon if embargo_bars is None else embargo_bars
    if embargo < horizon:
        raise ValueError(f"embargo of {embargo} bars is shorter than the horizon {horizon}")
    first, last = int(open_time.min()), int(open_time.max()) + BAR_MS
    validation_start = last - int((last - first) * validation_share)
    train = np.flatnonzero(open_time < validation_start - embargo * BAR_MS)
    validation = np.flatnonzero(open_time >= validation_start)
    return train, validation
