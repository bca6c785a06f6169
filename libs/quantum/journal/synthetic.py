"""A deterministic stream of valid fleet events for a journal: tests, benchmarks, demos.

Each round trip is what the fleet publishes for one trade: a signal with member votes, a
decision, an approved risk decision with an exit plan, the entry order, its ack and fill, a
portfolio snapshot with the open position, the exit fill, the closed trade and a flat
snapshot. Prices follow a seeded random walk so statistics and the equity curve are not
degenerate. The events are built with the real contracts, so they validate as on the bus.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from quantum.bus.envelope import Envelope, new_envelope
from quantum.contracts.events import (
    Decision,
    ExecutionReport,
    ExitPlan,
    MemberVote,
    OrderRequest,
    Plan,
    PortfolioState,
    PositionView,
    RiskDecision,
    RiskEvent,
    Signal,
    TakeProfit,
    TradeClosed,
)

MEMBERS = ("xgboost", "lightgbm", "nhits", "patchtst")
BAR_MS = 300_000


@dataclass
class _Book:
    balance: float = 10_000.0
    realised: float = 0.0
    fees: float = 0.0


def round_trips(count: int, *, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
                start_ms: int = 1_756_684_800_000, seed: int = 7,
                open_last: bool = False) -> Iterator[Envelope[Any]]:
    """Events of ``count`` trades, in publication order. With ``open_last`` the last trade
    stays open (its closing events are not emitted), so the book shows a position."""
    rng = random.Random(seed)
    book = _Book()
    prices = {symbol: 100.0 * (index + 1) for index, symbol in enumerate(symbols)}
    for number in range(count):
        symbol = symbols[number % len(symbols)]
        prices[symbol] *= 1 + rng.gauss(0, 0.01)
        ts = start_ms + number * 4 * BAR_MS
        last = open_last and number == count - 1
        yield from _trade(number, symbol, prices[symbol], ts, rng, book, keep_open=last)


def _trade(number: int, symbol: str, price: float, ts: int, rng: random.Random, book: _Book,
           *, keep_open: bool) -> Iterator[Envelope[Any]]:
    side: Literal["LONG", "SHORT"] = "LONG" if rng.random() < 0.5 else "SHORT"
    votes = tuple(MemberVote(member=m, direction=_vote(side, rng),
                             confidence=round(0.5 + rng.random() / 2, 3)) for m in MEMBERS)
    confidence = round(0.66 + rng.random() * 0.3, 3)
    signal = new_envelope(Signal(
        symbol=symbol, bar_time=ts, model="ensemble", model_version="v1", direction=side,
        confidence=confidence, prob_long=confidence if side == "LONG" else 1 - confidence,
        prob_short=confidence if side == "SHORT" else 1 - confidence, votes=votes, price=price,
        atr=price * 0.01), ts=ts, source="ai-engine", key=f"signal-{number}")
    yield signal
    intent_id = f"intent-{number}"
    yield new_envelope(Decision(symbol=symbol, bar_time=ts, direction=side,
                                confidence=confidence, intent_id=intent_id,
                                model_version="v1"), ts=ts, source="ai-engine", cause=signal)
    sign = 1 if side == "LONG" else -1
    stop = price * (1 - sign * 0.01)
    exit_plan = ExitPlan(profile="DEFAULT", stop_loss=stop, atr=price * 0.01, take_profits=(
        TakeProfit(price=price * (1 + sign * 0.015), fraction=0.4),
        TakeProfit(price=price * (1 + sign * 0.03), fraction=0.6)))
    quantity = round(1000 / price, 6)
    plan = Plan(plan_id=f"plan-{number}", intent_id=intent_id, symbol=symbol, side=side,
                quantity=quantity, reference_price=price, notional=quantity * price, leverage=5,
                confidence=confidence, size_multiplier=1.0, bar_time=ts, exit_plan=exit_plan)
    decision = new_envelope(RiskDecision(plan_id=plan.plan_id, approved=True, reasons=(),
                                         plan=plan, policy_version=1),
                            ts=ts, source="risk-governor", cause=signal)
    yield decision
    order_side: Literal["BUY", "SELL"] = "BUY" if side == "LONG" else "SELL"
    entry_id = f"entry-{number}"
    order = new_envelope(OrderRequest(
        client_order_id=entry_id, plan_id=plan.plan_id, symbol=symbol, side=order_side,
        position_side=side, quantity=quantity, reference_price=price, leverage=5,
        reduce_only=False, reason="entry", bar_time=ts, exit_plan=exit_plan),
        ts=ts, source="apply-layer", cause=decision)
    yield order
    position_id = f"position-{number}"
    fee = quantity * price * 0.0004
    yield _report(order, "ack", entry_id, plan.plan_id, symbol, order_side, side, None, 0.0,
                  0.0, 0.0, False, "entry", ts + 50)
    yield _report(order, "fill", entry_id, plan.plan_id, symbol, order_side, side, position_id,
                  quantity, price, fee, False, "entry", ts + 120, exit_plan=exit_plan,
                  position_quantity=quantity)
    book.fees += fee
    mark = price * (1 + rng.gauss(0, 0.004))
    unrealised = sign * (mark - price) * quantity
    position = PositionView(position_id=position_id, symbol=symbol, side=side, quantity=quantity,
                            entry_price=price, mark_price=mark, leverage=5,
                            margin=quantity * price / 5,
                            liquidation_price=price * (1 - sign * 0.19),
                            unrealised_pnl=unrealised, opened_ts=ts + 120)
    yield _portfolio(order, book, ts + BAR_MS, (position,), unrealised, key="open")
    if keep_open:
        return
    exit_price = price * (1 + rng.gauss(0.0005 * sign, 0.012))
    exit_fee = quantity * exit_price * 0.0004
    exit_side: Literal["BUY", "SELL"] = "SELL" if side == "LONG" else "BUY"
    exit_ts = ts + 3 * BAR_MS
    exit_id = f"exit-{number}"
    yield _report(order, "fill", exit_id, plan.plan_id, symbol, exit_side, side, position_id,
                  quantity, exit_price, exit_fee, True, "take_profit", exit_ts)
    gross = sign * (exit_price - price) * quantity
    net = gross - fee - exit_fee
    book.realised += net
    book.balance += net
    book.fees += exit_fee
    yield new_envelope(TradeClosed(
        trade_id=position_id, symbol=symbol, side=side, quantity=quantity, entry_price=price,
        exit_price=exit_price, entry_ts=ts + 120, exit_ts=exit_ts, gross_pnl=gross,
        fees=fee + exit_fee, funding=0.0, net_pnl=net,
        r_multiple=gross / (abs(price - stop) * quantity),
        exit_reason="take_profit" if net > 0 else "stop_loss",
        holding_seconds=(exit_ts - ts - 120) / 1000, leverage=5),
        ts=exit_ts, source="execution", cause=order, key="closed")
    yield _portfolio(order, book, exit_ts, (), 0.0, key="flat")
    if number % 50 == 49:
        yield new_envelope(RiskEvent(kind="daily_drawdown", severity="warning",
                                     detail="drawdown warning", data={"equity": book.balance}),
                           ts=exit_ts, source="risk-governor", cause=order, key="alert")


def _vote(side: Literal["LONG", "SHORT"], rng: random.Random) -> Literal["LONG", "SHORT", "FLAT"]:
    return side if rng.random() < 0.75 else "FLAT"


def _report(cause: Envelope[Any], kind: Literal["ack", "fill", "reject", "cancel"],
            client_order_id: str, plan_id: str, symbol: str, side: Literal["BUY", "SELL"],
            position_side: Literal["LONG", "SHORT"], position_id: str | None, quantity: float,
            price: float, fee: float, reduce_only: bool, reason: str, ts: int,
            exit_plan: ExitPlan | None = None, position_quantity: float = 0.0) -> Envelope[Any]:
    report = ExecutionReport(
        kind=kind, client_order_id=client_order_id, plan_id=plan_id, symbol=symbol, side=side,
        position_side=position_side, position_id=position_id, quantity=quantity, price=price,
        fee=fee, reduce_only=reduce_only, reason=reason, ts=ts, exit_plan=exit_plan,
        position_quantity=position_quantity)
    return new_envelope(report, ts=ts, source="execution", cause=cause,
                        key=f"{kind}-{client_order_id}")


def _portfolio(cause: Envelope[Any], book: _Book, ts: int, positions: tuple[PositionView, ...],
               unrealised: float, key: str) -> Envelope[Any]:
    gross = sum(p.quantity * p.mark_price for p in positions)
    net = sum((1 if p.side == "LONG" else -1) * p.quantity * p.mark_price for p in positions)
    state = PortfolioState(ts=ts, balance=book.balance, equity=book.balance + unrealised,
                           unrealised_pnl=unrealised, realised_pnl=book.realised,
                           fees_paid=book.fees, funding_paid=0.0, gross_exposure=gross,
                           net_exposure=net, positions=positions, pending_orders=0)
    return new_envelope(state, ts=ts, source="execution", cause=cause, key=key)
