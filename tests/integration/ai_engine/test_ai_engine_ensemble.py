"""The ai-engine serving a four-member registry version through the real runner and Redis.

One tiny ensemble (a few boosting rounds, a few network steps) is trained once for the
module on a week of real bars; the tests then check serving: the networks' traced forward
pass agrees with neuralforecast's ``predict()``, every feature event gets one signal with
the members' votes, a missing or corrupt member is left out and reported (below the quorum
no signal and no intent), and a ``policy.updated`` swap neither drops nor repeats an event.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import redis

from quantum.app import subscription
from quantum.bus.envelope import new_envelope
from quantum.bus.redisports import redis_ports
from quantum.bus.runner import Runner, RunnerConfig, publish
from quantum.contracts.events import EVENT_TYPES, FeatureVector, PolicyUpdated
from quantum.contracts.streams import FEATURES, POLICY_UPDATED
from quantum.features import FEATURE_NAMES, SCHEMA_HASH, WARMUP_BARS, compute_batch
from quantum.ml.dataset import Dataset, load_dataset
from quantum.ml.members import MemberConfig, _series_frame, fit_member
from quantum.ml.registry import ModelRegistry
from quantum.ml.train import TrainConfig, train
from quantum.registry.fleet import AI_ENGINE_KEY, service
from quantum.replay.data import load_symbol
from quantum.replay.report import payloads
from services.ai_engine.service import AiEngine

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"
TINY = MemberConfig(tree_rounds=10, tree_depth=3, neural_steps=3, nhits_units=16,
                    patchtst_hidden=16, neural_series_bars=3000)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_dataset(SAMPLE, ("BTCUSDT", "ETHUSDT"), start=datetime(2025, 9, 1, tzinfo=UTC),
                        end=datetime(2025, 9, 9, tzinfo=UTC))


@pytest.fixture(scope="module")
def registry(data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("models")
    version, _ = train(data, ModelRegistry(root), TrainConfig(folds=0, member=TINY))
    return root, version


def feature_events(symbol: str, count: int) -> list[Any]:
    """``count`` consecutive real feature vectors of ``symbol`` as the publisher emits them."""
    bars = load_symbol(SAMPLE, symbol, start_ms=int(datetime(2025, 9, 10, tzinfo=UTC)
                                                    .timestamp() * 1000))
    frame = pd.DataFrame(bars.ohlcv[:WARMUP_BARS + count],
                         columns=["open", "high", "low", "close", "volume"],
                         index=bars.open_time[:WARMUP_BARS + count])
    features = compute_batch(frame).iloc[WARMUP_BARS - 1:WARMUP_BARS - 1 + count]
    events = []
    for open_time, row in features.iterrows():
        close_time = int(open_time) + 300_000 - 1
        vector = FeatureVector(symbol=symbol, interval="5m", open_time=int(open_time),
                               close_time=close_time, close=float(frame.loc[open_time, "close"]),
                               schema_hash=SCHEMA_HASH,
                               values={n: float(row[n]) for n in FEATURE_NAMES})
        events.append(new_envelope(vector, ts=close_time, source="feature-publisher",
                                   key=f"{symbol}:{open_time}"))
    return events


def run_engine(client: redis.Redis, engine: AiEngine) -> None:
    runner = Runner(client, engine, subscription(service("ai-engine")), EVENT_TYPES,
                    RunnerConfig(block_ms=20, batch_size=50))
    runner.start()
    runner.run(max_idle_turns=2)


def signals(client: redis.Redis) -> list[dict[str, Any]]:
    return payloads(client, "quantum:stream:ai.signal_generated")


def engine(client: redis.Redis, root: Path, **kwargs: Any) -> AiEngine:
    return AiEngine(0.5, 20, 0.99, model="ensemble", models_dir=root,
                    ports=redis_ports(client, EVENT_TYPES, event_clock=False), **kwargs)


def test_forward_pass_agrees_with_neuralforecast_predict(data: Dataset) -> None:
    rows = np.arange(len(data) // 2)
    for name in ("nhits", "patchtst"):
        member, _ = fit_member(name, data, rows, TINY)
        expected = member.trained.predict()
        train_end = int(data.open_time[rows].max()) + 13 * 300_000
        frame = _series_frame(data, train_end, member.meta.return_scale, TINY.neural_series_bars)
        for symbol in data.symbols:
            window = frame[frame.unique_id == symbol].y.to_numpy()[-64:]
            ours = member.forecast(window[None, :] * member.meta.return_scale)[0]
            theirs = expected[expected.unique_id == symbol].iloc[:, -1].to_numpy()
            np.testing.assert_allclose(ours / member.meta.return_scale, theirs, atol=1e-4)


def test_engine_serves_all_four_members_once_windows_fill(
        r: redis.Redis, registry: tuple[Path, str]) -> None:
    root, version = registry
    events = feature_events("ETHUSDT", 80)
    publish(r, [(FEATURES, e) for e in events])
    run_engine(r, engine(r, root, model_version=version))
    served = signals(r)
    # the trees alone are 2 of 4, below the quorum: no signal until the 64-bar window is full
    assert len(served) == 80 - 63
    assert all(s["model_version"] == version for s in served)
    assert all({v["member"] for v in s["votes"]} == {"xgboost", "lightgbm", "nhits", "patchtst"}
               for s in served)
    health = orjson.loads(r.get(AI_ENGINE_KEY))["health"]
    assert health["quorate"] and health["members_missing"] == {}


def test_a_missing_member_is_reported_and_below_quorum_nothing_is_made(
        r: redis.Redis, registry: tuple[Path, str], tmp_path: Path) -> None:
    root, version = registry
    shutil.copytree(root / version, tmp_path / version)
    (tmp_path / version / "nhits-b1.pt").unlink()  # missing
    events = feature_events("BTCUSDT", 70)
    publish(r, [(FEATURES, e) for e in events])
    run_engine(r, engine(r, tmp_path, model_version=version))
    served = signals(r)
    assert len(served) == 70 - 63 and all(len(s["votes"]) == 3 for s in served)
    health = orjson.loads(r.get(AI_ENGINE_KEY))["health"]
    assert "nhits" in health["members_missing"] and health["quorate"]
    notices = payloads(r, "quantum:stream:ai.supervisor")
    assert [n["kind"] for n in notices] == ["members_missing"]

    r.flushdb()
    with (tmp_path / version / "patchtst-b32.pt").open("r+b") as handle:
        handle.write(b"corrupt")  # a second member fails its hash: 2 of 4 loaded
    publish(r, [(FEATURES, e) for e in events])
    run_engine(r, engine(r, tmp_path, model_version=version))
    assert signals(r) == []
    assert payloads(r, "quantum:stream:trade.intent") == []
    health = orjson.loads(r.get(AI_ENGINE_KEY))["health"]
    assert not health["quorate"]
    assert "sha256" in health["members_missing"]["patchtst"]
    notice = payloads(r, "quantum:stream:ai.supervisor")[0]
    assert notice["severity"] == "critical" and "quorum" in notice["detail"]


def test_swap_neither_drops_nor_repeats_events_and_survives_restart(
        r: redis.Redis, registry: tuple[Path, str], tmp_path: Path) -> None:
    root, version = registry
    shutil.copytree(root / version, tmp_path / version)
    shutil.copytree(root / version, tmp_path / "v2")
    events = feature_events("ETHUSDT", 100)
    first = engine(r, tmp_path, model_version=version)
    publish(r, [(FEATURES, e) for e in events[:70]])
    run_engine(r, first)
    update = PolicyUpdated(kind="model", version="v2", previous=version, reason="test", ts=1)
    publish(r, [(POLICY_UPDATED, new_envelope(update, ts=1, source="clm", key="v2"))])
    # streams are read one after another in a turn: there is no order between two streams,
    # so the update is handled on its own before the next features arrive
    run_engine(r, first)
    publish(r, [(FEATURES, e) for e in events[70:85]])
    run_engine(r, first)
    second = engine(r, tmp_path, model_version=version)  # a restart: state says v2
    publish(r, [(FEATURES, e) for e in events[85:]])
    run_engine(r, second)
    served = signals(r)
    bars = [s["bar_time"] for s in served]
    assert bars == sorted(set(bars)) and len(bars) == 100 - 63
    versions = [s["model_version"] for s in served]
    assert versions == [version] * (70 - 63) + ["v2"] * (100 - 70)
    kinds = [n["kind"] for n in payloads(r, "quantum:stream:ai.supervisor")]
    assert kinds == ["model_swapped"]


def test_baseline_stays_selectable(r: redis.Redis) -> None:
    events = feature_events("ETHUSDT", 5)
    publish(r, [(FEATURES, e) for e in events])
    run_engine(r, AiEngine(0.65, 20, 0.7,
                             ports=redis_ports(r, EVENT_TYPES, event_clock=False)))
    served = signals(r)
    assert len(served) == 5 and {s["model"] for s in served} == {"baseline-momentum"}
