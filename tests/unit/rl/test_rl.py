"""The RL sizer's parts: environment, training, the served network, bounds (issue 7)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from gymnasium.utils.env_checker import check_env

from quantum.rl.environment import EnvironmentConfig, SizingEnv
from quantum.rl.observation import (
    OBSERVATION_SIZE,
    action_to_multiplier,
    clip_multiplier,
)
from quantum.rl.opportunities import Opportunities, from_data
from quantum.rl.policy import WEIGHTS, PolicyRefused, PolicyRegistry
from quantum.rl.training import TrainingConfig, train_and_register

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"
START = int(datetime(2025, 9, 1, tzinfo=UTC).timestamp() * 1000)
END = int(datetime(2025, 9, 15, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def slice_() -> Opportunities:
    """Two weeks of real BTC bars: the baseline's trades and their outcomes."""
    table = from_data(SAMPLE, ("BTCUSDT",), start_ms=START, end_ms=END)
    assert len(table) > 50
    return table


@pytest.fixture(scope="module")
def trained(slice_: Opportunities, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[PolicyRegistry, str]:
    registry = PolicyRegistry(tmp_path_factory.mktemp("rl"))
    config = TrainingConfig(timesteps=256, n_steps=128, batch_size=64, epochs=2, folds=1,
                            environment=EnvironmentConfig(episode_length=64))
    version, _ = train_and_register(slice_, registry, config, sources={"test": True},
                                    version="v-test")
    return registry, version


def test_environment_passes_gymnasium_check_env(slice_: Opportunities) -> None:
    check_env(SizingEnv(slice_, EnvironmentConfig(episode_length=32)), skip_render_check=True)


def test_environment_observation_has_no_future_equity(slice_: Opportunities) -> None:
    env = SizingEnv(slice_, EnvironmentConfig(episode_length=0))
    env.reset(seed=0)
    for _ in range(20):
        env.step(np.asarray([1.0], dtype=np.float32))
        now = int(slice_.entry_ts[env.cursor])
        assert all(trade.exit_ts > now for trade in env.open)


def test_actions_map_into_the_bounds() -> None:
    assert action_to_multiplier(-1.0, 0.5, 1.5) == 0.5
    assert action_to_multiplier(0.0, 0.5, 1.5) == 1.0
    assert action_to_multiplier(7.0, 0.5, 1.5) == 1.5
    assert clip_multiplier(9.0, 0.2, 3.0) == 1.5  # the hard bounds win over a policy's own
    assert clip_multiplier(float("nan"), 0.5, 1.5) == 1.0


def test_short_training_produces_a_loadable_policy_with_hashes(
        trained: tuple[PolicyRegistry, str]) -> None:
    registry, version = trained
    manifest = registry.manifest(version)
    assert manifest["kind"] == "rl-sizing-policy" and set(manifest["files"]) >= {
        "policy.pt", "policy.json", "ppo.zip"}
    assert "verdict" in manifest["evaluation"]
    policy = registry.load_policy(version)
    multiplier = policy.multiplier(np.zeros(OBSERVATION_SIZE, dtype=np.float32))
    assert 0.5 <= multiplier <= 1.5


def test_served_network_agrees_with_sb3_predict(trained: tuple[PolicyRegistry, str],
                                                slice_: Opportunities) -> None:
    from stable_baselines3 import PPO

    registry, version = trained
    model = PPO.load(registry.root / version / "ppo.zip", device="cpu")
    policy = registry.load_policy(version)
    env = SizingEnv(slice_, EnvironmentConfig(episode_length=0))
    observation, _ = env.reset(seed=0)
    rng = np.random.default_rng(3)
    for _ in range(50):
        expected, _ = model.predict(observation, deterministic=True)
        assert policy.action(observation) == pytest.approx(float(expected[0]), abs=1e-5)
        observation, *_ = env.step(rng.uniform(-1, 1, 1).astype(np.float32))


def test_corrupt_or_missing_policy_is_refused_with_the_reason(
        trained: tuple[PolicyRegistry, str], tmp_path: Path) -> None:
    with pytest.raises(PolicyRefused, match="no promoted sizing policy"):
        PolicyRegistry(tmp_path / "empty").load_policy()
    registry, version = trained
    copy = PolicyRegistry(tmp_path / "copy")
    import shutil

    shutil.copytree(registry.root / version, copy.root / version)
    (copy.root / version / WEIGHTS).write_bytes(b"not a torch file")
    with pytest.raises(PolicyRefused, match="sha256"):
        copy.load_policy(version)


def test_walk_forward_needs_folds_to_promote(slice_: Opportunities, tmp_path: Path) -> None:
    from quantum.rl.training import walk_forward

    result = walk_forward(slice_, replace(TrainingConfig(), folds=0))
    assert result["beats_fixed"] is False and "no out-of-sample" in result["verdict"]
