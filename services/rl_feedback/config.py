"""rl-feedback settings."""

from __future__ import annotations

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """The fleet settings only: the reward's constants are
    :class:`quantum.rl.reward.RewardConfig`'s documented defaults, the same the training
    environment uses, so the rewards of live trades and of training agree."""
