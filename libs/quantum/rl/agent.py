"""The sizing agent the intent-bridge runs: observation at entry, suggestion, record.

For every plan, unless ``sizing.rl_sizing`` is ``off``, the agent

1. builds the observation (:mod:`quantum.rl.observation`) from the intent, the unified
   features of the intent's bar (read from the ``features`` stream, which the bridge only
   inspects) and the portfolio (equity, open positions, gross exposure; the equity peak is
   the agent's own, kept in its state key);
2. asks the promoted policy for a multiplier (a plain torch forward pass, tens of µs);
3. decides the multiplier that is *applied*: 1.0 in ``shadow`` (nothing changes, ever),
   the suggestion in ``active`` — clipped to the policy's bounds and the hard 0.5–1.5 —
   and 1.0 whenever there is no sound policy or no observation, with the reason in the
   agent's health;
4. leaves a record per plan (``quantum:state:intent-bridge:rl:plan:<plan_id>``, expiring
   after ``RECORD_TTL_S``): the observation, the suggestion, the multiplier and size
   actually used and the size the suggestion would have given. rl-feedback reads it when the
   trade closes (the exchange adapters use the plan id as position id, and a closed trade's
   ``trade_id`` is its position id) and turns it into an ``rl_rewards`` event with the
   counterfactual PnL. A record rather than fields on the plan: the plan contract stays the
   risk-governor's and execution's business, and the observation is bulky.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import structlog
from prometheus_client import Counter, Gauge, Histogram

from quantum.bus.ports import History, Ports
from quantum.contracts.streams import FEATURES
from quantum.registry.fleet import RL_SIZING_KEY
from quantum.rl.observation import (
    MARKET_FIELDS,
    OBSERVATION_SCHEMA,
    Account,
    MissingFeatures,
    market_part,
    observation,
)

STATUS_KEY = RL_SIZING_KEY
RECORD_PREFIX = STATUS_KEY + ":plan:"
RECORD_TTL_S = 30 * 24 * 3600
FEATURE_SCAN_DEPTH = 1024  # newest ``features`` entries searched for the intent's bar
RELOAD_CHECK_S = 10.0

SUGGESTIONS = Counter("quantum_rl_suggestions_total", "Multipliers the RL policy suggested",
                      ["mode"])
SUGGESTED = Histogram("quantum_rl_suggested_multiplier", "Suggested size multipliers",
                      buckets=(0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5))
SHADOW_DIFFERENCE = Histogram(
    "quantum_rl_shadow_multiplier_difference", "Suggested minus applied multiplier",
    ["mode"], buckets=(-1.0, -0.5, -0.25, -0.1, -0.01, 0.01, 0.1, 0.25, 0.5, 1.0))
SUGGEST_SECONDS = Histogram("quantum_rl_suggest_seconds", "Policy forward pass time",
                            buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2))
POLICY_LOADED = Gauge("quantum_rl_policy_loaded", "1 when a sound sizing policy is loaded")
POLICY_INFO = Gauge("quantum_rl_policy_info", "The sizing policy version in use", ["version"])
UNAVAILABLE = Counter("quantum_rl_unavailable_total",
                      "Plans sized without a suggestion, by reason", ["reason"])

log = structlog.get_logger(component="rl-sizing-agent")


@dataclass(frozen=True)
class SizingDecision:
    """What the agent says about one plan."""

    mode: str
    applied_multiplier: float
    suggested_multiplier: float | None
    observation: np.ndarray | None
    policy_version: str | None
    reason: str | None  # why there is no suggestion (None when there is one)


def find_features(history: History, symbol: str, close_time: int,
                  depth: int = FEATURE_SCAN_DEPTH) -> dict[str, float] | None:
    """The unified features of ``symbol``'s bar closing at ``close_time``, newest first."""
    for event in history.newest(FEATURES, depth):
        vector = event.payload
        if getattr(vector, "symbol", None) != symbol:
            continue
        if vector.close_time == close_time:
            return dict(vector.values)
        if vector.close_time < close_time:
            return None  # older than the bar: it is not in the stream
    return None


class SizingAgent:
    """Loads the promoted policy, suggests, and keeps its health for the bridge."""

    def __init__(self, ports: Ports, registry_root: Path) -> None:
        from quantum.rl.policy import PolicyRegistry

        self.state = ports.state
        self.history = ports.history
        self.registry = PolicyRegistry(Path(registry_root))
        self.policy: Any = None
        self.problem: str | None = "not loaded yet"
        self.peak_equity = 0.0
        self.suggestions = 0
        self._pointer_stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self._announced: tuple[str | None, str | None] | None = None
        self.reload()

    # --- policy ---------------------------------------------------------------------------

    def reload(self) -> None:
        """(Re)load the active policy; a failure leaves no policy and says why."""
        from quantum.rl.policy import PolicyRefused

        self._pointer_stamp = self._stamp()
        previous = self.policy.version if self.policy is not None else None
        try:
            self.policy = self.registry.load_policy()
            self.problem = None
            import torch

            torch.set_num_threads(1)  # one forward pass of a small MLP: threads only add cost
        except PolicyRefused as e:
            self.policy, self.problem = None, str(e)
        except ImportError as e:
            self.policy, self.problem = None, f"torch is not installed: {e}"
        POLICY_INFO.clear()
        if self.policy is not None:
            POLICY_LOADED.set(1)
            POLICY_INFO.labels(self.policy.version).set(1)
            if self.policy.version != previous:
                log.info("sizing policy loaded", version=self.policy.version)
        else:
            POLICY_LOADED.set(0)
            log.warning("no sizing policy: suggestions off, sizing stays at 1.0x",
                        reason=self.problem)

    def _stamp(self) -> tuple[float, int] | None:
        pointer = self.registry.root / "registry.json"
        try:
            info = pointer.stat()
        except OSError:
            return None
        return (info.st_mtime, info.st_size)

    def check_for_update(self, now: float) -> None:
        """Reload when the registry's pointer changed (a promotion or rollback)."""
        if now - self._checked < RELOAD_CHECK_S:
            return
        self._checked = now
        if self._stamp() != self._pointer_stamp:
            self.reload()

    # --- per plan -------------------------------------------------------------------------

    def restore(self) -> None:
        raw = self.state.get(STATUS_KEY)
        self.peak_equity = float(orjson.loads(raw).get("peak_equity", 0.0)) if raw else 0.0

    def decide(self, mode: str, intent: Any, portfolio: dict[str, Any]) -> SizingDecision:
        """The multiplier to apply to this intent's plan, and the suggestion beside it."""
        version = self.policy.version if self.policy is not None else None
        equity = float(portfolio["equity"])
        self.peak_equity = max(self.peak_equity, equity)
        features = find_features(self.history, intent.symbol, intent.bar_time)
        if features is None:
            return self._without("features_unavailable", mode, None, version,
                                 f"no features for {intent.symbol} at {intent.bar_time}")
        try:
            market = market_part(intent.side, intent.confidence, features)
        except MissingFeatures as e:
            return self._without("features_unavailable", mode, None, version, str(e))
        account = Account(equity=equity, peak_equity=self.peak_equity,
                          open_positions=len(portfolio.get("positions", ())),
                          gross_exposure=float(portfolio.get("gross_exposure", 0.0)))
        seen = observation(market, account)
        if self.policy is None:
            return self._without("no_policy", mode, seen, None, self.problem or "no policy")
        started = time.perf_counter()
        suggested = self.policy.multiplier(seen)
        SUGGEST_SECONDS.observe(time.perf_counter() - started)
        applied = suggested if mode == "active" else 1.0
        self.suggestions += 1
        SUGGESTIONS.labels(mode).inc()
        SUGGESTED.observe(suggested)
        SHADOW_DIFFERENCE.labels(mode).observe(suggested - applied)
        return SizingDecision(mode, applied, suggested, seen, version, None)

    def _without(self, kind: str, mode: str, seen: np.ndarray | None, version: str | None,
                 reason: str) -> SizingDecision:
        UNAVAILABLE.labels(kind).inc()
        return SizingDecision(mode, 1.0, None, seen, version, reason)

    def status_due(self) -> bool:
        """Whether the policy or its problem changed since the state key was last written."""
        version = self.policy.version if self.policy is not None else None
        return self._announced != (version, self.problem)

    def status(self, mode: str, now_ms: int) -> dict[str, Any]:
        """The agent's health, for the bridge's state key."""
        self._announced = (self.policy.version if self.policy is not None else None,
                           self.problem)
        return {
            "mode": mode,
            "policy_version": self.policy.version if self.policy is not None else None,
            "policy_loaded": self.policy is not None,
            "reason": self.problem,
            "sizing_effect": ("suggestion applied" if mode == "active" and self.policy
                              else "none: sizing at 1.0x"),
            "peak_equity": self.peak_equity,
            "suggestions": self.suggestions,
            "registry": str(self.registry.root),
            "updated_ts": now_ms,
        }


def record(decision: SizingDecision, plan: Any, intent: Any, *, stop_distance: float,
           equity: float, quantity_suggested: float | None) -> dict[str, Any]:
    """The per-plan record rl-feedback turns into a reward when the trade closes."""
    seen = decision.observation
    return {
        "plan_id": plan.plan_id, "symbol": plan.symbol, "side": plan.side,
        "bar_time": plan.bar_time, "mode": decision.mode,
        "observation": [float(v) for v in seen] if seen is not None else None,
        "observation_schema": OBSERVATION_SCHEMA, "market_fields": MARKET_FIELDS,
        "confidence": intent.confidence, "reference_price": plan.reference_price,
        "stop_distance": stop_distance, "equity": equity,
        "suggested_multiplier": decision.suggested_multiplier,
        "applied_multiplier": decision.applied_multiplier,
        "policy_version": decision.policy_version, "reason": decision.reason,
        "quantity_used": plan.quantity, "notional_used": plan.notional,
        "quantity_suggested": quantity_suggested,
    }
