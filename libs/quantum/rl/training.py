"""PPO training (stable-baselines3), walk-forward evaluation against fixed sizing, storage.

Evaluation is out of sample and honest in the same way as the ensemble's
(:mod:`quantum.ml.walkforward`): the opportunities are cut by entry time into
``folds + 1`` consecutive blocks; fold *k* trains on blocks ``0…k`` and is scored on block
``k + 1``, with an embargo — a training trade still open when the test block starts is
dropped, so no outcome the test period produced reaches training. In each test block the
policy (deterministic action) and fixed sizing (1.0×, the bridge without RL) size the very
same trades from the same starting equity; both are reported side by side, and the policy
counts as better only if it beats fixed sizing on return *and* on Sharpe ratio summed over
the folds. The figures are what they are: if the policy does not beat fixed sizing the
report says so and the policy is not promoted.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from quantum.rl.environment import EnvironmentConfig, SizingEnv
from quantum.rl.observation import OBSERVATION_FIELDS, OBSERVATION_SCHEMA
from quantum.rl.opportunities import Opportunities
from quantum.rl.policy import SB3_MODEL, SHAPE, WEIGHTS, PolicyRegistry, export_actor

ActionFunction = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class TrainingConfig:
    """PPO and evaluation settings.

    Attributes:
        timesteps: environment steps of PPO training per fit.
        seed: seeds PPO, the environment and torch (runs are reproducible on one machine).
        n_steps: steps collected per PPO update.
        batch_size: minibatch size of the PPO update.
        epochs: passes over each rollout.
        learning_rate: Adam's step size.
        hidden: widths of the actor's and critic's hidden layers.
        threads: torch threads used while training (1: on a busy 2-core host a second
            thread made PPO 8x slower, see docs/RL.md).
        folds: walk-forward folds (0: no out-of-sample evaluation, never promotable).
        environment: the environment's constants.
    """

    timesteps: int = 30_000
    seed: int = 7
    n_steps: int = 512
    batch_size: int = 64
    epochs: int = 10
    learning_rate: float = 3e-4
    hidden: tuple[int, ...] = (64, 64)
    threads: int = 1
    folds: int = 3
    environment: EnvironmentConfig = field(default_factory=EnvironmentConfig)


def fit(opportunities: Opportunities, config: TrainingConfig) -> Any:
    """A PPO model trained on ``opportunities``."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    environment = SizingEnv(opportunities, config.environment)
    model = PPO(
        "MlpPolicy", environment, n_steps=config.n_steps, batch_size=config.batch_size,
        n_epochs=config.epochs, learning_rate=config.learning_rate, seed=config.seed,
        device="cpu", verbose=0,
        policy_kwargs={"net_arch": {"pi": list(config.hidden), "vf": list(config.hidden)},
                       "activation_fn": torch.nn.Tanh},
    )
    model.learn(total_timesteps=config.timesteps)
    return model


def run_sizing(opportunities: Opportunities, environment: EnvironmentConfig,
               act: ActionFunction) -> dict[str, Any]:
    """Size every opportunity with ``act`` (observation → action) over the whole table."""
    env = SizingEnv(opportunities, replace(environment, episode_length=0, ruin_fraction=0.0))
    observation, _ = env.reset(seed=0)
    total_reward, done = 0.0, False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(
            np.asarray([act(observation)], dtype=np.float32))
        total_reward += reward
        done = terminated or truncated
    return _figures(env, opportunities, total_reward)


def _figures(env: SizingEnv, table: Opportunities, total_reward: float) -> dict[str, Any]:
    initial = env.config.initial_equity
    pnl = np.asarray([h["pnl"] for h in env.history])
    equity_at_entry = np.asarray([h["equity_at_entry"] for h in env.history])
    returns = pnl / np.maximum(equity_at_entry, 1e-9)
    order = np.argsort(table.exit_ts[: pnl.size], kind="stable")
    curve = initial + np.cumsum(pnl[order])
    peaks = np.maximum.accumulate(np.concatenate([[initial], curve]))[1:]
    drawdown = float(np.max((peaks - curve) / peaks)) if curve.size else 0.0
    deviation = float(returns.std()) if returns.size > 1 else 0.0
    multipliers = np.asarray([h["multiplier"] for h in env.history])
    return {
        "trades": int(pnl.size),
        "net_pnl": float(pnl.sum()),
        "return": float(pnl.sum() / initial),
        "sharpe_per_trade": float(returns.mean() / deviation) if deviation > 0 else 0.0,
        "max_drawdown": drawdown,
        "mean_multiplier": float(multipliers.mean()) if multipliers.size else 1.0,
        "total_reward": float(total_reward),
    }


def fixed_action(environment: EnvironmentConfig, multiplier: float = 1.0) -> ActionFunction:
    """The action that gives ``multiplier`` (fixed sizing; 1.0× is the bridge without RL)."""
    span = environment.max_multiplier - environment.min_multiplier
    action = 2.0 * (multiplier - environment.min_multiplier) / span - 1.0
    return lambda _observation: action


def policy_action(model: Any) -> ActionFunction:
    """The exported actor's deterministic action (what the bridge serves)."""
    network, _ = export_actor(model)
    import torch

    def act(observation: np.ndarray) -> float:
        with torch.inference_mode():
            value = network(torch.from_numpy(observation.reshape(1, -1)))
        return float(value.clamp(-1.0, 1.0).item())

    return act


def walk_forward(opportunities: Opportunities, config: TrainingConfig) -> dict[str, Any]:
    """Out-of-sample comparison with fixed sizing, fold by fold (see the module doc)."""
    if config.folds < 1:
        return {"folds": [], "beats_fixed": False,
                "verdict": "not evaluated (0 folds): no out-of-sample evidence"}
    blocks = np.array_split(np.arange(len(opportunities)), config.folds + 1)
    folds = []
    for k in range(config.folds):
        test_rows = blocks[k + 1]
        if test_rows.size == 0 or blocks[k].size == 0:
            continue
        test_start = int(opportunities.entry_ts[test_rows[0]])
        train_rows = np.concatenate(blocks[: k + 1])
        train_rows = train_rows[opportunities.exit_ts[train_rows] < test_start]  # embargo
        if train_rows.size == 0:
            continue
        train, test = opportunities.take(train_rows), opportunities.take(test_rows)
        model = fit(train, replace(config, seed=config.seed + k))
        policy = run_sizing(test, config.environment, policy_action(model))
        fixed = run_sizing(test, config.environment, fixed_action(config.environment))
        folds.append({
            "fold": k, "train_trades": int(train_rows.size), "test_trades": int(test_rows.size),
            "test_from": _iso(test_start), "test_to": _iso(int(opportunities.exit_ts[
                test_rows].max())),
            "policy": policy, "fixed": fixed,
            "return_difference": policy["return"] - fixed["return"],
            "sharpe_difference": policy["sharpe_per_trade"] - fixed["sharpe_per_trade"],
        })
    return _verdict(folds)


def _verdict(folds: list[dict[str, Any]]) -> dict[str, Any]:
    if not folds:
        return {"folds": [], "beats_fixed": False, "verdict": "too few trades for any fold"}
    return_difference = sum(f["return_difference"] for f in folds)
    sharpe_difference = sum(f["sharpe_difference"] for f in folds)
    beats = return_difference > 0 and sharpe_difference > 0
    wins = sum(1 for f in folds if f["return_difference"] > 0)
    verdict = (f"the policy beat fixed 1.0x sizing out of sample: return "
               f"{return_difference:+.4%}, per-trade Sharpe {sharpe_difference:+.4f} summed "
               f"over {len(folds)} folds ({wins} won on return)") if beats else (
               f"the policy did NOT beat fixed 1.0x sizing out of sample: return "
               f"{return_difference:+.4%}, per-trade Sharpe {sharpe_difference:+.4f} summed "
               f"over {len(folds)} folds ({wins} won on return)")
    return {"folds": folds, "beats_fixed": beats, "return_difference": return_difference,
            "sharpe_difference": sharpe_difference, "verdict": verdict}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def train_and_register(opportunities: Opportunities, registry: PolicyRegistry,
                       config: TrainingConfig, *, sources: dict[str, Any],
                       version: str | None = None) -> tuple[str, dict[str, Any]]:
    """Walk-forward evaluation, then a fit on everything, stored as a new version."""
    import stable_baselines3
    import torch

    from quantum.ml.registry import new_version

    if len(opportunities) == 0:
        raise ValueError("no trade opportunities to train on")
    started = time.perf_counter()
    evaluation = walk_forward(opportunities, config)
    model = fit(opportunities, config)
    network, shape = export_actor(model)
    env = config.environment
    shape = {**shape, "min_multiplier": env.min_multiplier, "max_multiplier": env.max_multiplier}
    first, last = opportunities.time_range
    metadata = {
        "kind": "rl-sizing-policy",
        "algorithm": "PPO (stable-baselines3)",
        "observation_schema": OBSERVATION_SCHEMA,
        "observation_fields": list(OBSERVATION_FIELDS),
        "data_from": _iso(first), "data_to": _iso(last),
        "trades": len(opportunities),
        "sources": sources,
        "training": {k: v for k, v in asdict(config).items() if k != "environment"},
        "environment": {**{k: v for k, v in asdict(env).items() if k != "sizing"},
                        "sizing": env.sizing.model_dump()},
        "evaluation": evaluation,
        "in_sample": run_sizing(opportunities, env, policy_action(model)),
        "seconds": round(time.perf_counter() - started, 1),
        "versions": {"stable_baselines3": stable_baselines3.__version__,
                     "torch": torch.__version__},
    }
    chosen = version or new_version()

    def write(directory: Path) -> None:
        import json

        torch.save(network.state_dict(), directory / WEIGHTS)
        (directory / SHAPE).write_text(json.dumps(shape, indent=1, sort_keys=True) + "\n")
        with tempfile.TemporaryDirectory() as scratch:
            model.save(Path(scratch) / SB3_MODEL)
            (directory / SB3_MODEL).write_bytes((Path(scratch) / SB3_MODEL).read_bytes())

    registry.save(chosen, write, _finite(metadata))
    return chosen, metadata


def _finite(value: Any) -> Any:
    """JSON-safe: NaN or infinite floats become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
