"""The position-sizing environment (gymnasium).

One step is one trade opportunity (:mod:`quantum.rl.opportunities`), in time order. The
observation is :mod:`quantum.rl.observation`'s: the opportunity's market part and the
account as it stands at that entry — only trades that have *closed* by then count in the
equity, the others are open positions and exposure, so nothing from the future leaks in.
The action, one number in [−1, 1], maps linearly to a size multiplier in
``[min_multiplier, max_multiplier]`` (default 0.5×–1.5×) that scales the bridge's sizing
(:func:`quantum.risk.sizing.size_position`, the same function, with the policy store's
defaults, including its notional bounds). The reward is :class:`quantum.rl.reward.
RewardTracker`'s. An episode is ``episode_length`` consecutive opportunities from a random
start (the whole table when ``episode_length`` is 0); it ends early (terminated) if equity
falls below ``ruin_fraction`` of the start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from quantum.risk.policy import SizingPolicy
from quantum.risk.sizing import size_position
from quantum.rl.observation import (
    CLIP,
    MAX_EXPOSURE_SCALE,
    OBSERVATION_SIZE,
    Account,
    action_to_multiplier,
    observation,
)
from quantum.rl.opportunities import Opportunities
from quantum.rl.reward import RewardConfig, RewardTracker


@dataclass(frozen=True)
class EnvironmentConfig:
    """The environment's constants.

    Attributes:
        min_multiplier: the size multiplier at action −1.
        max_multiplier: the size multiplier at action +1.
        initial_equity: equity at the start of an episode (USD).
        episode_length: opportunities per episode (0: all of them, from the first).
        ruin_fraction: the episode terminates below this share of the initial equity.
        sizing: the sizing policy (risk per trade, notional bounds, minimum confidence).
        reward: the reward's constants.
    """

    min_multiplier: float = 0.5
    max_multiplier: float = 1.5
    initial_equity: float = 10_000.0
    episode_length: int = 256
    ruin_fraction: float = 0.5
    sizing: SizingPolicy = field(default_factory=SizingPolicy)
    reward: RewardConfig = field(default_factory=RewardConfig)


@dataclass
class _OpenTrade:
    exit_ts: int
    notional: float
    pnl: float


class SizingEnv(gym.Env[np.ndarray, np.ndarray]):
    """Position sizing over a table of trade opportunities."""

    metadata = {"render_modes": []}

    def __init__(self, opportunities: Opportunities,
                 config: EnvironmentConfig | None = None) -> None:
        if len(opportunities) == 0:
            raise ValueError("the sizing environment needs at least one trade opportunity")
        self.table = opportunities
        self.config = config or EnvironmentConfig()
        self.observation_space = gym.spaces.Box(-CLIP, CLIP, (OBSERVATION_SIZE,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._reset_state(0)

    def _reset_state(self, start: int) -> None:
        length = self.config.episode_length or len(self.table)
        self.start = start
        self.stop = min(len(self.table), start + length)
        self.cursor = start
        self.equity = self.config.initial_equity
        self.peak = self.equity
        self.open: list[_OpenTrade] = []
        self.tracker = RewardTracker(self.config.reward)
        self.history: list[dict[str, float]] = []

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        length = self.config.episode_length
        if length and len(self.table) > length:
            start = int(self.np_random.integers(0, len(self.table) - length + 1))
        else:
            start = 0
        self._reset_state(start)
        self._settle(int(self.table.entry_ts[self.cursor]))
        return self._observe(), {"start": start}

    def _settle(self, now: int) -> None:
        """Book every open trade that has closed by ``now``."""
        still_open = []
        for trade in self.open:
            if trade.exit_ts <= now:
                self.equity += trade.pnl
                self.peak = max(self.peak, self.equity)
            else:
                still_open.append(trade)
        self.open = still_open

    def account(self) -> Account:
        return Account(equity=self.equity, peak_equity=self.peak,
                       open_positions=len(self.open),
                       gross_exposure=sum(t.notional for t in self.open))

    def _observe(self) -> np.ndarray:
        return observation(self.table.market[self.cursor], self.account())

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        c, t, row = self.config, self.table, self.cursor
        multiplier = action_to_multiplier(float(np.asarray(action).reshape(-1)[0]),
                                          c.min_multiplier, c.max_multiplier)
        account = self.account()
        size = size_position(
            equity=max(self.equity, 1e-9), price=float(t.price[row]),
            stop_distance=float(t.stop_distance[row]), confidence=float(t.confidence[row]),
            min_confidence=c.sizing.min_confidence, risk_per_trade=c.sizing.risk_per_trade,
            min_notional=c.sizing.min_notional_usd, max_notional=c.sizing.max_notional_usd,
            rl_multiplier=multiplier)
        notional = size.notional if size is not None else 0.0
        pnl = notional * float(t.net_return[row])
        exposure_share = (account.gross_exposure + notional) / max(self.equity, 1e-9) / (
            MAX_EXPOSURE_SCALE)
        reward = self.tracker.reward(pnl, self.equity, account.drawdown, exposure_share)
        self.open.append(_OpenTrade(int(t.exit_ts[row]), notional, pnl))
        self.history.append({"multiplier": multiplier, "pnl": pnl, "notional": notional,
                             "equity_at_entry": self.equity})
        self.cursor += 1
        at_end = self.cursor >= self.stop
        if at_end:
            self._settle(np.iinfo(np.int64).max)
            self.cursor = self.stop - 1  # the observation returned at the end is not acted on
        else:
            self._settle(int(t.entry_ts[self.cursor]))
        ruined = self.equity < c.ruin_fraction * c.initial_equity
        terminated = ruined or (at_end and self.stop == len(t))
        truncated = at_end and not terminated
        info = {"multiplier": multiplier, "pnl": pnl, "equity": self.equity}
        return self._observe(), float(reward), bool(terminated), bool(truncated), info
