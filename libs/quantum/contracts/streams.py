"""The stream catalogue: every Redis stream the fleet may use, by constant.

Producers and consumer groups of each stream are declared in :mod:`quantum.registry.fleet`.
"""

from __future__ import annotations

from quantum.bus.streams import DLQ, PREFIX, StreamSpec

MARKET_TICK = StreamSpec(
    "market.tick", 200_000, "Price updates (a closed bar in replay, ticker live)"
)
MARKET_KLINES = StreamSpec("market.klines", 200_000, "Closed candlesticks per symbol and interval")
FEATURES = StreamSpec("features", 200_000, "The unified feature vector per closed bar")
AI_SIGNAL = StreamSpec("ai.signal_generated", 200_000, "Every prediction with member votes")
AI_DECISION = StreamSpec("ai.decision.made", 100_000, "Actionable model decisions")
TRADE_INTENT = StreamSpec("trade.intent", 100_000, "A wish to open a position")
APPLY_PLAN = StreamSpec("apply.plan", 100_000, "A sized plan with its exit plan")
RISK_DECISION = StreamSpec("risk.decision", 100_000, "Approve or reject a plan, with reason codes")
RISK_EVENTS = StreamSpec("risk.events", 100_000, "Emergency stop trips, resets and risk alerts")
APPLY_RESULT = StreamSpec("apply.result", 100_000, "Entry orders to place (the only entry path)")
HARVEST_INTENT = StreamSpec("harvest.intent", 100_000, "Reduce-only exits with a reason")
EXECUTION_RESULT = StreamSpec("execution.result", 200_000, "Order acks, fills and rejects")
TRADE_CLOSED = StreamSpec("trade.closed", 100_000, "Closed trades with PnL net of fees and funding")
PORTFOLIO_STATE = StreamSpec("portfolio.state", 50_000, "Positions, balance and exposure snapshots")
RL_REWARDS = StreamSpec("rl_rewards", 100_000, "Closed-trade rewards for the RL sizer")
POLICY_UPDATED = StreamSpec("policy.updated", 10_000, "A new sizing policy or promoted model")
RECONCILE_EVENTS = StreamSpec("reconcile.events", 50_000, "Differences between exchange and fleet")
AI_SUPERVISOR = StreamSpec("ai.supervisor", 50_000, "Model supervisor: bias, drift, swaps, members")
LEARNING_EVENTS = StreamSpec("learning.events", 10_000, "CLM retraining runs and shadow tests")
SIZING_POLICY = StreamSpec("policy.sizing", 10_000, "Sizing policies the rl-trainer promoted")
LEDGER_EVENTS = StreamSpec(
    "ledger.events", 50_000, "Differences between the venue's income history and the journal"
)
META_REGIME = StreamSpec(
    "meta.regime", 50_000, "Trend and volatility regime changes per symbol and market"
)
UNIVERSE_UPDATED = StreamSpec(
    "universe.updated", 10_000, "The ranked symbol universe, with each symbol's reasons"
)
EXCHANGE_NORMALIZED = StreamSpec(
    "exchange.normalized", 200_000, "Other venues' klines, tickers and funding (Bybit, Coinbase)"
)

CATALOGUE: dict[str, StreamSpec] = {
    spec.name: spec
    for spec in (
        MARKET_TICK,
        MARKET_KLINES,
        FEATURES,
        AI_SIGNAL,
        AI_DECISION,
        TRADE_INTENT,
        APPLY_PLAN,
        RISK_DECISION,
        RISK_EVENTS,
        APPLY_RESULT,
        HARVEST_INTENT,
        EXECUTION_RESULT,
        TRADE_CLOSED,
        PORTFOLIO_STATE,
        RL_REWARDS,
        POLICY_UPDATED,
        RECONCILE_EVENTS,
        AI_SUPERVISOR,
        LEARNING_EVENTS,
        SIZING_POLICY,
        LEDGER_EVENTS,
        META_REGIME,
        UNIVERSE_UPDATED,
        EXCHANGE_NORMALIZED,
        DLQ,
    )
}


def spec_for(name: str) -> StreamSpec:
    """Look a stream up by short name (``market.tick``) or key (``quantum:stream:market.tick``)."""
    short = name.removeprefix(PREFIX)
    try:
        return CATALOGUE[short]
    except KeyError:
        known = ", ".join(sorted(CATALOGUE))
        raise KeyError(f"unknown stream {name!r}; the catalogue has: {known}") from None
