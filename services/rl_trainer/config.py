"""rl-trainer settings."""

from __future__ import annotations

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    rl_policy_dir: the sizing-policy registry (shared with the intent-bridge).
    training_data_dir: directory of ``<SYMBOL>-5m.csv.gz`` files each run simulates.
    training_symbols: comma list of symbols; empty means all in the directory.
    training_lookback_days: days of the newest history each run uses.
    retrain_interval_s: seconds between scheduled runs (default one day).
    retrain_min_rewards: a run also starts once this many new ``rl_rewards`` arrived.
    retrain_on_start: start a run as soon as the service starts.
    training_timesteps: PPO environment steps per fit.
    training_folds: walk-forward folds each run is evaluated on (promotion needs them).
    training_seed: seeds PPO and the environment.
    """

    rl_policy_dir: str = "models/rl"
    training_data_dir: str = "data/sample"
    training_symbols: str = ""
    training_lookback_days: float = Field(60.0, gt=0)
    retrain_interval_s: float = Field(24 * 3600.0, gt=0)
    retrain_min_rewards: int = Field(200, ge=1)
    retrain_on_start: bool = False
    training_timesteps: int = Field(30_000, ge=64)
    training_folds: int = Field(3, ge=1)
    training_seed: int = 7
