"""Trade opportunities: the rows the sizing environment steps through.

An opportunity is a trade the fleet would take regardless of its size: the signal, its bar's
market observation, and what one unit of notional made net of fees (``net_return``). Since
the outcome per unit of notional does not depend on the size, the environment can replay it
at any size the policy picks.

Two sources, one table:

* **History** (:func:`from_data`): every 5-minute bar of the data files through the unified
  features (:func:`quantum.features.compute_batch`, the feature-publisher's definition) and
  the baseline momentum rule (:class:`quantum.models.baseline.BaselineMomentum`), acted on as
  the ai-engine does (directional, confidence ≥ ``min_confidence``), one position per symbol
  as the risk-governor allows. The entry fills at the next bar's open with adverse slippage
  and the taker fee; the exit plan is the bridge's (:func:`quantum.exits.profiles.exit_plan`)
  and is followed bar by bar with the exit-brain's own :class:`TrackedPosition`. A position
  still open after ``max_hold_bars`` is closed at that bar's close (a bound on how far an
  outcome reaches; the fleet's default profile has no time stop). Funding is left out.
* **The fleet's own outcomes** (:func:`from_rewards`): ``rl_rewards`` events carry the market
  observation recorded at entry and the trade's real net PnL and notional.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quantum.rl.observation import MARKET_FIELDS, REQUIRED_FEATURES, market_part

BAR_MS = 300_000


@dataclass(frozen=True)
class SimulationConfig:
    """How historical opportunities are made (defaults follow the fleet's defaults).

    Attributes:
        min_confidence: the ai-engine's threshold for acting on a signal.
        stop_atr_multiple: stop distance in ATRs (the sizing policy's default).
        exit_profile: the exit profile the bridge attaches.
        taker_fee: fee rate per fill (the paper exchange's default).
        slippage_bps: adverse slippage on market fills (the paper exchange's default).
        max_hold_bars: bars after which a simulated position is closed at the close.
    """

    min_confidence: float = 0.65
    stop_atr_multiple: float = 1.5
    exit_profile: str = "DEFAULT"
    taker_fee: float = 0.0004
    slippage_bps: float = 2.0
    max_hold_bars: int = 288


@dataclass(frozen=True)
class Opportunities:
    """Column arrays, one row per trade, ordered by entry time."""

    entry_ts: np.ndarray  # int64 ms, when the entry filled
    exit_ts: np.ndarray  # int64 ms, when the position was fully closed
    symbol: np.ndarray  # str
    confidence: np.ndarray  # float64
    price: np.ndarray  # float64, the reference price the plan is sized at
    stop_distance: np.ndarray  # float64, 1R in price units
    market: np.ndarray  # float32 (rows × MARKET_FIELDS)
    net_return: np.ndarray  # float64, PnL per unit of entry notional, after fees

    def __len__(self) -> int:
        return int(self.entry_ts.size)

    def take(self, rows: np.ndarray) -> Opportunities:
        return Opportunities(*(getattr(self, name)[rows] for name in _COLUMNS))

    def between(self, start_ms: int | None, end_ms: int | None) -> Opportunities:
        """Rows whose whole trade (entry and exit) lies in ``[start_ms, end_ms)``."""
        mask = np.ones(len(self), dtype=bool)
        if start_ms is not None:
            mask &= self.entry_ts >= start_ms
        if end_ms is not None:
            mask &= self.exit_ts < end_ms
        return self.take(np.flatnonzero(mask))

    @property
    def time_range(self) -> tuple[int, int]:
        return int(self.entry_ts.min()), int(self.exit_ts.max())


_COLUMNS = ("entry_ts", "exit_ts", "symbol", "confidence", "price", "stop_distance", "market",
            "net_return")


def concatenate(parts: Sequence[Opportunities]) -> Opportunities:
    """One table, ordered by entry time (then symbol, so ties are deterministic)."""
    chosen = [p for p in parts if len(p)]
    if not chosen:
        return empty()
    columns = [np.concatenate([getattr(p, name) for p in chosen]) for name in _COLUMNS]
    table = Opportunities(*columns)
    order = np.lexsort((table.symbol.astype(str), table.entry_ts))
    return table.take(order)


def empty() -> Opportunities:
    return Opportunities(
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, dtype=object),
        np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, MARKET_FIELDS), np.float32),
        np.zeros(0))


def simulate_symbol(symbol: str, open_time: np.ndarray, ohlcv: np.ndarray,
                    config: SimulationConfig) -> Opportunities:
    """The baseline's trades on one symbol's bars and what a unit of notional made."""
    from quantum.features import compute_batch
    from quantum.models.baseline import BaselineMomentum

    frame = pd.DataFrame(ohlcv, columns=["open", "high", "low", "close", "volume"],
                         index=open_time)
    features = compute_batch(frame)
    needed = sorted(set(REQUIRED_FEATURES) | set(BaselineMomentum.required_features))
    values = features[needed].to_numpy(dtype=np.float64)
    usable = np.isfinite(values).all(axis=1)
    rule = BaselineMomentum()
    rows: list[tuple[Any, ...]] = []
    index, last = 0, len(open_time) - 1
    while index < last:
        if not usable[index]:
            index += 1
            continue
        named = dict(zip(needed, values[index], strict=True))
        prediction = rule.predict(named)
        if prediction.direction == "FLAT" or prediction.confidence < config.min_confidence:
            index += 1
            continue
        trade = _follow(prediction.direction, index, open_time, ohlcv, named["atr_pct_14"],
                        config)
        if trade is None:
            index += 1
            continue
        exit_index, net_return, stop_distance = trade
        market = market_part(prediction.direction, prediction.confidence, named)
        rows.append((int(open_time[index + 1]), int(open_time[exit_index]) + BAR_MS, symbol,
                     prediction.confidence, float(ohlcv[index, 3]), stop_distance, market,
                     net_return))
        index = exit_index + 1  # one position per symbol: the next entry after this exit
    return _table(rows)


def _follow(side: str, index: int, open_time: np.ndarray, ohlcv: np.ndarray,
            atr_pct: float, config: SimulationConfig) -> tuple[int, float, float] | None:
    """Enter at the next open, follow the exit plan; (exit bar, net return, 1R)."""
    from quantum.exits.brain import TrackedPosition
    from quantum.exits.profiles import exit_plan

    reference = float(ohlcv[index, 3])
    atr = atr_pct * reference
    stop_distance = config.stop_atr_multiple * atr
    if stop_distance <= 0:
        return None
    sign = 1.0 if side == "LONG" else -1.0
    slip = config.slippage_bps / 10_000
    entry = float(ohlcv[index + 1, 0]) * (1 + sign * slip)
    plan = exit_plan(config.exit_profile, side, reference, stop_distance, atr)  # type: ignore[arg-type]
    position = TrackedPosition.from_fill({
        "position_id": "simulated", "symbol": "SIM", "position_side": side, "price": entry,
        "ts": int(open_time[index + 1]), "quantity": 1.0, "position_quantity": 1.0,
        "exit_plan": plan.model_dump(), "liquidation_price": 0.0,
    })
    remaining, result = 1.0, -config.taker_fee
    last = min(len(open_time) - 1, index + config.max_hold_bars)
    for bar in range(index + 1, last + 1):
        o, h, low, c = (float(v) for v in ohlcv[bar, :4])
        orders = position.evaluate(int(open_time[bar]) + BAR_MS, o, h, low, c)
        if bar == last and not position.closing:
            orders += position.close_now(c, "simulation_horizon")
        for order in orders:
            share = remaining * order.fraction
            remaining -= share
            is_limit = order.reason.startswith("take_profit")
            price = order.price * (1 - sign * (0.0 if is_limit else slip))
            result += share * (sign * (price - entry) / entry - config.taker_fee * price / entry)
        if remaining <= 1e-12 or position.closing:
            return bar, result, stop_distance
    return None


def _table(rows: list[tuple[Any, ...]]) -> Opportunities:
    if not rows:
        return empty()
    columns = list(zip(*rows, strict=True))
    return Opportunities(
        np.asarray(columns[0], np.int64), np.asarray(columns[1], np.int64),
        np.asarray(columns[2], dtype=object), np.asarray(columns[3], np.float64),
        np.asarray(columns[4], np.float64), np.asarray(columns[5], np.float64),
        np.stack(columns[6]).astype(np.float32), np.asarray(columns[7], np.float64))


def from_data(data_dir: Path, symbols: Iterable[str] | None = None, *,
              start_ms: int | None = None, end_ms: int | None = None,
              config: SimulationConfig | None = None) -> Opportunities:
    """Historical opportunities of ``symbols`` (default: all) in ``[start_ms, end_ms)``."""
    from quantum.replay.data import available_symbols, load_symbol

    config = config or SimulationConfig()
    chosen = list(symbols) if symbols else available_symbols(data_dir)
    if not chosen:
        raise ValueError(f"no 5m kline files in {data_dir}")
    parts = []
    for symbol in chosen:
        data = load_symbol(data_dir, symbol, start_ms=start_ms, end_ms=end_ms)
        parts.append(simulate_symbol(symbol, data.open_time, data.ohlcv, config))
    return concatenate(parts)


def from_rewards(rewards: Iterable[Mapping[str, Any]]) -> Opportunities:
    """The fleet's closed trades (``rl.reward`` payloads) as opportunities."""
    rows = []
    for reward in rewards:
        notional = float(reward["entry_notional"])
        if notional <= 0 or len(reward["observation"]) < MARKET_FIELDS:
            continue
        market = np.asarray(reward["observation"][:MARKET_FIELDS], dtype=np.float32)
        rows.append((int(reward["entry_ts"]), int(reward["exit_ts"]), reward["symbol"],
                     float(reward["confidence"]), float(reward["reference_price"]),
                     float(reward["stop_distance"]), market,
                     float(reward["net_pnl"]) / notional))
    return _table(rows)
