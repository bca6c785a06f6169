"""apply-layer: the only producer of entry orders.

An approved plan becomes an order only when (1) the approval is fresh, (2) the
risk-governor is alive (its heartbeat key exists), (3) the emergency stop is clear and
trading is not paused, and (4) the plan was not applied before. Anything else is refused
and counted: fail closed.

The duplicate guard is durable and bounded by time: applied plan ids live in a sorted set
scored by their bar time, written by the commit as a guard (:meth:`Outbox.guard`), which
Redis refuses if the id is already there — so two instances of this group, or a paused one
whose entry a peer reclaimed, can never both release an order for one plan. Ids are kept
for :data:`GUARD_FRESHNESS_MULTIPLE` times the approval freshness bound (at least a day):
an approval older than the bound is refused as stale anyway, so an id pruned after that can
never be applied again. Exits never pass here (the exit-brain's reduce-only harvests go
straight to execution), so they are never blocked.

The entry is a market order, or with the policy's ``sizing.entry_order=maker`` a post-only
limit order (``GTX``) on the passive side of the signal price that expires
``sizing.maker_ttl_bars`` bars after its plan's bar (:func:`maker_terms`); the policy is
read when the order is released.
"""

from __future__ import annotations

from typing import Any

import structlog
from prometheus_client import Counter

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import OrderRequest, Plan, RiskDecision
from quantum.contracts.streams import APPLY_RESULT
from quantum.observability.heartbeat import heartbeat_key
from quantum.registry.fleet import APPLY_KEY, APPLY_REFUSAL_KEY, ESS_KEY
from quantum.risk import ess
from quantum.risk.policy import PolicyCache, SizingPolicy
from services.apply_layer.config import Settings

NAME = "apply-layer"
GUARD_FRESHNESS_MULTIPLE = 10
MIN_GUARD_MS = 86_400_000
FUTURE_SKEW_MS = 60_000  # a plan's bar may be this far ahead of the clock (skew), no more
log = structlog.get_logger(service=NAME)

ORDERS = Counter("quantum_apply_orders_total", "Entry orders released", ["side"])
REFUSED = Counter("quantum_apply_refused_total", "Approved plans refused", ["reason"])


def client_order_id(plan_id: str) -> str:
    """Binance allows 36 chars of ``[.A-Z:/a-z0-9_-]``; same plan → same id → no double order."""
    return "qt-" + plan_id.replace("-", "")[:32]


def maker_terms(plan: Plan, sizing: SizingPolicy, bar_ms: int) -> dict[str, Any]:
    """The limit fields of a maker entry: post-only, on the passive side of the signal
    price by ``maker_offset_bps``, expiring ``maker_ttl_bars`` bars after the plan's bar."""
    if sizing.entry_order != "maker":
        return {}
    offset = sizing.maker_offset_bps / 10_000
    sign = -1.0 if plan.side == "LONG" else 1.0  # a buy rests below, a sell above
    return {"order_type": "LIMIT", "limit_price": plan.reference_price * (1 + sign * offset),
            "time_in_force": "GTX", "expires_at": plan.bar_time + sizing.maker_ttl_bars * bar_ms}


def entry_order(plan: Plan, sizing: SizingPolicy | None = None,
                bar_ms: int = 300_000) -> OrderRequest:
    """The order that opens an approved plan's position: a market order, or with
    ``sizing.entry_order=maker`` a post-only limit order (:func:`maker_terms`)."""
    terms = maker_terms(plan, sizing, bar_ms) if sizing is not None else {}
    return OrderRequest(
        client_order_id=client_order_id(plan.plan_id),
        plan_id=plan.plan_id,
        symbol=plan.symbol,
        side="BUY" if plan.side == "LONG" else "SELL",
        position_side=plan.side,
        quantity=plan.quantity,
        reference_price=plan.reference_price,
        leverage=plan.leverage,
        reduce_only=False,
        reason="entry",
        bar_time=plan.bar_time,
        exit_plan=plan.exit_plan,
        **terms,
    )


class ApplyLayer(ServiceBase):
    name = NAME

    def __init__(self, settings: Settings, ports: Ports) -> None:
        self.state = ports.state
        self.clock = ports.clock
        self.max_age_ms = settings.approval_max_age_seconds * 1000
        self.bar_ms = settings.bar_interval_seconds * 1000
        self.policies = PolicyCache(ports.state)
        self.keep_ms = max(GUARD_FRESHNESS_MULTIPLE * self.max_age_ms, MIN_GUARD_MS)
        self.applied: dict[str, int] = {}  # plan id -> bar time, as in the durable guard

    def restore(self) -> None:
        self.applied = self.state.scores(APPLY_KEY)

    def refusal(self, decision: RiskDecision, now_ms: int) -> str | None:
        if decision.plan_id in self.applied:
            return "duplicate_plan"
        if now_ms - decision.plan.bar_time > self.max_age_ms:
            return "stale_approval"
        if decision.plan.bar_time - now_ms > FUTURE_SKEW_MS:
            return "approval_from_future"  # a bar that has not happened is never "fresh"
        beat, raw_ess = self.state.get_many([heartbeat_key("risk-governor"), ESS_KEY])
        if beat is None:
            return "governor_down"
        return ess.parse(raw_ess).block_reason

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        decision: RiskDecision = event.payload
        if not decision.approved:
            return
        reason = self.refusal(decision, self.clock.now_ms())
        if reason is not None:
            REFUSED.labels(reason).inc()
            log.warning("approved plan refused", plan_id=decision.plan_id, reason=reason)
            out.put_state(
                APPLY_REFUSAL_KEY, {"plan_id": decision.plan_id, "reason": reason, "ts": event.ts}
            )
            return
        plan = decision.plan
        order = entry_order(plan, self.policies.refresh().sizing, self.bar_ms)
        out.emit(APPLY_RESULT, new_envelope(order, ts=event.ts, source=NAME, cause=event))
        out.guard(APPLY_KEY, plan.plan_id, plan.bar_time, self.keep_ms)
        self.applied[plan.plan_id] = plan.bar_time
        horizon = plan.bar_time - self.keep_ms
        if len(self.applied) % 1000 == 0:  # the guard prunes itself; so does this mirror
            self.applied = {k: v for k, v in self.applied.items() if v >= horizon}
        ORDERS.labels(order.side).inc()


def build(settings: Settings, ports: Ports) -> ApplyLayer:
    return ApplyLayer(settings, ports)
