"""risk-governor: every plan approved or rejected, and the emergency stop's evaluators.

Plans are checked (:mod:`quantum.risk.checks`) against the policy store's risk policy and
the live portfolio (execution's state key). Plans this governor approved that the
portfolio does not show yet (their bar is not older than the portfolio's last tick) count
as pending exposure, so a burst of plans cannot slip past a limit between approval and
fill. A missing portfolio rejects: fail closed.
The universe check reads the universe service's selection (``quantum:state:universe``),
within the policy's ``universe.symbols`` when set; a symbol outside it is rejected
``symbol_not_in_universe``.

The same service runs the ESS evaluators: drawdown at every bar (and every second on the
wall clock) on the marked portfolio, execution errors on every ``execution.result``, and on
the wall clock the heartbeats of required services and the freshness of the feed. Any trip
(an evaluator's or an operator's) is announced once on ``risk.events`` with the actions the
policy orders, which the exit-brain carries out.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Gauge, Histogram

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import (
    ExecutionReport,
    Kline,
    Plan,
    PortfolioState,
    RiskDecision,
    RiskEvent,
)
from quantum.contracts.streams import MARKET_TICK, RISK_DECISION, RISK_EVENTS
from quantum.regime import view as regime_view
from quantum.registry.fleet import (
    ESS_AUDIT_KEY,
    ESS_KEY,
    GOVERNOR_KEY,
    PORTFOLIO_KEY,
    SERVICES,
    UNIVERSE_KEY,
)
from quantum.risk import ess
from quantum.risk.checks import Approval, RiskContext, evaluate
from quantum.risk.evaluators import (
    DrawdownEvaluator,
    ExecutionErrorsEvaluator,
    health_reason,
    stale_feed_reason,
)
from quantum.risk.policy import POLICY_KEY, PolicyCache
from quantum.risk.portfolio import rebalance
from services.risk_governor.config import Settings

NAME = "risk-governor"
log = structlog.get_logger(service=NAME)

DECISIONS = Counter("quantum_risk_decisions_total", "Decisions", ["approved"])
REJECTIONS = Counter("quantum_risk_rejections_total", "Rejections by reason", ["reason"])
DECISION_SECONDS = Histogram(
    "quantum_risk_decision_seconds",
    "Time to decide one plan",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01),
)
ESS_TRIPPED = Gauge("quantum_risk_ess_tripped", "1 while the emergency stop is tripped")
DAILY_DRAWDOWN = Gauge("quantum_risk_daily_drawdown", "Drawdown from the day's first equity")
POLICY_VERSION = Gauge("quantum_risk_policy_version", "Policy version in force")
REBALANCES = Counter("quantum_risk_rebalance_proposals_total",
                     "Reduce-only cuts proposed by the exposure balancer", ["reason"])
# A cut proposed against a position's quantity is not proposed again while the book still
# shows that quantity (the exit-brain's harvest is on its way), for this long on the clock.
REBALANCE_WAIT_MS = 15 * 60_000


class RiskGovernor(ServiceBase):
    name = NAME

    def __init__(self, settings: Settings, ports: Ports) -> None:
        self.state = ports.state
        self.clock = ports.clock
        self.history = ports.history
        self.event_clock = ports.clock.event
        self.policies = PolicyCache(ports.state)
        self._universe_raw: bytes | None = None
        self._universe_selected: frozenset[str] | None = None
        self.required = [s.name for s in SERVICES if s.required and s.name != NAME]
        self.started_wall = ports.clock.wall()
        self.last_wall_check = 0.0
        self._reset_state()

    def _reset_state(self) -> None:
        self.pending: dict[str, Approval] = {}
        self.last_approval_ms: dict[str, int] = {}
        self.drawdown = DrawdownEvaluator()
        self.errors = ExecutionErrorsEvaluator()
        self.announced_trips = 0
        self.returns: dict[str, deque[float]] = {}
        self.last_close: dict[str, float] = {}
        self.last_marked_ms = 0
        self.rebalanced: dict[str, list[float]] = {}  # position id → [quantity, time] of a cut
        self._dirty = False
        self._ess_now: ess.EssState | None = None  # a trip in this batch, not yet committed
        self._portfolio_raw: bytes | None = None
        self._portfolio: PortfolioState | None = None

    def restore(self) -> None:
        self._reset_state()
        raw = self.state.get(GOVERNOR_KEY)
        if raw is None:
            return
        state = orjson.loads(raw)
        self.pending = {k: Approval(**v) for k, v in state["pending"].items()}
        self.last_approval_ms = state["last_approval_ms"]
        self.clock.observe(state["latest_event_ms"])
        self.drawdown = DrawdownEvaluator(**state["drawdown"])
        self.errors = ExecutionErrorsEvaluator(**state["errors"])
        self.announced_trips = state["announced_trips"]
        window = self.policies.refresh().risk.correlation_window
        self.returns = {s: deque(v, maxlen=window) for s, v in state["returns"].items()}
        self.last_close = state["last_close"]
        self.last_marked_ms = state["last_marked_ms"]
        self.rebalanced = state.get("rebalanced", {})

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def ess(self) -> ess.EssState:
        """The ESS as committed, or as this batch's trip left it."""
        return self._ess_now if self._ess_now is not None else ess.parse(self.state.get(ESS_KEY))

    def portfolio(self) -> PortfolioState | None:
        return self._parsed_portfolio(self.state.get(PORTFOLIO_KEY))

    def _parsed_portfolio(self, raw: bytes | None) -> PortfolioState | None:
        """The portfolio document parsed, reusing the last parse while it is unchanged
        (execution rewrites it only when the book moves; the governor reads it every bar)."""
        if raw is None:
            return None
        if raw != self._portfolio_raw:
            self._portfolio = PortfolioState.model_validate_json(raw)
            self._portfolio_raw = raw
        return self._portfolio

    # --- emergency stop -------------------------------------------------------------------

    def _trip(self, out: Outbox, cause: Envelope[Any] | None, evaluator: str, reason: str) -> None:
        raw = self.state.get(ESS_KEY)
        new, audit = ess.tripped(raw, reason, NAME, evaluator=evaluator, at=self.now_ms())
        if audit is not None:  # committed only if nobody (an operator) changed it meanwhile
            out.compare_and_set(ESS_KEY, raw, new.model_dump_json().encode())
            out.append(ESS_AUDIT_KEY, audit, ess.AUDIT_LIMIT)
            self._ess_now = new
        self._announce(out, cause)

    def _announce(self, out: Outbox, cause: Envelope[Any] | None) -> None:
        """Publish each trip once, with the actions the policy orders for it."""
        state = self.ess()
        ESS_TRIPPED.set(1 if state.tripped else 0)
        if not state.tripped or state.trips <= self.announced_trips:
            return
        self.announced_trips = state.trips
        self._dirty = True
        policy = self.policies.refresh().risk
        event = RiskEvent(
            kind="ess_tripped",
            severity="critical",
            detail=state.reason,
            data={
                "evaluator": state.evaluator,
                "by": state.by,
                "trip": state.trips,
                "close_losing_positions": policy.ess_close_losing_positions,
                "cut_exposure_share": policy.ess_cut_exposure_share,
            },
        )
        # The fleet's clock, never the trip's own stamp: an operator's trip is stamped with
        # the wall time of the command, and on the event clock a forced close at that time
        # would be a trade ending in the operator's present (issue 14: a 397-day trade).
        ts = self.now_ms() or state.tripped_at
        out.emit(
            RISK_EVENTS,
            new_envelope(event, ts=ts, source=NAME, cause=cause, key=f"ess:{state.trips}"),
        )
        log.critical("emergency stop tripped", evaluator=state.evaluator, reason=state.reason)

    # --- handlers -------------------------------------------------------------------------

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        payload = event.payload
        if isinstance(payload, Plan):
            self._decide(event, payload, out)
        elif isinstance(payload, Kline):
            self._observe_bar(payload)
            if payload.close_time > self.last_marked_ms:
                # Once a bar, on the portfolio marked to this bar (in a replay, after the
                # bar's settlement), drawdown is judged at every bar.
                self.last_marked_ms = payload.close_time
                self.clock.settle()
                portfolio = self.portfolio()
                if portfolio is not None:
                    self._observe_equity(portfolio, event, out)
                    self._rebalance(portfolio, event, out)
        elif isinstance(payload, ExecutionReport):
            reason = self.errors.observe(payload, self.policies.refresh().risk)
            if reason is not None and not self.ess().tripped:
                self._trip(out, event, "execution_errors", reason)
        self._dirty = True

    def _observe_equity(
        self, portfolio: PortfolioState, event: Envelope[Any] | None, out: Outbox
    ) -> None:
        policy = self.policies.refresh().risk
        reason = self.drawdown.observe(portfolio.equity, self.now_ms(), policy)
        DAILY_DRAWDOWN.set(self.drawdown.daily_drawdown(portfolio.equity))
        if reason is not None and not self.ess().tripped:
            self._trip(out, event, "drawdown", reason)

    def _rebalance(self, portfolio: PortfolioState, event: Envelope[Any], out: Outbox) -> None:
        """The exposure balancer (:mod:`quantum.risk.portfolio`): when the book has drifted
        past a concentration limit, propose reduce-only cuts for the exit-brain. Not while
        the ESS is tripped: its own cut is under way."""
        held = {p.position_id: p.quantity for p in portfolio.positions}
        now = self.now_ms()
        self.rebalanced = {k: v for k, v in self.rebalanced.items()
                           if k in held and held[k] == v[0] and now - v[1] < REBALANCE_WAIT_MS}
        if not portfolio.positions or self.ess().tripped:
            return
        limits = self.policies.policy.risk
        cuts = rebalance(portfolio.positions, portfolio.equity, self.returns,
                         max_symbol=limits.symbol_limit,
                         max_cluster=limits.cluster_limit,
                         threshold=limits.cluster_correlation,
                         window=limits.correlation_window,
                         tolerance=limits.rebalance_tolerance)
        for cut in cuts:
            if cut.position_id in self.rebalanced:
                continue
            self.rebalanced[cut.position_id] = [held[cut.position_id], now]
            reasons = ",".join(cut.reasons)
            proposal = RiskEvent(
                kind="exposure_rebalance", severity="warning",
                detail=(f"{cut.symbol} {cut.side}: {reasons} at {cut.exposure:.2f}x equity "
                        f"> {cut.limit:.2f}x; reduce {cut.fraction:.1%}"),
                data={"position_id": cut.position_id, "symbol": cut.symbol,
                      "side": cut.side, "fraction": cut.fraction, "reasons": reasons,
                      "exposure": cut.exposure, "limit": cut.limit})
            out.emit(RISK_EVENTS, new_envelope(proposal, ts=now, source=NAME, cause=event,
                                               key=f"rebalance:{cut.position_id}:{now}"))
            for reason in cut.reasons:
                REBALANCES.labels(reason).inc()
            log.warning("exposure rebalance proposed", position_id=cut.position_id,
                        symbol=cut.symbol, fraction=cut.fraction, reasons=reasons)

    def _observe_bar(self, kline: Kline) -> None:
        previous = self.last_close.get(kline.symbol)
        self.last_close[kline.symbol] = kline.close
        if previous is None:
            return
        window = self.policies.policy.risk.correlation_window  # refreshed on every decision
        series = self.returns.get(kline.symbol)
        if series is None or series.maxlen != window:
            series = self.returns[kline.symbol] = deque(series or (), maxlen=window)
        series.append(math.log(kline.close / previous))

    def _universe(self, allowed: tuple[str, ...], raw: bytes | None) -> frozenset[str] | None:
        """The symbols a plan may trade: the universe service's selection (its key), within
        the policy's ``universe.symbols`` when that is set. Before the universe service
        has ranked once, the policy's list alone (none: no restriction)."""
        if raw is not None and raw != self._universe_raw:
            self._universe_raw = raw
            self._universe_selected = frozenset(orjson.loads(raw)["symbols"])
        selected = self._universe_selected if raw is not None else None
        if selected is None:
            return frozenset(allowed) if allowed else None
        return selected & frozenset(allowed) if allowed else selected

    def _decide(self, event: Envelope[Any], plan: Plan, out: Outbox) -> None:
        self.clock.settle()  # replay: judge on the portfolio after this bar's fills
        started = time.perf_counter()
        raw_policy, raw_portfolio, raw_ess, raw_universe = self.state.get_many(  # one trip
            [POLICY_KEY, PORTFOLIO_KEY, ESS_KEY, UNIVERSE_KEY])
        policy = self.policies.update(raw_policy)
        POLICY_VERSION.set(policy.version)
        portfolio = self._parsed_portfolio(raw_portfolio)
        state = self._ess_now if self._ess_now is not None else ess.parse(raw_ess)
        if portfolio is None:
            reasons: tuple[str, ...] = ("portfolio_unavailable",)
        else:
            # Approved plans stay reserved until the portfolio shows them: not yet past
            # their bar, or still on the book unfilled (a resting maker entry). An entry
            # that was rejected, expired or cancelled drops out of both and is released.
            on_book = set(portfolio.pending_plans)
            self.pending = {k: a for k, a in self.pending.items()
                            if a.bar_time >= portfolio.ts or k in on_book}
            ctx = RiskContext(
                limits=policy.risk,
                universe=self._universe(policy.universe.symbols, raw_universe),
                portfolio=portfolio,
                pending=self.pending,
                last_approval_ms=self.last_approval_ms,
                latest_event_ms=self.now_ms(),
                daily_drawdown=self.drawdown.daily_drawdown(portfolio.equity),
                weekly_drawdown=self.drawdown.weekly_drawdown(portfolio.equity),
                returns=self.returns,
                block_reason=state.block_reason,
                regime=policy.regime,
                regimes=regime_view.read(self.state) if policy.regime.governs else None,
            )
            reasons = evaluate(plan, ctx)
        approved = not reasons
        if approved:
            sign = 1.0 if plan.side == "LONG" else -1.0
            self.pending[plan.plan_id] = Approval(
                plan.symbol, plan.bar_time, plan.notional, sign * plan.notional
            )
            self.last_approval_ms[plan.symbol] = plan.bar_time
        decision = RiskDecision(
            plan_id=plan.plan_id,
            approved=approved,
            reasons=reasons,
            plan=plan,
            policy_version=policy.version,
        )
        out.emit(RISK_DECISION, new_envelope(decision, ts=event.ts, source=NAME, cause=event))
        DECISIONS.labels(str(approved).lower()).inc()
        for reason in reasons:
            REJECTIONS.labels(reason).inc()
        DECISION_SECONDS.observe(time.perf_counter() - started)

    def on_idle(self, out: Outbox, now: float) -> None:
        """Announce operator trips; on the wall clock, check heartbeats and the feed."""
        if now - self.last_wall_check < 1.0:
            return
        self.last_wall_check = now
        self._announce(out, None)
        if self.event_clock or self.ess().tripped:
            return
        portfolio = self.portfolio()
        if portfolio is not None:
            self.clock.observe(portfolio.ts)
            self._observe_equity(portfolio, None, out)  # live: equity every second
        policy = self.policies.refresh().risk
        if now - self.started_wall >= policy.ess_heartbeat_grace_seconds:
            reason = health_reason(self.state, self.required)
            if reason is not None:
                self._trip(out, None, "system_health", reason)
                return
        reason = stale_feed_reason(self.history.last_arrival_ms(MARKET_TICK), int(now * 1000),
                                   policy)
        if reason is not None:
            self._trip(out, None, "data_stale", reason)

    def on_batch_end(self, out: Outbox) -> None:
        self._ess_now = None  # the commit after this carries the trip; reads see it from now
        if not self._dirty:
            return
        self._dirty = False
        out.put_state(
            GOVERNOR_KEY,
            {
                "pending": {k: vars(a) for k, a in self.pending.items()},
                "last_approval_ms": self.last_approval_ms,
                "latest_event_ms": self.clock.latest_ms,
                "drawdown": vars(self.drawdown),
                "errors": vars(self.errors),
                "announced_trips": self.announced_trips,
                "returns": {s: list(v) for s, v in self.returns.items()},
                "last_close": self.last_close,
                "last_marked_ms": self.last_marked_ms,
                "rebalanced": self.rebalanced,
            },
        )


def build(settings: Settings, ports: Ports) -> RiskGovernor:
    return RiskGovernor(settings, ports)
