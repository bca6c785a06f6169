"""rl-feedback: turn each ``trade.closed`` into an ``rl_rewards`` event.

The observation current at entry comes from the intent-bridge's record of the plan
(:mod:`quantum.rl.agent`): the exchange adapters use the plan id as the position id, and a
closed trade's ``trade_id`` is its position id, so the record is found by key. A trade
without a record (opened with ``rl_sizing=off``, adopted by reconcile, or older than the
record's expiry) yields no reward and is counted by reason.

The counterfactual PnL is what the suggested size would have made: the real net PnL scaled
by suggested quantity / used quantity (fees scale with size; a larger plan the
risk-governor might have refused is not modelled). The reward is
:class:`quantum.rl.reward.RewardTracker`'s, with its rolling returns kept in this service's
state key so a restart continues the same Sharpe term.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Gauge

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import RlReward, TradeClosed
from quantum.contracts.streams import RL_REWARDS
from quantum.registry.fleet import RL_FEEDBACK_KEY
from quantum.rl.agent import RECORD_PREFIX
from quantum.rl.observation import MAX_EXPOSURE_SCALE, OBSERVATION_SCHEMA
from quantum.rl.reward import RewardTracker

NAME = "rl-feedback"
STATE_KEY = RL_FEEDBACK_KEY

REWARDS = Counter("quantum_rl_rewards_total", "Rewards emitted", ["mode"])
SKIPPED = Counter("quantum_rl_feedback_skipped_total", "Closed trades without a reward",
                  ["reason"])
COUNTERFACTUAL = Gauge("quantum_rl_counterfactual_pnl_difference_usd",
                       "Sum over closed trades of counterfactual minus actual net PnL")
ACTUAL = Gauge("quantum_rl_actual_pnl_usd", "Sum of net PnL of trades with a suggestion")

log = structlog.get_logger(service=NAME)


class RlFeedback(ServiceBase):
    name = NAME

    def __init__(self, ports: Ports) -> None:
        self.state = ports.state
        self.tracker = RewardTracker()
        self.totals = {"rewards": 0, "counterfactual_difference": 0.0, "actual_pnl": 0.0}

    def restore(self) -> None:
        raw = self.state.get(STATE_KEY)
        state = orjson.loads(raw) if raw else {}
        self.tracker = RewardTracker(recent=state.get("recent_returns", ()))
        self.totals = {"rewards": int(state.get("rewards", 0)),
                       "counterfactual_difference": float(state.get(
                           "counterfactual_difference", 0.0)),
                       "actual_pnl": float(state.get("actual_pnl", 0.0))}
        COUNTERFACTUAL.set(self.totals["counterfactual_difference"])
        ACTUAL.set(self.totals["actual_pnl"])

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        trade: TradeClosed = event.payload
        raw = self.state.get(RECORD_PREFIX + trade.trade_id)
        if raw is None:
            SKIPPED.labels("no_entry_record").inc()
            log.info("closed trade without an RL record", trade_id=trade.trade_id)
            return
        entry = orjson.loads(raw)
        reason = _unusable(entry)
        if reason is not None:
            SKIPPED.labels(reason).inc()
            return
        reward = self._reward(trade, entry)
        out.emit(RL_REWARDS, new_envelope(reward, ts=event.ts, source=NAME, cause=event))
        REWARDS.labels(reward.mode).inc()
        self.totals["rewards"] += 1
        if reward.counterfactual_pnl is not None:
            self.totals["counterfactual_difference"] += reward.counterfactual_pnl - trade.net_pnl
            self.totals["actual_pnl"] += trade.net_pnl
            COUNTERFACTUAL.set(self.totals["counterfactual_difference"])
            ACTUAL.set(self.totals["actual_pnl"])
        out.put_state(STATE_KEY, {**self.totals, "recent_returns": list(self.tracker.recent),
                                  "last_trade_id": trade.trade_id, "last_ts": event.ts})

    def _reward(self, trade: TradeClosed, entry: dict[str, Any]) -> RlReward:
        observation = entry["observation"]
        equity = float(entry["equity"])
        entry_notional = trade.quantity * trade.entry_price
        drawdown = float(observation[10]) / 10.0
        exposure_share = float(observation[12]) + entry_notional / equity / MAX_EXPOSURE_SCALE
        value = self.tracker.reward(trade.net_pnl, equity, drawdown, exposure_share)
        counterfactual = None
        used, suggested = entry.get("quantity_used"), entry.get("quantity_suggested")
        if suggested is not None and used:
            counterfactual = trade.net_pnl * float(suggested) / float(used)
        return RlReward(
            plan_id=trade.trade_id, symbol=trade.symbol, side=trade.side,
            entry_ts=trade.entry_ts, exit_ts=trade.exit_ts, observation=tuple(observation),
            observation_schema=entry["observation_schema"], mode=entry["mode"],
            confidence=entry["confidence"], reference_price=entry["reference_price"],
            stop_distance=entry["stop_distance"], equity_at_entry=equity,
            entry_notional=entry_notional, applied_multiplier=entry["applied_multiplier"],
            suggested_multiplier=entry.get("suggested_multiplier"),
            policy_version=entry.get("policy_version"), net_pnl=trade.net_pnl,
            counterfactual_pnl=counterfactual, reward=value)


def _unusable(entry: dict[str, Any]) -> str | None:
    """Why a record cannot become a reward (None when it can)."""
    if entry.get("observation") is None:
        return "no_observation"
    if entry.get("observation_schema") != OBSERVATION_SCHEMA:
        return "observation_schema_changed"
    if entry.get("mode") not in ("shadow", "active"):
        return "mode_off"
    if float(entry.get("equity", 0.0)) <= 0 or float(entry.get("stop_distance", 0.0)) <= 0:
        return "no_equity_or_stop"
    return None


def build(settings: Any, ports: Ports) -> RlFeedback:
    return RlFeedback(ports)
