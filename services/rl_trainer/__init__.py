"""rl-trainer: retrains the PPO sizing policy and promotes it when it beats fixed sizing."""
