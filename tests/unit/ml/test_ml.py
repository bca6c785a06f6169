"""Labels, walk-forward splits, evaluation, leakage and the model registry (tree members).

Real data (the bundled sample, a few days of two symbols) and small boosters keep each
test to seconds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from quantum.features import CONTEXT_NAMES, FEATURE_NAMES, SCHEMA_HASH
from quantum.ml import evaluation
from quantum.ml.dataset import BAR_MS, Dataset, load_dataset
from quantum.ml.ensemble import fit_weights, mix
from quantum.ml.labels import (
    FLAT,
    LONG,
    SHORT,
    UNLABELLED,
    LabelSpec,
    direction_labels,
    future_log_return,
)
from quantum.ml.members import MemberConfig, fit_member
from quantum.ml.registry import ModelRefused, ModelRegistry
from quantum.ml.train import TrainConfig, train, walk_forward_report
from quantum.ml.walkforward import final_split, walk_forward

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"
TINY = MemberConfig(tree_rounds=15, tree_depth=3)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_dataset(SAMPLE, ("BTCUSDT", "ETHUSDT"), start=datetime(2025, 9, 1, tzinfo=UTC),
                        end=datetime(2025, 9, 15, tzinfo=UTC))


def test_labels_use_the_future_close_and_a_fee_covering_dead_zone() -> None:
    close = np.array([100.0, 100.05, 101.0, 99.0, 100.0])
    future = future_log_return(close, 1)
    labels = direction_labels(future, LabelSpec(horizon=1).dead_zone)
    assert labels.tolist() == [FLAT, LONG, SHORT, LONG, UNLABELLED]
    with pytest.raises(ValueError, match="round-trip fee"):
        LabelSpec(taker_fee=0.001, dead_zone=0.001)


def test_dataset_rows_are_time_ordered_with_complete_features(data: Dataset) -> None:
    assert np.all(np.diff(data.open_time) >= 0)
    assert np.isfinite(data.features).all()
    assert set(np.unique(data.labels)) == {SHORT, FLAT, LONG}
    # the forecasters' window ends at the row's own bar: its last value is log_ret_1
    rows = np.arange(0, len(data), 97)
    assert np.allclose(data.windows(rows)[:, -1], data.feature("log_ret_1")[rows], atol=1e-6)


def test_walk_forward_purges_and_embargoes(data: Dataset) -> None:
    horizon = data.spec.horizon
    folds = walk_forward(data.open_time, folds=3, horizon=horizon)
    previous_test_end = None
    for fold in folds:
        train_last = data.open_time[fold.train].max()
        validation = data.open_time[fold.validation]
        test = data.open_time[fold.test]
        # a training label (t .. t + horizon bars) ends before validation starts, plus gap
        assert train_last + horizon * BAR_MS < validation.min()
        assert validation.max() + horizon * BAR_MS < test.min()
        if previous_test_end is not None:
            assert test.min() >= previous_test_end  # test blocks do not overlap
        previous_test_end = test.max()
    with pytest.raises(ValueError, match="shorter than the horizon"):
        walk_forward(data.open_time, folds=2, horizon=12, embargo_bars=6)
    train_rows, validation_rows = final_split(data.open_time, horizon=horizon)
    gap_end = data.open_time[train_rows].max() + horizon * BAR_MS
    assert gap_end < data.open_time[validation_rows].min()


def test_metrics_on_known_values() -> None:
    labels = np.array([LONG, SHORT, FLAT, LONG])
    perfect = np.eye(3)[labels]
    assert evaluation.brier(perfect, labels) == 0.0
    assert evaluation.log_loss(perfect, labels) < 1e-9
    assert evaluation.balanced_accuracy(labels, labels) == 1.0
    uniform = np.full((4, 3), 1 / 3)
    assert evaluation.log_loss(uniform, labels) == pytest.approx(np.log(3))
    calls = np.array([LONG, SHORT, FLAT, LONG])
    returns = np.array([0.01, -0.02, 0.0, 0.005])
    times = np.array([0, 0, 1, BAR_MS * 20])
    result = evaluation.net_return(calls, returns, times, np.array([0, 1, 0, 0]), horizon=12,
                                   round_trip_fee=0.001)
    assert result["trades"] == 3
    assert result["total_log_return"] == pytest.approx(0.01 + 0.02 + 0.005 - 0.003)
    # a second signal while the symbol's position is open is skipped
    busy = evaluation.net_return(np.array([LONG, LONG]), np.array([0.01, 0.01]),
                                 np.array([0, BAR_MS]), np.array([0, 0]), horizon=12,
                                 round_trip_fee=0.0)
    assert busy["trades"] == 1


def test_ensemble_weights_prefer_the_informative_member() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 3000)
    informative = np.full((3000, 3), 0.2)
    informative[np.arange(3000), labels] = 0.6
    noise = rng.dirichlet(np.ones(3), 3000)
    weights = fit_weights({"good": informative, "noise": noise}, labels)
    assert weights["good"] > 0.8
    assert mix({"good": informative}, weights, 1.0) == pytest.approx(informative)


def test_shuffled_labels_score_at_chance(data: Dataset) -> None:
    """The leakage test: with the labels' link to the features destroyed, out-of-sample
    scores must fall to what the class shares alone give."""
    rng = np.random.default_rng(3)
    shuffled = Dataset(data.symbols, data.features, rng.permutation(data.labels),
                       data.future_return, data.open_time, data.symbol_index, data.position,
                       data.returns, data.return_times, data.spec)
    folds = walk_forward(shuffled.open_time, folds=1, horizon=12)
    fold = folds[0]
    member, _ = fit_member("lightgbm", shuffled, fold.train, TINY)
    probabilities = member.predict_proba(shuffled.features[fold.test], np.empty(0))
    labels = shuffled.labels[fold.test]
    accuracy = evaluation.balanced_accuracy(probabilities.argmax(axis=1), labels)
    assert abs(accuracy - 1 / 3) < 0.05
    shares = np.bincount(shuffled.labels[fold.train], minlength=3) / fold.train.size
    prior_loss = evaluation.log_loss(np.tile(shares, (labels.size, 1)), labels)
    assert evaluation.log_loss(probabilities, labels) > prior_loss - 0.01


def test_shuffled_labels_score_at_chance_on_the_context_features(data: Dataset) -> None:
    """The same leakage test on the features of schema version 2 alone (funding, basis,
    regime, BTC's state, beta, cross-sectional ranks: the others held constant), after
    checking that the dataset really carries them (their availability flags are set)."""
    context = [FEATURE_NAMES.index(name) for name in CONTEXT_NAMES]
    for flag in ("funding_available", "basis_available", "btc_available", "beta_available",
                 "xs_available"):
        assert data.feature(flag).mean() > 0.99, flag
    features = np.zeros_like(data.features)
    features[:, context] = data.features[:, context]
    rng = np.random.default_rng(5)
    shuffled = Dataset(data.symbols, features, rng.permutation(data.labels),
                       data.future_return, data.open_time, data.symbol_index, data.position,
                       data.returns, data.return_times, data.spec)
    fold = walk_forward(shuffled.open_time, folds=1, horizon=12)[0]
    member, _ = fit_member("lightgbm", shuffled, fold.train, TINY)
    probabilities = member.predict_proba(shuffled.features[fold.test], np.empty(0))
    labels = shuffled.labels[fold.test]
    assert abs(evaluation.balanced_accuracy(probabilities.argmax(axis=1), labels) - 1 / 3) < 0.05
    shares = np.bincount(shuffled.labels[fold.train], minlength=3) / fold.train.size
    prior_loss = evaluation.log_loss(np.tile(shares, (labels.size, 1)), labels)
    assert evaluation.log_loss(probabilities, labels) > prior_loss - 0.01


def test_walk_forward_report_scores_members_ensemble_and_baselines(data: Dataset) -> None:
    config = TrainConfig(members=("xgboost", "lightgbm"), folds=2, quorum=2, member=TINY)
    report = walk_forward_report(data, config, progress=lambda _: None)
    assert len(report["folds"]) == 2
    fold = report["folds"][0]
    assert set(fold["members"]) == {"xgboost", "lightgbm"}
    assert set(fold["baselines"]) == {"prior", "momentum_sign", "baseline_model"}
    for scores in (fold["ensemble"], *fold["members"].values(), *fold["baselines"].values()):
        for key in ("log_loss", "balanced_accuracy", "brier", "calibration", "confident_hit_rate",
                    "share", "net_of_fees"):
            assert key in scores
    assert sum(fold["weights"].values()) == pytest.approx(1.0)
    verdict = report["verdict"]
    assert isinstance(verdict["beats_all_baselines"], bool)
    assert verdict["summary"]


@pytest.fixture(scope="module")
def registry(data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRegistry, str]:
    root = tmp_path_factory.mktemp("models")
    registry = ModelRegistry(root)
    config = TrainConfig(members=("xgboost", "lightgbm"), folds=0, quorum=2, member=TINY)
    version, _ = train(data, registry, config, source=str(SAMPLE))
    return registry, version


def test_registry_records_metadata_and_hashes(registry: tuple[ModelRegistry, str]) -> None:
    reg, version = registry
    manifest = reg.manifest(version)
    assert manifest["feature_schema_hash"] == SCHEMA_HASH
    assert manifest["data"]["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert manifest["data"]["range"][0].startswith("2025-09-0")
    assert manifest["code_version"]
    assert {"xgboost.ubj", "lightgbm.txt", "ensemble.json", "reference.json"} <= set(
        manifest["files"])
    assert all(len(h) == 64 for h in manifest["files"].values())
    ensemble = reg.load(version)
    assert ensemble.loaded == ("lightgbm", "xgboost") and not ensemble.missing


def _copy(registry: ModelRegistry, version: str, tmp_path: Path) -> ModelRegistry:
    import shutil

    shutil.copytree(registry.root / version, tmp_path / version)
    return ModelRegistry(tmp_path)


def test_a_corrupt_member_is_left_out_and_named(registry: tuple[ModelRegistry, str],
                                               tmp_path: Path) -> None:
    reg, version = registry
    copy = _copy(reg, version, tmp_path)
    with (tmp_path / version / "xgboost.ubj").open("ab") as handle:
        handle.write(b"tampered")
    ensemble = copy.load(version)
    assert "xgboost" not in ensemble.members
    assert "sha256" in ensemble.missing["xgboost"]
    assert not ensemble.quorate  # 1 of the 2 required: no prediction at all
    assert ensemble.predict_proba(np.zeros((1, len(FEATURE_NAMES)), np.float32), None) is None


def test_loading_refuses_a_schema_mismatch_and_a_bad_shared_file(
        registry: tuple[ModelRegistry, str], tmp_path: Path) -> None:
    reg, version = registry
    copy = _copy(reg, version, tmp_path)
    manifest_path = tmp_path / version / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["feature_schema_hash"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelRefused, match="feature schema"):
        copy.load(version)
    manifest["feature_schema_hash"] = SCHEMA_HASH
    manifest_path.write_text(json.dumps(manifest))
    (tmp_path / version / "ensemble.json").write_text("{}")
    with pytest.raises(ModelRefused, match=r"ensemble\.json fails its sha256"):
        copy.load(version)
    with pytest.raises(ModelRefused, match=r"no manifest\.json"):
        copy.load("19990101T000000000000Z")


def test_promote_and_rollback(registry: tuple[ModelRegistry, str], tmp_path: Path) -> None:
    import shutil

    reg, version = registry
    copy = _copy(reg, version, tmp_path)
    shutil.copytree(reg.root / version, tmp_path / "second")
    with pytest.raises(ModelRefused, match="nothing to roll back"):
        copy.rollback()
    copy.promote(version)
    copy.promote("second")
    assert copy.pointer() == {"active": "second", "history": [version], "candidate": None}
    assert copy.rollback()["active"] == version
    assert copy.load().version == version


def test_cli_evaluate_and_models_commands(registry: tuple[ModelRegistry, str],
                                          tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from quantum.ctl.main import app

    reg, version = registry
    copy = _copy(reg, version, tmp_path / "registry")
    runner = CliRunner()
    result = runner.invoke(app, ["models", "promote", version, "--models", str(copy.root)])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["models", "list", "--models", str(copy.root), "--json"])
    assert json.loads(listed.output)[0]["active"] is True
    report_path = tmp_path / "evaluation.json"
    result = runner.invoke(app, ["evaluate", "--models", str(copy.root), "--data", str(SAMPLE),
                                 "--symbols", "SOLUSDT", "--start", "2025-10-01",
                                 "--end", "2025-10-06", "--json", str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["out_of_sample"] is True  # another symbol, after the training range
    assert set(report["baselines"]) == {"prior", "momentum_sign", "baseline_model"}
    assert report["ensemble"]["rows"] == report["rows"] > 0
    assert "beats_all_baselines" in report["verdict"]
