"""risk-governor: approve or reject every plan against the limits and the live portfolio.

The portfolio comes from execution's state key (``quantum:state:portfolio``). Plans this
governor approved that the portfolio does not show yet (their bar is not older than the
portfolio's last tick) count as pending exposure, so a burst of plans cannot slip past a
limit between approval and fill. Missing portfolio state rejects (fail closed).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis
from prometheus_client import Counter, Histogram

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import Plan, PortfolioState, RiskDecision, RiskEvent
from quantum.contracts.streams import RISK_DECISION, RISK_EVENTS
from quantum.registry.fleet import GOVERNOR_KEY, PORTFOLIO_KEY
from quantum.risk.checks import DAY_MS, WEEK_MS, Approval, Limits, RiskContext, evaluate
from services.risk_governor.config import Settings

NAME = "risk-governor"
POLICY_VERSION = 1

DECISIONS = Counter("quantum_risk_decisions_total", "Decisions", ["approved"])
REJECTIONS = Counter("quantum_risk_rejections_total", "Rejections by reason", ["reason"])
DECISION_SECONDS = Histogram("quantum_risk_decision_seconds", "Time to decide one plan",
                             buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01))


def limits_from(settings: Settings) -> Limits:
    universe = frozenset(s.strip().upper() for s in settings.universe.split(",") if s.strip())
    return Limits(
        max_position_margin_usd=settings.max_position_margin_usd,
        max_leverage=settings.max_leverage, min_notional_usd=settings.min_notional_usd,
        max_concurrent_positions=settings.max_concurrent_positions,
        max_gross_exposure=settings.max_gross_exposure, min_confidence=settings.min_confidence,
        cooldown_seconds=settings.cooldown_seconds,
        max_data_age_seconds=settings.max_data_age_seconds,
        daily_drawdown_limit=settings.daily_drawdown_limit,
        weekly_drawdown_limit=settings.weekly_drawdown_limit, universe=universe,
    )


class RiskGovernor(ServiceBase):
    name = NAME

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.limits = limits_from(settings)
        self.client = client
        self.event_clock = settings.clock == "event"
        self.pending: dict[str, Approval] = {}
        self.last_approval_ms: dict[str, int] = {}
        self.latest_event_ms = 0
        self.day = self.week = -1
        self.day_start_equity = self.week_start_equity = 0.0
        self.alerted: set[str] = set()
        self._dirty = False

    def restore(self, client: redis.Redis) -> None:
        raw = client.get(GOVERNOR_KEY)
        state = orjson.loads(raw) if raw else {}
        self.pending = {k: Approval(**v) for k, v in state.get("pending", {}).items()}
        self.last_approval_ms = state.get("last_approval_ms", {})
        self.latest_event_ms = state.get("latest_event_ms", 0)
        self.day, self.week = state.get("day", -1), state.get("week", -1)
        self.day_start_equity = state.get("day_start_equity", 0.0)
        self.week_start_equity = state.get("week_start_equity", 0.0)
        self.alerted = set(state.get("alerted", []))

    def portfolio(self) -> PortfolioState | None:
        raw = self.client.get(PORTFOLIO_KEY)
        return PortfolioState.model_validate_json(raw) if raw is not None else None

    def _roll_periods(self, now_ms: int, equity: float) -> None:
        day, week = now_ms // DAY_MS, (now_ms + 3 * DAY_MS) // WEEK_MS  # weeks start Monday
        if day != self.day:
            self.day, self.day_start_equity = day, equity
            self.alerted.discard("daily_drawdown")
        if week != self.week:
            self.week, self.week_start_equity = week, equity
            self.alerted.discard("weekly_drawdown")

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        started = time.perf_counter()
        plan: Plan = event.payload
        self.latest_event_ms = max(self.latest_event_ms, event.ts)
        now_ms = self.latest_event_ms if self.event_clock else int(time.time() * 1000)
        portfolio = self.portfolio()
        if portfolio is None:
            reasons: tuple[str, ...] = ("portfolio_unavailable",)
        else:
            self.pending = {k: a for k, a in self.pending.items() if a.bar_time >= portfolio.ts}
            self._roll_periods(now_ms, portfolio.equity)
            ctx = RiskContext(
                limits=self.limits, portfolio=portfolio, pending=self.pending,
                last_approval_ms=self.last_approval_ms, latest_event_ms=now_ms,
                day_start_equity=self.day_start_equity, week_start_equity=self.week_start_equity,
            )
            reasons = evaluate(plan, ctx)
            for reason in reasons:
                if reason in ("daily_drawdown", "weekly_drawdown") and reason not in self.alerted:
                    self.alerted.add(reason)
                    alert = RiskEvent(kind=reason, severity="critical",
                                      detail=f"{reason} limit reached; new risk rejected",
                                      data={"equity": portfolio.equity})
                    out.emit(RISK_EVENTS, new_envelope(alert, ts=event.ts, source=NAME,
                                                       cause=event, key=reason))
        approved = not reasons
        if approved:
            self.pending[plan.plan_id] = Approval(plan.symbol, plan.bar_time, plan.notional)
            self.last_approval_ms[plan.symbol] = plan.bar_time
        decision = RiskDecision(plan_id=plan.plan_id, approved=approved, reasons=reasons,
                                plan=plan, policy_version=POLICY_VERSION)
        out.emit(RISK_DECISION, new_envelope(decision, ts=event.ts, source=NAME, cause=event))
        self._dirty = True
        DECISIONS.labels(str(approved).lower()).inc()
        for reason in reasons:
            REJECTIONS.labels(reason).inc()
        DECISION_SECONDS.observe(time.perf_counter() - started)

    def on_batch_end(self, out: Outbox) -> None:
        if not self._dirty:
            return
        self._dirty = False
        out.put_state(GOVERNOR_KEY, {
            "pending": {k: vars(a) for k, a in self.pending.items()},
            "last_approval_ms": self.last_approval_ms, "latest_event_ms": self.latest_event_ms,
            "day": self.day, "week": self.week, "day_start_equity": self.day_start_equity,
            "week_start_equity": self.week_start_equity, "alerted": sorted(self.alerted),
        })
