"""intent-bridge: turn a trade intent into a sized plan with leverage and an exit plan.

The RL sizing agent (:mod:`quantum.rl.agent`) is consulted for every plan unless the policy
store says ``sizing.rl_sizing=off``: in ``shadow`` (the default) its suggestion is recorded
beside the size actually used and changes nothing; in ``active`` it scales the risk budget,
within its bounds, and the notional bounds still clip the result. Without a sound policy the
multiplier is 1.0 and the agent's state key says why. The policy's
``regime.high_vol_size_factor`` scales the size of a plan whose symbol the meta-regime has
in high volatility (1.0 by default: no change).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import structlog
from prometheus_client import Counter

from quantum.bus.envelope import Envelope, derive_id, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import Plan, SizingPolicyPromoted, TradeIntent
from quantum.contracts.streams import APPLY_PLAN
from quantum.exits.profiles import exit_plan
from quantum.regime import view as regime_view
from quantum.regime.rules import HIGH_VOL
from quantum.registry.fleet import PORTFOLIO_KEY
from quantum.risk.policy import PolicyCache
from quantum.risk.sizing import size_position

NAME = "intent-bridge"
log = structlog.get_logger(service=NAME)

PLANS = Counter("quantum_bridge_plans_total", "Plans sized", ["side"])
UNSIZED = Counter("quantum_bridge_unsized_total", "Intents that could not be sized", ["reason"])
REGIME_SCALED = Counter("quantum_bridge_regime_scaled_total",
                        "Plans sized down by regime.high_vol_size_factor")


class PortfolioUnavailable(RuntimeError):
    """No portfolio state yet: the intent stays pending and is retried (fail closed)."""


class IntentBridge(ServiceBase):
    name = NAME

    def __init__(self, ports: Ports, sizing_agent: Any = None) -> None:
        self.state = ports.state
        self.clock = ports.clock
        self.agent = sizing_agent  # quantum.rl.agent.SizingAgent, or None: no RL at all
        self.policies = PolicyCache(ports.state)

    def portfolio(self) -> dict[str, Any]:
        raw = self.state.get(PORTFOLIO_KEY)
        if raw is None:
            raise PortfolioUnavailable(f"{PORTFOLIO_KEY} missing: execution has not started")
        portfolio: dict[str, Any] = orjson.loads(raw)
        return portfolio

    def equity(self) -> float:
        return float(self.portfolio()["equity"])

    def restore(self) -> None:
        if self.agent is not None:
            self.agent.restore()

    def on_idle(self, out: Outbox, now: float) -> None:
        if self.agent is not None:
            self.agent.check_for_update(now)
            if self.agent.status_due():  # health in the state key before the first plan too
                from quantum.rl.agent import STATUS_KEY

                mode = self.policies.refresh().sizing.rl_sizing
                out.put_state(STATUS_KEY, self.agent.status(mode, int(now * 1000)))

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        if isinstance(event.payload, SizingPolicyPromoted):
            if self.agent is not None:
                self.agent.reload()
            return
        intent: TradeIntent = event.payload
        self.clock.settle()  # replay: size on the portfolio after this bar's fills
        s = self.policies.refresh().sizing
        stop_distance = s.stop_atr_multiple * intent.atr
        portfolio = self.portfolio()
        decision = None
        if self.agent is not None and s.rl_sizing != "off":
            decision = self.agent.decide(s.rl_sizing, intent, portfolio)
        regime_factor = self._regime_factor(intent)
        size = size_position(
            equity=float(portfolio["equity"]),
            price=intent.price,
            stop_distance=stop_distance,
            confidence=intent.confidence,
            min_confidence=s.min_confidence,
            risk_per_trade=s.risk_per_trade,
            min_notional=s.min_notional_usd,
            max_notional=s.max_notional_usd,
            rl_multiplier=(decision.applied_multiplier if decision is not None else 1.0)
            * regime_factor,
        )
        if size is None:
            UNSIZED.labels("no_valid_size").inc()
            log.warning("intent not sized", intent_id=intent.intent_id, atr=intent.atr)
            return
        plan = Plan(
            plan_id=derive_id(NAME, "plan", intent.intent_id),
            intent_id=intent.intent_id,
            symbol=intent.symbol,
            side=intent.side,
            quantity=size.quantity,
            reference_price=intent.price,
            notional=size.notional,
            leverage=s.leverage,
            confidence=intent.confidence,
            size_multiplier=size.multiplier,
            bar_time=intent.bar_time,
            exit_plan=exit_plan(
                s.exit_profile, intent.side, intent.price, stop_distance, intent.atr,
                take_profit_r=s.take_profit_r, horizon_seconds=intent.horizon_seconds,
            ),
        )
        out.emit(APPLY_PLAN, new_envelope(plan, ts=event.ts, source=NAME, cause=event))
        PLANS.labels(intent.side).inc()
        if decision is not None:
            self._record_sizing(decision, plan, intent, portfolio, stop_distance, event.ts, out)

    def _regime_factor(self, intent: TradeIntent) -> float:
        """``regime.high_vol_size_factor`` when the meta-regime has the symbol in high
        volatility (a usable call: :mod:`quantum.regime.view`), else 1.0. Without a call
        the size is unchanged: the governor decides whether trading without one is safe."""
        policy = self.policies.policy.regime
        if policy.high_vol_size_factor >= 1.0:
            return 1.0
        labels = regime_view.read(self.state).labels(intent.symbol, intent.bar_time,
                                                     policy.max_age_seconds * 1000)
        if labels is not None and HIGH_VOL in labels:
            REGIME_SCALED.inc()
            return policy.high_vol_size_factor
        return 1.0

    def _record_sizing(self, decision: Any, plan: Plan, intent: TradeIntent,
                       portfolio: dict[str, Any], stop_distance: float, ts: int,
                       out: Outbox) -> None:
        """The RL record of this plan (for rl-feedback) and the agent's health."""
        from quantum.rl.agent import RECORD_PREFIX, RECORD_TTL_S, STATUS_KEY, record

        s = self.policies.policy.sizing
        suggested = None
        if decision.suggested_multiplier is not None:
            counterfactual = size_position(
                equity=float(portfolio["equity"]), price=intent.price,
                stop_distance=stop_distance, confidence=intent.confidence,
                min_confidence=s.min_confidence, risk_per_trade=s.risk_per_trade,
                min_notional=s.min_notional_usd, max_notional=s.max_notional_usd,
                rl_multiplier=decision.suggested_multiplier)
            suggested = counterfactual.quantity if counterfactual is not None else None
        entry = record(decision, plan, intent, stop_distance=stop_distance,
                       equity=float(portfolio["equity"]), quantity_suggested=suggested)
        out.put_state(RECORD_PREFIX + plan.plan_id, entry, ttl_s=RECORD_TTL_S)
        out.put_state(STATUS_KEY, self.agent.status(decision.mode, ts))


def build(settings: Any, ports: Ports) -> IntentBridge:
    from quantum.rl.agent import SizingAgent

    return IntentBridge(ports, sizing_agent=SizingAgent(ports, Path(settings.rl_policy_dir)))
