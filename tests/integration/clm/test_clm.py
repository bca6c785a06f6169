"""The CLM: a retraining run as a child process, the shadow test, promotion and rollback.

Models here are small tree ensembles (quorum 2) trained on a few days of real bars; the
CLM's logic does not depend on which members an ensemble has.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY

from quantum.app import subscription
from quantum.bus.envelope import new_envelope
from quantum.bus.redisports import redis_ports
from quantum.bus.runner import Outbox, Runner, RunnerConfig, publish
from quantum.config import load
from quantum.contracts.events import EVENT_TYPES, FeatureVector
from quantum.contracts.streams import FEATURES
from quantum.features import FEATURE_NAMES, SCHEMA_HASH, WARMUP_BARS, stream_tables
from quantum.ml.dataset import load_dataset
from quantum.ml.evaluation import log_loss
from quantum.ml.members import MemberConfig
from quantum.ml.registry import ENSEMBLE, ModelRegistry
from quantum.ml.shadow import ShadowTest
from quantum.ml.train import TrainConfig, train
from quantum.models.ensemble import ReturnWindows, ServedEnsemble
from quantum.registry.fleet import service
from quantum.replay.data import load_symbol
from quantum.replay.report import payloads
from services.clm.config import Settings
from services.clm.service import Clm

pytestmark = pytest.mark.usefixtures("only_this_services_keys")


SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"
TINY = MemberConfig(tree_rounds=15, tree_depth=3)

def ports(client: redis.Redis) -> Any:
    """A service's Redis ports on the wall clock, as its factory is handed them."""
    return redis_ports(client, EVENT_TYPES, event_clock=False)



@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A fitted version and a deliberately worse one (temperature 20: near-uniform)."""
    root = tmp_path_factory.mktemp("models")
    data = load_dataset(SAMPLE, ("BTCUSDT", "ETHUSDT"), start=datetime(2025, 9, 1, tzinfo=UTC),
                        end=datetime(2025, 9, 10, tzinfo=UTC))
    registry = ModelRegistry(root)
    good, manifest = train(data, registry, TrainConfig(members=("xgboost", "lightgbm"), folds=0,
                                                       quorum=2, member=TINY))
    settings = json.loads((root / good / ENSEMBLE).read_text())

    def write(directory: Path) -> None:
        for name in manifest["files"]:
            shutil.copy(root / good / name, directory / name)
        (directory / ENSEMBLE).write_text(json.dumps({**settings, "temperature": 20.0}))

    metadata = {k: v for k, v in manifest.items() if k not in ("files", "version")}
    registry.save("worse", write, metadata)
    return root, good, "worse"


def feature_events(symbols: tuple[str, ...], vectors: int) -> list[Any]:
    """``vectors`` real feature vectors per symbol as the feature-publisher serves them to
    a universe of ``symbols``: the streaming universe features (BTC's state, beta, ranks,
    funding and basis from the replay ticks) of the bars from 2025-09-10, after the
    warm-up, in bar-time order."""
    start = int(datetime(2025, 9, 10, tzinfo=UTC).timestamp() * 1000)
    bars = WARMUP_BARS - 1 + vectors
    data = {symbol: load_symbol(SAMPLE, symbol, start_ms=start, end_ms=start + bars * 300_000)
            for symbol in symbols}
    assert all(len(d.open_time) == bars for d in data.values())  # no gap in the sample
    events = []
    for symbol, table in stream_tables(data).items():
        closes = dict(zip(data[symbol].open_time.tolist(), data[symbol].ohlcv[:, 3].tolist(),
                          strict=True))
        for open_time, values in table.items():
            if values is None:
                continue  # warm-up: the publisher emits nothing
            vector = FeatureVector(symbol=symbol, interval="5m", open_time=open_time,
                                   close_time=open_time + 299_999, close=closes[open_time],
                                   schema_hash=SCHEMA_HASH, values=values)
            events.append(new_envelope(vector, ts=vector.close_time, source="feature-publisher",
                                       key=f"{symbol}:{open_time}"))
    events.sort(key=lambda e: (e.payload.close_time, e.payload.symbol))
    assert len(events) == vectors * len(symbols)
    return events


def clm_settings(root: Path, **overrides: Any) -> Settings:
    """The CLM's settings on ``root``; drift-triggered retraining only where a test asks."""
    return load(Settings, models_dir=str(root), **{"retrain_on_drift": False, **overrides})


def test_shadow_scores_resolved_rows_on_the_declared_metric(
        versions: tuple[Path, str, str]) -> None:
    root, good, worse = versions
    registry = ModelRegistry(root)
    candidate = ServedEnsemble(registry.load(good))
    active = ServedEnsemble(registry.load(worse))
    test = ShadowTest(candidate, active, "log_loss", needed=50, horizon=12, dead_zone=0.0008)
    windows = ReturnWindows()
    # ETH's vectors in the universe the models were trained on: BTC's state and the ranks
    # are set from the second vector on (the first one's previous bar is still warming up)
    events = [e for e in feature_events(("BTCUSDT", "ETHUSDT"), 80)
              if e.payload.symbol == "ETHUSDT"]
    assert all(e.payload.values["btc_available"] == e.payload.values["xs_available"] == 1.0
               and e.payload.values["funding_available"] == 1.0 for e in events[1:])
    for event in events:
        v = event.payload
        test.observe(v.symbol, v.close_time, v.close, v.values,
                     windows.update(v.symbol, v.close_time, v.values["log_ret_1"]))
    assert test.resolved == 80 - 12 and test.done
    # recompute the candidate's score directly from the same rows
    closes = np.array([e.payload.close for e in events])
    future = np.log(closes[12:] / closes[:-12])
    labels = np.where(future > 0.0008, 2, np.where(future < -0.0008, 0, 1))
    probabilities = np.array([
        [p.prob_short, 1 - p.prob_long - p.prob_short, p.prob_long]
        for p in candidate.predict_batch(
            [_row(e) for e in events[:-12]])])
    assert test.scores()[0] == pytest.approx(log_loss(probabilities, labels), rel=1e-6)
    assert test.candidate_wins() == (test.scores()[0] < test.scores()[1])


def _row(event: Any) -> Any:
    from quantum.models.ensemble import Row

    return Row(event.payload.values, None)


def run_clm(client: redis.Redis, clm: Clm, until_judged: bool = False) -> None:
    """Run the CLM's runner until it is idle (and, with ``until_judged``, until the promotion
    backtest it started in a child process has been decided)."""
    runner = Runner(client, clm, subscription(service("clm")), EVENT_TYPES,
                    RunnerConfig(block_ms=20, batch_size=50))
    runner.start()
    runner.run(max_idle_turns=2)
    deadline = time.monotonic() + 600
    while until_judged and (clm.judging is not None or clm.judge is not None):
        assert time.monotonic() < deadline, "the promotion backtest did not finish"
        runner.run(max_idle_turns=1)
        time.sleep(0.1)


def test_promotion_is_decided_by_a_backtest_of_the_shadow_window(
        r: redis.Redis, versions: tuple[Path, str, str], tmp_path: Path) -> None:
    """The active version is the near-uniform one, which never reaches the confidence
    threshold and so never trades; the candidate is an over-confident copy of the fitted
    one (temperature 0.05), far worse on log loss, which trades. Both are backtested over
    the shadow window with full costs, and the decision follows the backtest alone."""
    root, good, worse = versions
    shutil.copytree(root / worse, tmp_path / worse)
    registry = ModelRegistry(tmp_path)
    _variant(root, good, tmp_path, "overconfident", temperature=0.05)
    registry.promote(worse)
    clm = Clm(clm_settings(tmp_path, shadow_predictions=300), ports(r))
    run_clm(r, clm)  # announces the active version at start
    assert clm.begin_shadow("overconfident")
    # the served vectors of the universe the versions were trained on
    publish(r, [(FEATURES, e) for e in feature_events(("BTCUSDT", "ETHUSDT"), 170)])
    run_clm(r, clm, until_judged=True)
    shadow = payloads(r, "quantum:stream:learning.events")
    assert len(shadow) == 1 and shadow[0]["predictions"] >= 300
    assert shadow[0]["candidate_score"] > shadow[0]["active_score"]  # log loss: worse
    bt = shadow[0]["backtest"]
    assert bt["ran"] is True and bt["symbols"] == "BTCUSDT,ETHUSDT" and bt["brake"] == 0.2
    assert bt["candidate_trades"] > 0 and bt["active_trades"] == 0
    assert bt["active_net_return"] == 0.0
    expected = (bt["candidate_net_return"] > bt["active_net_return"]
                and bt["candidate_max_drawdown"] < bt["brake"])
    assert shadow[0]["promoted"] is expected, shadow[0]
    decisions = registry.decisions("overconfident")
    assert len(decisions) == 1 and decisions[0]["promoted"] is expected
    assert decisions[0]["backtest"]["candidate_net_return"] == bt["candidate_net_return"]
    updates = payloads(r, "quantum:stream:policy.updated")
    if not expected:  # the candidate lost money (or hit the brake) over this window
        assert "does not beat" in shadow[0]["reason"] or "brake" in shadow[0]["reason"]
        assert registry.active() == worse and registry.pointer()["candidate"] is None
        assert [u["version"] for u in updates] == [worse]
        return
    assert "beats" in shadow[0]["reason"]
    assert registry.active() == "overconfident"
    assert [(u["version"], u["previous"]) for u in updates] == [
        (worse, None), ("overconfident", worse)]
    assert "promotion backtest" in updates[-1]["reason"]

    registry.rollback()  # an operator rolls back: the CLM announces it
    run_clm(r, clm)
    updates = payloads(r, "quantum:stream:policy.updated")
    assert (updates[-1]["version"], updates[-1]["previous"]) == (worse, "overconfident")


def _variant(root: Path, good: str, target: Path, name: str, temperature: float) -> None:
    """A copy of ``good`` whose ensemble has another temperature (same members)."""
    manifest = json.loads((root / good / "manifest.json").read_text())
    settings = json.loads((root / good / ENSEMBLE).read_text())

    def write(directory: Path) -> None:
        for file in manifest["files"]:
            shutil.copy(root / good / file, directory / file)
        (directory / ENSEMBLE).write_text(json.dumps({**settings, "temperature": temperature}))

    ModelRegistry(target).save(name, write, {k: v for k, v in manifest.items()
                                             if k not in ("files", "version")})


def test_an_equal_candidate_is_not_promoted(r: redis.Redis, versions: tuple[Path, str, str],
                                            tmp_path: Path) -> None:
    root, good, _ = versions
    shutil.copytree(root / good, tmp_path / good)
    shutil.copytree(root / good, tmp_path / "copy")
    registry = ModelRegistry(tmp_path)
    registry.promote(good)
    clm = Clm(clm_settings(tmp_path, shadow_predictions=30), ports(r))
    assert clm.begin_shadow("copy")
    publish(r, [(FEATURES, e) for e in feature_events(("BTCUSDT",), 45)])
    run_clm(r, clm, until_judged=True)
    shadow = payloads(r, "quantum:stream:learning.events")
    assert shadow[0]["promoted"] is False
    bt = shadow[0]["backtest"]
    assert bt["ran"] and bt["candidate_net_return"] == bt["active_net_return"]
    assert "does not beat" in shadow[0]["reason"]
    assert registry.pointer()["active"] == good and registry.pointer()["candidate"] is None
    assert registry.decisions("copy")[0]["promoted"] is False
    # A restart rebuilds the return windows from the handled vectors.
    restarted = Clm(clm_settings(tmp_path), ports(r))
    restarted.restore()
    assert len(restarted.windows.values["BTCUSDT"]) == 45


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("quantum_clm_vectors_refused_total",
                                     {"reason": reason}) or 0.0


def test_vectors_of_another_schema_are_skipped_and_counted(
        r: redis.Redis, versions: tuple[Path, str, str], tmp_path: Path) -> None:
    """A vector whose schema hash is not the running code's (a publisher of another
    version) or that lacks a feature is skipped, counted and acked: it reaches neither the
    drift window nor the return windows, live or in the warm-up after a restart."""
    root, good, _ = versions
    shutil.copytree(root / good, tmp_path / good)
    ModelRegistry(tmp_path).promote(good)
    events = feature_events(("ETHUSDT",), 50)
    foreign = [new_envelope(e.payload.model_copy(update={"schema_hash": "0" * 16}),
                            ts=e.ts, source="feature-publisher", key=f"old:{e.id}")
               for e in events[:10]]
    values = dict(events[10].payload.values)
    del values[FEATURE_NAMES[-1]]
    partial = new_envelope(events[10].payload.model_copy(update={"values": values}),
                           ts=events[10].ts, source="feature-publisher", key="partial")
    schema, missing = _refused("schema_hash"), _refused("missing")
    clm = Clm(clm_settings(tmp_path), ports(r))
    publish(r, [(FEATURES, e) for e in [*foreign, partial, *events[11:]]])
    run_clm(r, clm)
    assert _refused("schema_hash") - schema == 10 and _refused("missing") - missing == 1
    assert clm.drift_seen == 39 and len(clm.windows.values["ETHUSDT"]) == 39
    assert clm.foreign == {"0" * 16}
    assert r.xpending("quantum:stream:features", "clm")["pending"] == 0
    assert r.xlen("quantum:stream:dlq") == 0
    restarted = Clm(clm_settings(tmp_path), ports(r))
    restarted.restore()
    assert len(restarted.windows.values["ETHUSDT"]) == 39 and restarted.drift_seen == 39


def test_no_backtest_data_for_the_window_means_no_promotion(
        r: redis.Redis, versions: tuple[Path, str, str], tmp_path: Path) -> None:
    root, good, worse = versions
    for name in (good, worse):
        shutil.copytree(root / name, tmp_path / name)
    registry = ModelRegistry(tmp_path)
    registry.promote(worse)
    empty = tmp_path / "no-data"
    empty.mkdir()
    clm = Clm(clm_settings(tmp_path, shadow_predictions=20, training_data_dir=str(empty)),
              ports(r))
    assert clm.begin_shadow(good)
    publish(r, [(FEATURES, e) for e in feature_events(("ETHUSDT",), 40)])
    run_clm(r, clm, until_judged=True)
    shadow = payloads(r, "quantum:stream:learning.events")
    assert shadow[0]["promoted"] is False and shadow[0]["backtest"]["ran"] is False
    assert "could not run" in shadow[0]["reason"] and "ETHUSDT" in shadow[0]["reason"]
    assert registry.active() == worse


def test_drift_starts_a_run_at_most_once_per_interval(
        r: redis.Redis, versions: tuple[Path, str, str], tmp_path: Path) -> None:
    """PSI of the live bars against the active version's training deciles above the
    threshold starts a retraining run (trigger ``drift``); drift that persists starts the
    next one only after ``drift_retrain_interval_s``."""
    root, good, _ = versions
    shutil.copytree(root / good, tmp_path / good)
    ModelRegistry(tmp_path).promote(good)
    data_dir = _tiny_data(tmp_path)
    clm = Clm(clm_settings(tmp_path, training_data_dir=str(data_dir), retrain_on_drift=True,
                           drift_window=100,
                           drift_every=20, drift_threshold=0.05, drift_retrain_interval_s=600,
                           retrain_members="xgboost,lightgbm", retrain_tree_rounds=5,
                           training_lookback_days=30), ports(r))
    publish(r, [(FEATURES, e) for e in feature_events(("SOLUSDT",), 120)])
    run_clm(r, clm)  # handles the vectors; a drift run may start on an idle turn
    started = [e for e in payloads(r, "quantum:stream:learning.events")
               if e.get("trigger") is not None]
    assert [e["trigger"] for e in started] == ["drift"]
    assert "PSI" in started[0]["detail"] and good in started[0]["detail"]
    assert clm.last_run is not None
    out = Outbox(produces=frozenset(s.name for s in service("clm").produces))
    deadline = time.monotonic() + 300
    while clm.job is not None and time.monotonic() < deadline:
        time.sleep(0.2)
        clm.on_idle(out, time.time())
    completed = [e.payload for _, e in out.events if e.type == "learning.retraining.completed"]
    assert len(completed) == 1 and completed[0].succeeded, completed
    # the drift persists (more bars of the same market), but the interval has not passed
    clm.drift_detail = clm.drift_detail or "PSI still high"
    clm.on_idle(out, time.time())
    assert [e.type for _, e in out.events].count("learning.retraining.started") == 0
    clm.on_idle(out, clm.last_run + 601)  # one interval later it may run again
    again = [e.payload for _, e in out.events if e.type == "learning.retraining.started"]
    assert [e.trigger for e in again] == ["drift"]
    while clm.job is not None and time.monotonic() < deadline:
        time.sleep(0.2)
        clm.on_idle(out, time.time())


def _tiny_data(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with gzip.open(SAMPLE / "BTCUSDT-5m.csv.gz", "rt") as source:
        lines = source.readlines()[:3500]
    with gzip.open(data_dir / "BTCUSDT-5m.csv.gz", "wt") as target:
        target.writelines(lines)
    return data_dir


def test_scheduled_run_trains_a_candidate_in_a_child_process(
        r: redis.Redis, tmp_path: Path) -> None:
    data_dir = _tiny_data(tmp_path)
    models = tmp_path / "models"
    clm = Clm(clm_settings(models, training_data_dir=str(data_dir), retrain_on_start=True,
                           retrain_members="xgboost,lightgbm", retrain_tree_rounds=5,
                           training_lookback_days=30), ports(r))
    out = Outbox(produces=frozenset(s.name for s in service("clm").produces))
    clm.on_idle(out, time.time())
    assert [e.type for _, e in out.events] == ["learning.retraining.started"]
    deadline = time.monotonic() + 300
    while clm.job is not None and time.monotonic() < deadline:
        time.sleep(0.2)
        clm.on_idle(out, time.time())
    completed = [e.payload for _, e in out.events if e.type == "learning.retraining.completed"]
    assert len(completed) == 1 and completed[0].succeeded, completed
    candidate = completed[0].candidate
    registry = ModelRegistry(models)
    assert candidate in registry.versions()
    # no active version to shadow against: the candidate waits for an operator
    assert registry.pointer()["candidate"] == candidate and registry.active() is None
    assert clm.next_run > time.time() + 3000  # the next run is a full interval away
