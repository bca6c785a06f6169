"""execution: places orders on the exchange and owns positions, balance and closed trades.

Consumes entry orders (``apply.result``, from the apply-layer only), reduce-only exits
(``harvest.intent``) and prices (``market.tick``). Publishes every ack, fill and reject to
``execution.result``, each closed trade to ``trade.closed`` and the portfolio after every
change to ``portfolio.state``; the exchange's full state and the portfolio are written to
their state keys in the same transaction as the acks, so a crash loses nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis
from prometheus_client import Counter, Gauge

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import (
    EndOfData,
    ExecutionReport,
    HarvestIntent,
    OrderRequest,
    Tick,
    TradeClosed,
)
from quantum.contracts.streams import EXECUTION_RESULT, PORTFOLIO_STATE, TRADE_CLOSED
from quantum.exchange.paper import PaperExchange
from quantum.registry.fleet import EXECUTION_KEY, PORTFOLIO_KEY
from services.execution.config import Settings

NAME = "execution"

REPORTS = Counter("quantum_execution_reports_total", "Execution reports", ["kind"])
TRADES = Counter("quantum_execution_trades_closed_total", "Trades closed", ["reason"])
EQUITY = Gauge("quantum_portfolio_equity", "Equity in USDT")
BALANCE = Gauge("quantum_portfolio_balance", "Wallet balance in USDT")
OPEN_POSITIONS = Gauge("quantum_portfolio_open_positions", "Open positions")


class Execution(ServiceBase):
    name = NAME

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.exchange = self._fresh()
        self._state_dirty = True

    def _fresh(self) -> PaperExchange:
        s = self.settings
        return PaperExchange(initial_balance=s.initial_balance, taker_fee=s.taker_fee,
                             slippage_bps=s.slippage_bps,
                             maintenance_margin_rate=s.maintenance_margin_rate)

    def restore(self, client: redis.Redis) -> None:
        raw = client.get(EXECUTION_KEY)
        self.exchange = PaperExchange.from_snapshot(orjson.loads(raw)) if raw else self._fresh()
        self._state_dirty = raw is None  # publish the initial portfolio on a fresh start

    def _publish(self, out: Outbox, cause: Envelope[Any], reports: list[ExecutionReport],
                 trades: list[TradeClosed], changed: bool) -> None:
        for i, report in enumerate(reports):
            out.emit(EXECUTION_RESULT, new_envelope(report, ts=report.ts, source=NAME, cause=cause,
                                                    key=i))
            REPORTS.labels(report.kind).inc()
        for trade in trades:
            out.emit(TRADE_CLOSED, new_envelope(trade, ts=trade.exit_ts, source=NAME, cause=cause))
            TRADES.labels(trade.exit_reason).inc()
        if changed or reports or trades:
            # One snapshot per change, never per batch: how events happen to be batched must
            # not change what is published (replays at any speed publish the same events).
            portfolio = self.exchange.portfolio()
            out.emit(PORTFOLIO_STATE, new_envelope(portfolio, ts=portfolio.ts, source=NAME,
                                                   cause=cause, key="portfolio"))
            self._state_dirty = True

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        payload = event.payload
        if isinstance(payload, Tick):
            reports, trades, changed = self.exchange.on_tick(payload)
            self._publish(out, event, reports, trades, changed)
            if payload.symbol in self.exchange.positions:
                self._state_dirty = True  # marked to market
        elif isinstance(payload, OrderRequest):
            self._publish(out, event, self.exchange.submit(payload, event.ts), [], False)
        elif isinstance(payload, HarvestIntent):
            reports, trades = self.exchange.harvest(payload)
            self._publish(out, event, reports, trades, True)
        elif isinstance(payload, EndOfData):
            self._publish(out, event, self.exchange.cancel_all(payload.last_ts), [], True)

    def on_batch_end(self, out: Outbox) -> None:
        if not self._state_dirty:
            return
        self._state_dirty = False
        portfolio = self.exchange.portfolio()
        out.put_state(EXECUTION_KEY, self.exchange.snapshot())
        out.put_state(PORTFOLIO_KEY, portfolio.model_dump(mode="json"))
        EQUITY.set(portfolio.equity)
        BALANCE.set(portfolio.balance)
        OPEN_POSITIONS.set(len(portfolio.positions))

    def on_idle(self, out: Outbox, now: float) -> None:
        if self._state_dirty:
            self.on_batch_end(out)
