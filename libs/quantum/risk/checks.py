"""Pre-trade checks: one small function each, named by the reason code it returns.

A check gets the plan and a :class:`RiskContext` and returns ``None`` (pass) or its reason
code. The governor runs every check and rejects with all failing codes, so an operator sees
every reason at once, not only the first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from quantum.contracts.events import Plan, PortfolioState
from quantum.regime.view import RegimeView
from quantum.risk.policy import RegimePolicy, RiskPolicy
from quantum.risk.portfolio import clusters, signed_notional


@dataclass
class Approval:
    symbol: str
    bar_time: int
    notional: float
    signed_notional: float


@dataclass
class RiskContext:
    limits: RiskPolicy
    universe: frozenset[str] | None  # the tradable symbols; None: no restriction
    portfolio: PortfolioState
    pending: dict[str, Approval] = field(default_factory=dict)  # approved, not yet filled
    last_approval_ms: dict[str, int] = field(default_factory=dict)
    latest_event_ms: int = 0
    daily_drawdown: float = 0.0
    weekly_drawdown: float = 0.0
    returns: dict[str, Sequence[float]] = field(default_factory=dict)  # recent bar log returns
    block_reason: str | None = None  # ESS tripped / trading paused / supervisor block
    regime: RegimePolicy = field(default_factory=RegimePolicy)
    regimes: RegimeView | None = None  # the meta-regime's calls (read when regime.governs)


Check = Callable[[Plan, RiskContext], str | None]


def emergency_stop(plan: Plan, ctx: RiskContext) -> str | None:
    return ctx.block_reason


def symbol_not_in_universe(plan: Plan, ctx: RiskContext) -> str | None:
    universe = ctx.universe
    return "symbol_not_in_universe" if universe is not None and plan.symbol not in universe \
        else None


def min_confidence(plan: Plan, ctx: RiskContext) -> str | None:
    return "min_confidence" if plan.confidence < ctx.limits.min_confidence else None


def leverage_cap(plan: Plan, ctx: RiskContext) -> str | None:
    return "leverage_cap" if plan.leverage > ctx.limits.max_leverage else None


def max_position_margin(plan: Plan, ctx: RiskContext) -> str | None:
    margin = plan.notional / plan.leverage
    return "max_position_margin" if margin > ctx.limits.max_position_margin_usd else None


def min_notional(plan: Plan, ctx: RiskContext) -> str | None:
    return "min_notional" if plan.notional < ctx.limits.min_notional_usd else None


def position_open(plan: Plan, ctx: RiskContext) -> str | None:
    held = {p.symbol for p in ctx.portfolio.positions}
    held.update(a.symbol for a in ctx.pending.values())
    return "position_open" if plan.symbol in held else None


def max_concurrent_positions(plan: Plan, ctx: RiskContext) -> str | None:
    count = len(ctx.portfolio.positions) + len(ctx.pending)
    return "max_concurrent_positions" if count >= ctx.limits.max_concurrent_positions else None


def max_gross_exposure(plan: Plan, ctx: RiskContext) -> str | None:
    equity = ctx.portfolio.equity
    if equity <= 0:
        return "max_gross_exposure"
    gross = ctx.portfolio.gross_exposure + sum(a.notional for a in ctx.pending.values())
    return (
        "max_gross_exposure"
        if (gross + plan.notional) / equity > ctx.limits.max_gross_exposure
        else None
    )


def max_net_exposure(plan: Plan, ctx: RiskContext) -> str | None:
    equity = ctx.portfolio.equity
    if equity <= 0:
        return "max_net_exposure"
    sign = 1.0 if plan.side == "LONG" else -1.0
    net = ctx.portfolio.net_exposure + sum(a.signed_notional for a in ctx.pending.values())
    return (
        "max_net_exposure"
        if abs(net + sign * plan.notional) / equity > ctx.limits.max_net_exposure
        else None
    )


def correlation(plan: Plan, ctx: RiskContext) -> str | None:
    """Rolling correlation of bar returns with each open position, signed by direction:
    a second bet the same way on a look-alike market doubles the risk; a hedge does not.
    All held symbols are correlated with the candidate in one vectorised pass."""
    window = ctx.limits.correlation_window
    candidate = ctx.returns.get(plan.symbol, ())
    if len(candidate) < 20:
        return None
    sides: dict[str, float] = {p.symbol: 1.0 if p.side == "LONG" else -1.0
                               for p in ctx.portfolio.positions}
    for approval in ctx.pending.values():
        sides.setdefault(approval.symbol, 1.0 if approval.signed_notional > 0 else -1.0)
    sides.pop(plan.symbol, None)
    held = [(s, side) for s, side in sides.items() if len(ctx.returns.get(s, ())) >= 20]
    if not held:
        return None
    n = min(window, len(candidate), *(len(ctx.returns[s]) for s, _ in held))
    matrix = np.array([list(ctx.returns[s])[-n:] for s, _ in held])
    base = np.array(list(candidate)[-n:])
    rho = pearson(base, matrix)
    sign = 1.0 if plan.side == "LONG" else -1.0
    directed = rho * sign * np.array([side for _, side in held])
    return "correlation" if bool(np.any(directed > ctx.limits.max_correlation)) else None


def pearson(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Correlation of ``a`` with each row of ``rows`` (0 where either has no variance)."""
    a = a - a.mean()
    rows = rows - rows.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum() * (rows * rows).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        result = (rows @ a) / denominator
    return np.where(denominator > 0, result, 0.0)


def symbol_concentration(plan: Plan, ctx: RiskContext) -> str | None:
    """The symbol's absolute notional (book, approved plans, this plan) over equity."""
    equity = ctx.portfolio.equity
    if equity <= 0:
        return "symbol_concentration"
    held = sum(abs(signed_notional(p)) for p in ctx.portfolio.positions if p.symbol == plan.symbol)
    held += sum(a.notional for a in ctx.pending.values() if a.symbol == plan.symbol)
    exposure = (held + plan.notional) / equity
    return "symbol_concentration" if exposure > ctx.limits.symbol_limit else None


def cluster_concentration(plan: Plan, ctx: RiskContext) -> str | None:
    """The absolute net notional of the plan's correlated cluster (:mod:`quantum.risk.
    portfolio`) with this plan, over equity."""
    equity = ctx.portfolio.equity
    if equity <= 0:
        return "cluster_concentration"
    symbols = {p.symbol for p in ctx.portfolio.positions}
    symbols.update(a.symbol for a in ctx.pending.values())
    symbols.add(plan.symbol)
    membership = clusters(ctx.returns, symbols, ctx.limits.cluster_correlation,
                          ctx.limits.correlation_window)
    cluster = membership[plan.symbol]
    net = (1.0 if plan.side == "LONG" else -1.0) * plan.notional
    net += sum(signed_notional(p) for p in ctx.portfolio.positions
               if membership[p.symbol] == cluster)
    net += sum(a.signed_notional for a in ctx.pending.values() if membership[a.symbol] == cluster)
    return "cluster_concentration" if abs(net) / equity > ctx.limits.cluster_limit else None


def _regime_labels(plan: Plan, ctx: RiskContext, scope: str) -> tuple[str, ...] | None:
    if ctx.regimes is None:
        return None
    return ctx.regimes.labels(scope, plan.bar_time, ctx.regime.max_age_seconds * 1000)


def regime_unavailable(plan: Plan, ctx: RiskContext) -> str | None:
    """The policy acts on regimes and the ones it needs are missing or old: fail closed."""
    policy = ctx.regime
    if not policy.governs:
        return None
    needed = ["MARKET"] + ([plan.symbol] if policy.block_entries_in else [])
    missing = any(_regime_labels(plan, ctx, scope) is None for scope in needed)
    return "regime_unavailable" if missing else None


def regime_blocked(plan: Plan, ctx: RiskContext) -> str | None:
    """No entries while the symbol or the market is in a regime the policy lists."""
    blocked = set(ctx.regime.block_entries_in)
    if not blocked:
        return None
    for scope in (plan.symbol, "MARKET"):
        labels = _regime_labels(plan, ctx, scope)
        if labels is not None and blocked.intersection(labels):
            return "regime_blocked"
    return None


def regime_budget(plan: Plan, ctx: RiskContext) -> str | None:
    """Gross exposure with this plan within the budget of the market's regime."""
    budgets = ctx.regime.gross_budget
    labels = _regime_labels(plan, ctx, "MARKET") if budgets else None
    if not labels:
        return None
    limits = [budgets[label] for label in labels if label in budgets]
    if not limits:
        return None
    equity = ctx.portfolio.equity
    gross = ctx.portfolio.gross_exposure + sum(a.notional for a in ctx.pending.values())
    if equity <= 0 or (gross + plan.notional) / equity > min(limits):
        return "regime_budget"
    return None


def cooldown(plan: Plan, ctx: RiskContext) -> str | None:
    last = ctx.last_approval_ms.get(plan.symbol)
    if last is None:
        return None
    return "cooldown" if plan.bar_time - last < ctx.limits.cooldown_seconds * 1000 else None


def stale_data(plan: Plan, ctx: RiskContext) -> str | None:
    age_ms = ctx.latest_event_ms - plan.bar_time
    return "stale_data" if age_ms > ctx.limits.max_data_age_seconds * 1000 else None


def daily_drawdown(plan: Plan, ctx: RiskContext) -> str | None:
    return "daily_drawdown" if ctx.daily_drawdown >= ctx.limits.daily_drawdown_limit else None


def weekly_drawdown(plan: Plan, ctx: RiskContext) -> str | None:
    return "weekly_drawdown" if ctx.weekly_drawdown >= ctx.limits.weekly_drawdown_limit else None


def finite_plan(plan: Plan, ctx: RiskContext) -> str | None:
    values = (plan.quantity, plan.notional, plan.reference_price, plan.exit_plan.stop_loss)
    return None if all(math.isfinite(v) and v > 0 for v in values) else "invalid_plan"


CHECKS: dict[str, Check] = {
    check.__name__: check
    for check in (
        emergency_stop,
        finite_plan,
        symbol_not_in_universe,
        min_confidence,
        leverage_cap,
        max_position_margin,
        min_notional,
        position_open,
        max_concurrent_positions,
        max_gross_exposure,
        max_net_exposure,
        correlation,
        symbol_concentration,
        cluster_concentration,
        regime_unavailable,
        regime_blocked,
        regime_budget,
        cooldown,
        stale_data,
        daily_drawdown,
        weekly_drawdown,
    )
}


def evaluate(plan: Plan, ctx: RiskContext, checks: dict[str, Check] = CHECKS) -> tuple[str, ...]:
    """Every failing check's reason code, in declaration order; empty means approve."""
    return tuple(reason for check in checks.values() if (reason := check(plan, ctx)) is not None)
