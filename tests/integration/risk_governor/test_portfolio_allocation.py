"""Portfolio allocation on a real Redis (issue 15 item 4): the governor refuses a plan that
would take a correlated cluster past its limit (clusters from the rolling correlation of
real bars, data/sample, BTC and ETH 2025-10-01), refuses entries in a regime the policy
blocks (the meta-regime's calls of the crash of 2025-10-10) and fails closed without a
regime; and when a market move takes the book past a limit, the balancer proposes a
reduce-only cut that reaches the exit-brain over the bus and leaves as a harvest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from quantum.bus.envelope import Envelope, decode, derive_id, new_envelope
from quantum.bus.runner import publish
from quantum.contracts.events import (
    EVENT_TYPES,
    ExecutionReport,
    HarvestIntent,
    Kline,
    Plan,
    PortfolioState,
    PositionView,
    RiskDecision,
    RiskEvent,
    Tick,
)
from quantum.contracts.streams import EXECUTION_RESULT, HARVEST_INTENT, MARKET_TICK, RISK_EVENTS
from quantum.exits.profiles import exit_plan
from quantum.registry.fleet import META_REGIME_KEY, PORTFOLIO_KEY
from quantum.replay.data import load_symbol
from quantum.risk import policy
from quantum.risk.portfolio import clusters

EQUITY = 10_000.0


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def klines(sample_dir: Path, symbols: tuple[str, ...], start: str, end: str) -> list[Any]:
    series = {s: load_symbol(sample_dir, s, start_ms=ms(start), end_ms=ms(end)) for s in symbols}
    out = []
    for i, open_time in enumerate(series[symbols[0]].open_time):
        for symbol in symbols:
            o, h, low, c, v = (float(x) for x in series[symbol].ohlcv[i])
            kline = Kline(symbol=symbol, interval="5m", open_time=int(open_time),
                          close_time=int(open_time) + 299_999, open=o, high=h, low=low,
                          close=c, volume=v, source="replay")
            out.append(new_envelope(kline, ts=kline.close_time, source="market-publisher",
                                    key=f"{symbol}:{open_time}"))
    return out


def position(symbol: str, side: str, notional: float, entry: float, mark: float) -> PositionView:
    quantity = notional / entry
    sign = 1.0 if side == "LONG" else -1.0
    return PositionView(position_id=f"pos-{symbol}", symbol=symbol, side=side,  # type: ignore[arg-type]
                        quantity=quantity, entry_price=entry, mark_price=mark, leverage=5,
                        margin=notional / 5, liquidation_price=0.0,
                        unrealised_pnl=sign * quantity * (mark - entry), opened_ts=0)


def book(r: redis.Redis, ts: int, positions: list[PositionView]) -> PortfolioState:
    unrealised = sum(p.unrealised_pnl for p in positions)
    gross = sum(p.quantity * p.mark_price for p in positions)
    net = sum((1 if p.side == "LONG" else -1) * p.quantity * p.mark_price for p in positions)
    state = PortfolioState(ts=ts, balance=EQUITY, equity=EQUITY + unrealised,
                           unrealised_pnl=unrealised, realised_pnl=0.0, fees_paid=0.0,
                           funding_paid=0.0, gross_exposure=gross, net_exposure=net,
                           positions=tuple(positions), pending_orders=0)
    r.set(PORTFOLIO_KEY, state.model_dump_json())
    return state


def plan(symbol: str, side: str, notional: float, price: float, bar_time: int) -> Envelope[Any]:
    atr = price * 0.004
    plan_id = derive_id("test", symbol, side, bar_time)
    payload = Plan(plan_id=plan_id, intent_id=plan_id, symbol=symbol, side=side,  # type: ignore[arg-type]
                   quantity=notional / price, reference_price=price, notional=notional,
                   leverage=5, confidence=0.8, size_multiplier=1.0, bar_time=bar_time,
                   exit_plan=exit_plan("DEFAULT", side, price, 1.5 * atr, atr))
    return new_envelope(payload, ts=bar_time, source="intent-bridge", key=plan_id)


def decision(out: Any) -> RiskDecision:
    return next(e.payload for _, e in out.events if isinstance(e.payload, RiskDecision))


def test_a_plan_over_the_cluster_limit_is_refused(
        r: redis.Redis, on_bus: Callable[..., Any], sample_dir: Path) -> None:
    bars = klines(sample_dir, ("BTCUSDT", "ETHUSDT"), "2025-10-01T00:00:00",
                  "2025-10-02T00:00:00")
    last = bars[-1].payload
    btc, eth = (next(e.payload.close for e in reversed(bars) if e.payload.symbol == s)
                for s in ("BTCUSDT", "ETHUSDT"))
    book(r, last.close_time, [position("BTCUSDT", "LONG", 8_000.0, btc, btc)])
    policy.write(r, {"risk.max_cluster_exposure": 1.0, "risk.max_correlation": 1.0},
                 by="test", reason="a cluster limit alone")
    governor = on_bus("risk-governor", clock="event")
    governor.commit(governor.deliver(*bars))
    returns = governor.service.returns
    assert clusters(returns, ("BTCUSDT", "ETHUSDT"), 0.7, 288) == {
        "BTCUSDT": "BTCUSDT", "ETHUSDT": "BTCUSDT"}  # BTC and ETH move together on 5m bars

    refused = decision(governor.deliver(plan("ETHUSDT", "LONG", 4_000.0, eth, last.close_time)))
    assert not refused.approved and refused.reasons == ("cluster_concentration",)
    hedge = decision(governor.deliver(plan("ETHUSDT", "SHORT", 4_000.0, eth,
                                           last.close_time)))
    assert hedge.approved  # a short of the twin lowers the cluster's net exposure

    policy.write(r, {"risk.cluster_correlation": 0.99}, by="test", reason="no clusters")
    governor = on_bus("risk-governor", clock="event")
    alone = decision(governor.deliver(plan("ETHUSDT", "LONG", 4_000.0, eth, last.close_time)))
    assert alone.approved  # ETH is a cluster of its own: 0.4x equity is within the limit

    policy.write(r, {"risk.max_symbol_exposure": 0.3}, by="test", reason="per symbol")
    single = decision(governor.deliver(plan("XRPUSDT", "LONG", 4_000.0, 2.5, last.close_time)))
    assert single.reasons == ("symbol_concentration",)


def test_entries_are_refused_in_a_blocked_regime_and_without_one(
        r: redis.Redis, on_bus: Callable[..., Any], sample_dir: Path) -> None:
    bars = klines(sample_dir, ("BTCUSDT", "ETHUSDT", "SOLUSDT"), "2025-10-09T00:00:00",
                  "2025-10-10T21:30:00")
    regimes = on_bus("meta-regime", clock="event")
    regimes.commit(regimes.deliver(*bars))
    last = bars[-1].payload
    book(r, last.close_time, [])
    governor = on_bus("risk-governor", clock="event")
    governor.commit(governor.deliver(*bars[-3:]))
    crash_plan = plan("BTCUSDT", "LONG", 1_000.0, last.close, last.close_time)

    def decide() -> RiskDecision:  # a governor restored from Redis: no reservation held
        return decision(on_bus("risk-governor", clock="event").deliver(crash_plan))

    assert decide().approved  # the defaults do not use regimes

    policy.write(r, {"regime.block_entries_in": ["high_vol"]}, by="test",
                 reason="no entries in high volatility")
    assert decide().reasons == ("regime_blocked",)
    policy.write(r, {"regime.block_entries_in": [], "regime.gross_budget": {"high_vol": 0.05}},
                 by="test", reason="a small budget in high volatility")
    assert decide().reasons == ("regime_budget",)
    r.delete(META_REGIME_KEY)
    assert decide().reasons == ("regime_unavailable",)


def test_a_market_move_past_a_limit_is_cut_through_the_exit_brain(
        r: redis.Redis, on_bus: Callable[..., Any], sample_dir: Path) -> None:
    """A short of BTC at 9,000 USD on 10,000 USD equity (0.9x, inside a 1.0x symbol limit);
    the price rises 12 %: the position is 10,080 USD on 8,920 USD equity (1.13x, past the
    limit and its 10 % tolerance). The governor proposes cutting it back to 1.0x, the
    exit-brain, reading ``risk.events`` on the bus, sends the reduce-only harvest."""
    bars = klines(sample_dir, ("BTCUSDT",), "2025-10-01T00:00:00", "2025-10-01T02:00:00")
    entry = bars[0].payload.close
    policy.write(r, {"risk.max_symbol_exposure": 1.0}, by="test", reason="tight")
    book(r, bars[0].payload.close_time, [position("BTCUSDT", "SHORT", 9_000.0, entry, entry)])
    governor = on_bus("risk-governor", clock="event")
    governor.commit(governor.deliver(*bars[:12]))
    assert r.xlen(RISK_EVENTS.key) == 0 if r.exists(RISK_EVENTS.key) else True  # within

    moved = entry * 1.12
    state = book(r, bars[12].payload.close_time,
                 [position("BTCUSDT", "SHORT", 9_000.0, entry, moved)])
    governor.commit(governor.deliver(bars[12]))
    [(_, fields)] = r.xrange(RISK_EVENTS.key)
    proposal: RiskEvent = decode(fields, EVENT_TYPES).payload
    assert proposal.kind == "exposure_rebalance"
    exposure = state.positions[0].quantity * moved / state.equity
    assert abs(float(proposal.data["exposure"]) - exposure) < 1e-9 and exposure > 1.1  # type: ignore[arg-type]
    assert abs(float(proposal.data["fraction"]) - (1 - 1.0 / exposure)) < 1e-9  # type: ignore[arg-type]
    assert proposal.data["reasons"] == "symbol_concentration"
    governor.commit(governor.deliver(bars[13]))  # the cut is on its way: not proposed again
    assert r.xlen(RISK_EVENTS.key) == 1

    pos = state.positions[0]
    fill = ExecutionReport(kind="fill", client_order_id="entry-1", plan_id="plan-1",
                           symbol="BTCUSDT", side="SELL", position_side="SHORT",
                           position_id=pos.position_id, quantity=pos.quantity, price=entry,
                           fee=0.0, reduce_only=False, reason="entry", ts=bars[0].ts,
                           exit_plan=exit_plan("DEFAULT", "SHORT", entry, entry * 0.5,
                                               entry * 0.3),
                           position_quantity=pos.quantity)
    tick = Tick(symbol="BTCUSDT", ts=bars[12].ts, open=moved, high=moved, low=moved,
                close=moved, mark_price=moved, source="replay")
    publish(r, [(EXECUTION_RESULT, new_envelope(fill, ts=fill.ts, source="execution",
                                                key="fill")),
                (MARKET_TICK, new_envelope(tick, ts=tick.ts, source="market-publisher",
                                           key="tick"))])
    brain = on_bus("exit-brain", clock="event", block_ms=20)
    brain.runner.run(max_idle_turns=2)
    harvests = [decode(f, EVENT_TYPES).payload for _, f in r.xrange(HARVEST_INTENT.key)]
    [cut] = [h for h in harvests if isinstance(h, HarvestIntent)]
    assert cut.reason == "rebalance" and cut.position_id == pos.position_id
    assert abs(cut.fraction - float(proposal.data["fraction"])) < 1e-9  # type: ignore[arg-type]
    assert cut.side == "SHORT" and cut.price == moved
