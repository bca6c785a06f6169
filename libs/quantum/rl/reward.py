"""The reward of one sized trade, shared by the environment and rl-feedback.

    r          = net PnL / equity at entry                   (return on equity, after fees)
    ρ          = min(ρ_max, k_dd · drawdown + k_exp · exposure_share)
    pnl_term   = r · (1 − ρ)  when r ≥ 0,   r · (1 + ρ)  when r < 0
    sharpe     = β · (S(last W returns with this one) − S(last W returns before it))
    reward     = scale · (pnl_term + sharpe)

``drawdown`` is the fraction below the equity peak at entry; ``exposure_share`` the gross
exposure after the entry as a share of the exposure cap (2 × equity). The risk penalty ρ
shrinks a gain and enlarges a loss — applied as a plain factor it would make a loss in a
drawdown *cheaper*, which would teach the policy the opposite of what it is for. ``S`` is the
mean over the standard deviation of the last ``W`` trade returns (0 with fewer than
``min_trades``); its change rewards a trade that improves the risk-adjusted record (the
differential-Sharpe idea), which plain PnL does not see. ``scale`` turns fractions of equity
into percent, the order of magnitude PPO's default hyper-parameters expect.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class RewardConfig:
    """The reward's constants (defaults are the documented ones).

    Attributes:
        drawdown_penalty: k_dd, risk penalty per unit of drawdown (5: 10 % drawdown → 0.5).
        exposure_penalty: k_exp, risk penalty per unit of the exposure cap used.
        max_penalty: ρ_max, the risk penalty's ceiling.
        sharpe_weight: β, weight of the change in the rolling Sharpe ratio.
        sharpe_window: W, trades in the rolling Sharpe ratio.
        min_trades: trades before the Sharpe term counts.
        scale: multiplies the whole reward (100: percent of equity).
    """

    drawdown_penalty: float = 5.0
    exposure_penalty: float = 0.25
    max_penalty: float = 0.9
    sharpe_weight: float = 0.005
    sharpe_window: int = 20
    min_trades: int = 5
    scale: float = 100.0


def rolling_sharpe(returns: Iterable[float], min_trades: int) -> float:
    values = list(returns)
    if len(values) < min_trades:
        return 0.0
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    deviation = math.sqrt(variance)
    return mean / deviation if deviation > 1e-12 else 0.0


class RewardTracker:
    """Rewards for a sequence of trades: keeps the recent returns the Sharpe term needs."""

    def __init__(self, config: RewardConfig | None = None,
                 recent: Iterable[float] = ()) -> None:
        self.config = config or RewardConfig()
        self.recent: deque[float] = deque(recent, maxlen=self.config.sharpe_window)

    def risk_penalty(self, drawdown: float, exposure_share: float) -> float:
        c = self.config
        raw = c.drawdown_penalty * max(0.0, drawdown) + c.exposure_penalty * max(
            0.0, exposure_share)
        return min(c.max_penalty, raw)

    def reward(self, net_pnl: float, equity: float, drawdown: float,
               exposure_share: float) -> float:
        """The reward of a trade that made ``net_pnl``; records its return for the next."""
        c = self.config
        r = net_pnl / equity if equity > 0 else 0.0
        penalty = self.risk_penalty(drawdown, exposure_share)
        pnl_term = r * (1.0 - penalty) if r >= 0 else r * (1.0 + penalty)
        before = rolling_sharpe(self.recent, c.min_trades)
        self.recent.append(r)
        after = rolling_sharpe(self.recent, c.min_trades)
        return c.scale * (pnl_term + c.sharpe_weight * (after - before))
