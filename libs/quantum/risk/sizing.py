"""Position sizing: risk budget × confidence multiplier × RL suggestion, within bounds.

    budget     = equity × risk_per_trade × m_conf × m_rl
    m_conf     = 0.5 + (confidence − min_conf) / (1 − min_conf)   clipped to [0.5, 1.5]
    quantity   = budget / stop_distance          (losing 1R costs the budget)
    notional   = quantity × price, clipped to [min_notional, max_notional]

``m_rl`` is 1.0 until an RL sizing policy is enabled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    quantity: float
    notional: float
    multiplier: float
    budget: float


def confidence_multiplier(confidence: float, min_confidence: float) -> float:
    span = max(1e-9, 1.0 - min_confidence)
    return min(1.5, max(0.5, 0.5 + (confidence - min_confidence) / span))


def size_position(
    *,
    equity: float,
    price: float,
    stop_distance: float,
    confidence: float,
    min_confidence: float,
    risk_per_trade: float,
    min_notional: float,
    max_notional: float,
    rl_multiplier: float = 1.0,
) -> Size | None:
    """None when no valid size exists (no equity, zero stop distance, bad inputs)."""
    values = (equity, price, stop_distance, confidence, rl_multiplier)
    if not all(math.isfinite(v) for v in values) or equity <= 0 or price <= 0 or stop_distance <= 0:
        return None
    multiplier = confidence_multiplier(confidence, min_confidence) * rl_multiplier
    budget = equity * risk_per_trade * multiplier
    quantity = budget / stop_distance
    notional = min(max_notional, max(min_notional, quantity * price))
    return Size(quantity=notional / price, notional=notional, multiplier=multiplier, budget=budget)
