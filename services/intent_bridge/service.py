"""intent-bridge: turn a trade intent into a sized plan with leverage and an exit plan."""

from __future__ import annotations

from typing import Any

import orjson
import redis
import structlog
from prometheus_client import Counter

from quantum.app import COMMIT_CHANNEL
from quantum.bus.envelope import Envelope, derive_id, new_envelope
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import Plan, TradeIntent
from quantum.contracts.streams import APPLY_PLAN
from quantum.exits.profiles import exit_plan
from quantum.registry.fleet import PORTFOLIO_KEY, settlement_pairs
from quantum.replay.barrier import Settlement
from quantum.risk.policy import PolicyCache
from quantum.risk.sizing import size_position

NAME = "intent-bridge"
log = structlog.get_logger(service=NAME)

PLANS = Counter("quantum_bridge_plans_total", "Plans sized", ["side"])
UNSIZED = Counter("quantum_bridge_unsized_total", "Intents that could not be sized", ["reason"])


class PortfolioUnavailable(RuntimeError):
    """No portfolio state yet: the intent stays pending and is retried (fail closed)."""


class IntentBridge(ServiceBase):
    name = NAME

    def __init__(self, client: redis.Redis, event_clock: bool = False) -> None:
        self.client = client
        self.policies = PolicyCache(client)
        self.settlement = Settlement(
            client, settlement_pairs(), enabled=event_clock, channel=COMMIT_CHANNEL
        )

    def equity(self) -> float:
        raw = self.client.get(PORTFOLIO_KEY)
        if raw is None:
            raise PortfolioUnavailable(f"{PORTFOLIO_KEY} missing: execution has not started")
        return float(orjson.loads(raw)["equity"])

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        intent: TradeIntent = event.payload
        self.settlement.wait()  # replay: size on the portfolio after this bar's fills
        s = self.policies.refresh().sizing
        stop_distance = s.stop_atr_multiple * intent.atr
        size = size_position(
            equity=self.equity(),
            price=intent.price,
            stop_distance=stop_distance,
            confidence=intent.confidence,
            min_confidence=s.min_confidence,
            risk_per_trade=s.risk_per_trade,
            min_notional=s.min_notional_usd,
            max_notional=s.max_notional_usd,
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
                s.exit_profile, intent.side, intent.price, stop_distance, intent.atr
            ),
        )
        out.emit(APPLY_PLAN, new_envelope(plan, ts=event.ts, source=NAME, cause=event))
        PLANS.labels(intent.side).inc()
