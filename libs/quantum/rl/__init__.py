"""RL position sizing (issue 7): a PPO policy that suggests a size multiplier per plan.

The pieces, lowest first:

* :mod:`quantum.rl.observation` — the one definition of what the policy sees, shared by the
  training environment and the intent-bridge, and the action → multiplier mapping;
* :mod:`quantum.rl.reward` — the reward, shared by the environment and rl-feedback;
* :mod:`quantum.rl.opportunities` — trade opportunities from data files (baseline signals,
  exits simulated with the exit-brain's own code) and from the fleet's ``rl_rewards``;
* :mod:`quantum.rl.environment` — the gymnasium environment;
* :mod:`quantum.rl.training` — PPO (stable-baselines3), walk-forward evaluation against fixed
  sizing, storage in the policy registry;
* :mod:`quantum.rl.policy` — the registry of policies and the plain torch network served;
* :mod:`quantum.rl.agent` — the sizing agent the intent-bridge runs (shadow or active).

Heavy imports (gymnasium, stable-baselines3, torch) stay inside the modules that need them,
so importing :mod:`quantum.rl.observation` from the bridge costs nothing.
"""
