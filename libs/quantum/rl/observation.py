"""What the sizing policy sees, and how its action becomes a size multiplier.

One definition serves training (:mod:`quantum.rl.environment`) and serving (the sizing agent
in the intent-bridge), so the policy is never fed numbers it was not trained on. Every
dimension is scaled to roughly unit range and clipped to ``[-CLIP, CLIP]``; features that
have a direction are signed by the trade's side, so "with the trend" reads the same for a
LONG and a SHORT.

==  ======================  ==================================================================
 #  name                    meaning (source)
==  ======================  ==================================================================
 0  side                    +1 LONG, −1 SHORT (intent)
 1  confidence_excess       (confidence − 0.5) × 2: 0 at a coin toss, 1 at certainty (intent)
 2  volatility              atr_pct_14 × 100: ATR as a percentage of price (features)
 3  trend_alignment         side × ema_ratio_48 × 100: distance from the 48-bar EMA, in the
                            trade's favour (features)
 4  momentum_z              side × roc_12 / (rv_48 · √12) / 3: the 12-bar move in units of
                            its expected noise, the baseline's z (features)
 5  rsi_alignment           side × (rsi_14 − 50) / 50 (features)
 6  trend_strength          adx_14 / 50 (features)
 7  volatility_regime       rv_ratio_12_48 − 1: short against long realised volatility
 8  band_width              bb_width_20 × 100: Bollinger band width in percent of price
 9  volume_ratio            ln(vol_ratio_12): volume against its 12-bar mean
10  drawdown                (peak equity − equity) / peak equity × 10 (account)
11  open_positions          open positions / 20, the policy's concurrent-position cap (account)
12  exposure                gross exposure / equity / 2, the gross exposure cap (account)
==  ======================  ==================================================================
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

OBSERVATION_FIELDS: tuple[str, ...] = (
    "side", "confidence_excess", "volatility", "trend_alignment", "momentum_z",
    "rsi_alignment", "trend_strength", "volatility_regime", "band_width", "volume_ratio",
    "drawdown", "open_positions", "exposure",
)
MARKET_FIELDS = 10  # the first ten are market and signal; the last three the account
OBSERVATION_SIZE = len(OBSERVATION_FIELDS)
OBSERVATION_SCHEMA = hashlib.sha256(",".join(OBSERVATION_FIELDS).encode()).hexdigest()[:16]
REQUIRED_FEATURES: tuple[str, ...] = (
    "atr_pct_14", "ema_ratio_48", "roc_12", "rv_48", "rsi_14", "adx_14", "rv_ratio_12_48",
    "bb_width_20", "vol_ratio_12",
)
CLIP = 5.0

# Size multiplier bounds. The policy's own bounds (stored with it) must lie inside these hard
# limits; the agent clips every suggestion to both.
HARD_MIN_MULTIPLIER = 0.5
HARD_MAX_MULTIPLIER = 1.5
MAX_CONCURRENT_SCALE = 20.0
MAX_EXPOSURE_SCALE = 2.0


@dataclass(frozen=True, slots=True)
class Account:
    """The account state the policy sees at an entry."""

    equity: float
    peak_equity: float
    open_positions: int
    gross_exposure: float

    @property
    def drawdown(self) -> float:
        if self.peak_equity <= 0 or self.equity >= self.peak_equity:
            return 0.0
        return (self.peak_equity - self.equity) / self.peak_equity


class MissingFeatures(ValueError):
    """The feature vector lacks a feature the observation needs (the message names it)."""


def market_part(side: str, confidence: float, features: Mapping[str, float]) -> np.ndarray:
    """Dimensions 0–9 from the signal and the unified features of its bar."""
    missing = [name for name in REQUIRED_FEATURES if name not in features]
    if missing:
        raise MissingFeatures(f"features missing for the RL observation: {', '.join(missing)}")
    sign = 1.0 if side == "LONG" else -1.0
    noise = features["rv_48"] * math.sqrt(12.0)
    momentum = features["roc_12"] / noise / 3.0 if noise > 0 else 0.0
    volume = features["vol_ratio_12"]
    values = (
        sign,
        (confidence - 0.5) * 2.0,
        features["atr_pct_14"] * 100.0,
        sign * features["ema_ratio_48"] * 100.0,
        sign * momentum,
        sign * (features["rsi_14"] - 50.0) / 50.0,
        features["adx_14"] / 50.0,
        features["rv_ratio_12_48"] - 1.0,
        features["bb_width_20"] * 100.0,
        math.log(volume) if volume > 0 else -CLIP,
    )
    return _clip(np.asarray(values, dtype=np.float32))


def account_part(account: Account) -> np.ndarray:
    """Dimensions 10–12 from the account."""
    equity = max(account.equity, 1e-9)
    values = (
        account.drawdown * 10.0,
        account.open_positions / MAX_CONCURRENT_SCALE,
        account.gross_exposure / equity / MAX_EXPOSURE_SCALE,
    )
    return _clip(np.asarray(values, dtype=np.float32))


def observation(market: np.ndarray, account: Account) -> np.ndarray:
    """The full observation: a market part (from :func:`market_part`) and the account."""
    return np.concatenate([market.astype(np.float32), account_part(account)])


def _clip(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values, nan=0.0, posinf=CLIP, neginf=-CLIP)
    return np.clip(values, -CLIP, CLIP).astype(np.float32)


def action_to_multiplier(action: float, low: float, high: float) -> float:
    """The action in [−1, 1] (clipped) mapped linearly onto [low, high]."""
    clipped = min(1.0, max(-1.0, float(action))) if math.isfinite(action) else 0.0
    return low + (clipped + 1.0) / 2.0 * (high - low)


def clip_multiplier(multiplier: float, low: float, high: float) -> float:
    """Within the policy's bounds and the hard bounds, whatever the policy says."""
    low = max(low, HARD_MIN_MULTIPLIER)
    high = min(high, HARD_MAX_MULTIPLIER)
    if not math.isfinite(multiplier):
        return 1.0 if low <= 1.0 <= high else low
    return min(high, max(low, multiplier))
