"""RL sizing benchmarks: PPO training throughput and the sizing agent's suggestion latency.

* ``training``: environment steps per second of stable-baselines3 PPO on the sizing
  environment (real opportunities from the bundled sample), with 1 and with 2 torch
  threads (the host has 2 cores; both figures are reported because on a busy host the
  second thread can cost more than it gives). Includes the PPO updates, not only stepping.
* ``suggestion``: the served actor's forward pass for one observation (what the bridge pays
  per plan), p50/p99 in microseconds; beside it SB3's ``predict`` for the same observations,
  the overhead the agent avoids.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


def _opportunities(quick: bool) -> Any:
    from quantum.rl.opportunities import from_data

    start = int(datetime(2025, 9, 1, tzinfo=UTC).timestamp() * 1000)
    symbols = ("BTCUSDT",) if quick else ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    return from_data(SAMPLE, symbols, start_ms=start)


def run(quick: bool) -> dict[str, Any]:
    import torch

    from quantum.rl.environment import EnvironmentConfig, SizingEnv
    from quantum.rl.policy import PolicyRegistry
    from quantum.rl.training import TrainingConfig, fit, train_and_register

    table = _opportunities(quick)
    steps = 1024 if quick else 16_384
    config = TrainingConfig(timesteps=steps, folds=0)
    fit(table, replace(config, timesteps=128, n_steps=128))  # imports and first-call costs
    training: dict[str, float] = {}
    for threads in (1, 2):
        started = time.perf_counter()
        fit(table, replace(config, threads=threads))
        training[f"steps_per_second_{threads}_threads"] = round(
            steps / (time.perf_counter() - started), 1)
    with tempfile.TemporaryDirectory() as scratch:
        registry = PolicyRegistry(Path(scratch))
        version, _ = train_and_register(table, registry, replace(config, timesteps=512),
                                        sources={"bench": True}, version="bench")
        policy = registry.load_policy(version)
        from stable_baselines3 import PPO

        model = PPO.load(Path(scratch) / version / "ppo.zip", device="cpu")
        torch.set_num_threads(1)
        env = SizingEnv(table, EnvironmentConfig(episode_length=0))
        observation, _ = env.reset(seed=0)
        observations = []
        rng = np.random.default_rng(0)
        for _ in range(1000 if quick else 5000):
            observations.append(observation)
            observation, _, done, truncated, _ = env.step(rng.uniform(-1, 1, 1).astype(
                np.float32))
            if done or truncated:
                observation, _ = env.reset(seed=1)
        served = _latencies(policy.multiplier, observations)
        predicted = _latencies(lambda o: model.predict(o, deterministic=True), observations[:500])
    return {
        "opportunities": len(table), "timesteps": steps, **training,
        "suggestion_p50_us": served[0], "suggestion_p99_us": served[1],
        "sb3_predict_p50_us": predicted[0], "sb3_predict_p99_us": predicted[1],
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def _latencies(call: Any, observations: list[np.ndarray]) -> tuple[float, float]:
    for observation in observations[:50]:
        call(observation)
    samples = []
    for observation in observations:
        started = time.perf_counter()
        call(observation)
        samples.append(time.perf_counter() - started)
    values = np.asarray(samples) * 1e6
    return round(float(np.percentile(values, 50)), 1), round(float(np.percentile(values, 99)), 1)


if __name__ == "__main__":
    print(run(quick=True))
