"""Pre-trade checks: one small function each, named by the reason code it returns.

A check gets the plan and a :class:`RiskContext` and returns ``None`` (pass) or its reason
code. The governor runs every check and rejects with all failing codes, so an operator sees
every reason at once, not only the first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from quantum.contracts.events import Plan, PortfolioState
from quantum.risk.policy import RiskPolicy


@dataclass
class Approval:
    symbol: str
    bar_time: int
    notional: float
    signed_notional: float


@dataclass
class RiskContext:
    limits: RiskPolicy
    universe: frozenset[str]
    portfolio: PortfolioState
    pending: dict[str, Approval] = field(default_factory=dict)  # approved, not yet filled
    last_approval_ms: dict[str, int] = field(default_factory=dict)
    latest_event_ms: int = 0
    daily_drawdown: float = 0.0
    weekly_drawdown: float = 0.0
    returns: dict[str, Sequence[float]] = field(default_factory=dict)  # recent bar log returns
    block_reason: str | None = None  # ESS tripped / trading paused / supervisor block


Check = Callable[[Plan, RiskContext], str | None]


def emergency_stop(plan: Plan, ctx: RiskContext) -> str | None:
    return ctx.block_reason


def symbol_not_in_universe(plan: Plan, ctx: RiskContext) -> str | None:
    universe = ctx.universe
    return "symbol_not_in_universe" if universe and plan.symbol not in universe else None


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
    a second bet the same way on a look-alike market doubles the risk; a hedge does not."""
    window = ctx.limits.correlation_window
    candidate = list(ctx.returns.get(plan.symbol, ()))[-window:]
    if len(candidate) < 20:
        return None
    sign = 1.0 if plan.side == "LONG" else -1.0
    held = [(p.symbol, 1.0 if p.side == "LONG" else -1.0) for p in ctx.portfolio.positions]
    held += [(a.symbol, 1.0 if a.signed_notional > 0 else -1.0) for a in ctx.pending.values()]
    for symbol, side in held:
        other = list(ctx.returns.get(symbol, ()))[-window:]
        n = min(len(candidate), len(other))
        if symbol == plan.symbol or n < 20:
            continue
        rho = pearson(candidate[-n:], other[-n:])
        if rho * sign * side > ctx.limits.max_correlation:
            return "correlation"
    return None


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    n = len(a)
    mean_a, mean_b = sum(a) / n, sum(b) / n
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b, strict=True))
    var_a = sum((x - mean_a) ** 2 for x in a)
    var_b = sum((y - mean_b) ** 2 for y in b)
    return cov / math.sqrt(var_a * var_b) if var_a > 0 and var_b > 0 else 0.0


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
        cooldown,
        stale_data,
        daily_drawdown,
        weekly_drawdown,
    )
}


def evaluate(plan: Plan, ctx: RiskContext, checks: dict[str, Check] = CHECKS) -> tuple[str, ...]:
    """Every failing check's reason code, in declaration order; empty means approve."""
    return tuple(reason for check in checks.values() if (reason := check(plan, ctx)) is not None)
