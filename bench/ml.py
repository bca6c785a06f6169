"""ML benchmarks: ensemble inference latency and throughput, and retraining time.

* ``inference``: the ai-engine's prediction path with all four members — one feature event
  at a time (p50/p99 per event, what a live bar costs) and in runner-sized batches
  (events per second). Uses the registry's active version under ``models/`` when it has
  four members, otherwise trains a small one first.
* ``retrain``: the production fit of all four members (no walk-forward) with the default
  sizes on the shared data set (``/work/shared/data/futures``, 5 symbols, all months), or in
  ``quick`` mode on two symbols of the bundled sample with fewer steps.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SHARED = Path("/work/shared/data/futures")
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")


def _rows(count: int) -> list[Any]:
    from quantum.features import FEATURE_NAMES
    from quantum.ml.dataset import load_dataset
    from quantum.models.ensemble import Row

    data = load_dataset(SAMPLE, ("ETHUSDT",))
    picks = np.linspace(0, len(data) - 1, count).astype(int)
    windows = data.windows(picks)
    return [Row({n: float(data.features[i, j]) for j, n in enumerate(FEATURE_NAMES)},
                windows[k]) for k, i in enumerate(picks)]


def _ensemble(quick: bool, workdir: Path) -> tuple[Any, str]:
    from quantum.ml.registry import ModelRefused, ModelRegistry

    registry = ModelRegistry(ROOT / "models")
    try:
        ensemble = registry.load()
        if len(ensemble.members) == 4:
            return ensemble, "models/ active version"
    except ModelRefused:
        pass
    from quantum.ml.dataset import load_dataset
    from quantum.ml.members import MemberConfig
    from quantum.ml.train import TrainConfig, train

    data = load_dataset(SAMPLE, ("BTCUSDT", "ETHUSDT"))
    config = TrainConfig(folds=0, member=MemberConfig(tree_rounds=100, neural_steps=20))
    local = ModelRegistry(workdir)
    version, _ = train(data, local, config)
    return local.load(version), "trained for the benchmark (small)"


def inference(quick: bool) -> dict[str, Any]:
    from quantum.models.ensemble import ServedEnsemble

    with tempfile.TemporaryDirectory() as tmp:
        ensemble, origin = _ensemble(quick, Path(tmp))
        served = ServedEnsemble(ensemble)
        rows = _rows(200 if quick else 1000)
        for row in rows[:20]:
            served.predict_batch([row])
        single = []
        for row in rows:
            started = time.perf_counter()
            served.predict_batch([row])
            single.append(time.perf_counter() - started)
        batch = 50
        started = time.perf_counter()
        for index in range(0, len(rows), batch):
            served.predict_batch(rows[index:index + batch])
        batched_seconds = time.perf_counter() - started
    latencies = np.asarray(single) * 1000
    return {
        "model": origin, "members": list(ensemble.loaded), "events": len(rows),
        "per_event_ms": {"p50": float(np.percentile(latencies, 50)),
                         "p99": float(np.percentile(latencies, 99)),
                         "max": float(latencies.max())},
        "p99_under_20ms": bool(np.percentile(latencies, 99) < 20.0),
        "batched_events_per_second": len(rows) / batched_seconds, "batch_size": batch,
    }


def retrain(quick: bool) -> dict[str, Any]:
    from quantum.ml.dataset import load_dataset
    from quantum.ml.members import MemberConfig
    from quantum.ml.registry import ModelRegistry
    from quantum.ml.train import TrainConfig, train

    if quick or not SHARED.is_dir():
        data = load_dataset(SAMPLE, ("BTCUSDT", "ETHUSDT"))
        config = TrainConfig(folds=0, member=MemberConfig(tree_rounds=100, neural_steps=30))
        source = "data/sample (2 symbols), 100 rounds, 30 steps"
    else:
        data = load_dataset(SHARED, SYMBOLS)
        config = TrainConfig(folds=0)
        source = f"{SHARED} ({', '.join(SYMBOLS)}), default sizes"
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        _, manifest = train(data, ModelRegistry(Path(tmp)), config)
        seconds = time.perf_counter() - started
    return {"data": source, "rows": len(data), "seconds": seconds,
            "member_seconds": manifest["timing"]["member_seconds"],
            "under_10_minutes": seconds < 600}


def run(quick: bool) -> dict[str, Any]:
    return {"inference": inference(quick), "retrain": retrain(quick)}
