"""rl-feedback: closed trades → ``rl_rewards`` for the RL sizer."""
