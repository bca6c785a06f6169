"""The edge model on real bars: calibration, a registry round trip, and no leakage."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from quantum.features import FEATURE_NAMES
from quantum.ml.dataset import Dataset, load_dataset
from quantum.ml.edge import EdgeConfig, calibration_table, fit_calibration, fit_edge, save_version
from quantum.ml.labels import LabelSpec
from quantum.ml.registry import ModelRefused, ModelRegistry

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"
TINY = EdgeConfig(rounds=20, leaves=7, min_rows_leaf=100)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_dataset(SAMPLE, ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
                        start=datetime(2025, 9, 1, tzinfo=UTC),
                        end=datetime(2025, 10, 20, tzinfo=UTC), spec=LabelSpec(horizon=48))


def split(data: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.arange(len(data))
    a, b = int(len(data) * 0.6), int(len(data) * 0.8)
    gap = 48 * len(data.symbols)
    return rows[:a], rows[a + gap:b], rows[b + gap:]


def test_the_calibration_is_monotone_and_its_spread_is_measured() -> None:
    rng = np.random.default_rng(3)
    raw = rng.normal(size=5000)
    realised = 0.002 * raw + rng.normal(scale=0.01, size=5000)
    calibration = fit_calibration(raw, realised)
    grid = np.linspace(-3, 3, 200)
    assert np.all(np.diff(calibration(grid)) >= 0)
    assert calibration.spread == pytest.approx(0.01, rel=0.1)
    table = calibration_table(calibration(raw), realised)
    assert table["slope"] == pytest.approx(1.0, abs=0.25)


def test_an_edge_version_round_trips_through_the_registry(data: Dataset, tmp_path: Path) -> None:
    fit, calibration, test = split(data)
    model, facts = fit_edge(data.features, data.future_return, fit, calibration, 48,
                            FEATURE_NAMES, TINY)
    assert facts["train_rows"] == fit.size and facts["spread"] > 0
    registry = ModelRegistry(tmp_path)
    save_version(registry, "edge-1", model, data.features[fit], {"note": "test"}, TINY)
    version, loaded, manifest = registry.load_edge("edge-1")
    assert version == "edge-1"
    assert manifest["kind"] == "edge" and loaded.horizon == 48
    np.testing.assert_allclose(loaded.expected_return(data.features[test]),
                               model.expected_return(data.features[test]), rtol=1e-9)
    with pytest.raises(ModelRefused, match="edge model"):
        registry.load("edge-1")  # never served as an ensemble
    (tmp_path / "edge-1" / "edge-lightgbm.txt").write_text("tampered")
    with pytest.raises(ModelRefused, match="sha256"):
        registry.load_edge("edge-1")


def test_shuffled_targets_carry_no_edge_out_of_sample(data: Dataset) -> None:
    """The leakage test for the edge model (and every feature it reads): fitted on shuffled
    forward returns, its out-of-sample predictions do not rank the real ones beyond what
    chance allows, and its calibrated expectations stay close to a constant."""
    fit, calibration, test = split(data)
    rng = np.random.default_rng(11)
    shuffled = data.future_return.copy()
    shuffled[fit] = rng.permutation(shuffled[fit])
    shuffled[calibration] = rng.permutation(shuffled[calibration])
    model, _ = fit_edge(data.features, shuffled, fit, calibration, 48, FEATURE_NAMES, TINY)
    table = calibration_table(model.expected_return(data.features[test]),
                              data.future_return[test])
    # 48-bar forward returns overlap: about rows / 48 independent observations
    independent = test.size / 48
    assert abs(table["correlation"]) < 3 / np.sqrt(independent)
    mu = model.expected_return(data.features[test])
    assert np.std(mu) < 0.25 * np.std(data.future_return[test])  # it learned ~nothing
