"""Fold blocks and forward returns of the research loop, on real bars."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from quantum.ml.dataset import BAR_MS, Dataset, load_dataset
from quantum.ml.labels import LabelSpec
from quantum.research.folds import folds, forward_return

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_dataset(SAMPLE, ("BTCUSDT", "ETHUSDT"), start=datetime(2025, 9, 1, tzinfo=UTC),
                        end=datetime(2025, 10, 15, tzinfo=UTC), spec=LabelSpec(horizon=48))


@pytest.mark.parametrize("horizon", [12, 48])
def test_forward_returns_of_any_horizon_equal_the_labels_definition(data: Dataset,
                                                                    horizon: int) -> None:
    ours = forward_return(data, horizon)
    if horizon == data.spec.horizon:
        np.testing.assert_allclose(ours, data.future_return, atol=1e-5)
    else:
        other = load_dataset(SAMPLE, data.symbols, start=datetime(2025, 9, 1, tzinfo=UTC),
                             end=datetime(2025, 10, 15, tzinfo=UTC),
                             spec=LabelSpec(horizon=horizon))
        common, ours_at, theirs_at = np.intersect1d(
            data.open_time * 10 + data.symbol_index, other.open_time * 10 + other.symbol_index,
            return_indices=True)
        assert common.size > 1000
        np.testing.assert_allclose(ours[ours_at], other.future_return[theirs_at], atol=1e-5)


def test_fold_parts_are_in_time_order_with_an_embargo_of_the_horizon(data: Dataset) -> None:
    horizon = 48
    gap = horizon * BAR_MS
    parts = folds(data, count=2, horizon=horizon)
    assert len(parts) == 2
    for fold in parts:
        fit_end = data.open_time[fold.fit].max()
        calibration = data.open_time[fold.calibration]
        # a fit row's label (h bars ahead) ends before the calibration part starts
        assert fit_end + gap < calibration.min()
        assert calibration.max() + gap <= fold.validation.start_ms
        assert fold.validation.end_ms + gap <= fold.test.start_ms
    assert parts[0].test.end_ms <= parts[1].test.start_ms  # test blocks do not overlap
