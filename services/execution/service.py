"""execution: places orders on the exchange and owns positions, balance and closed trades.

Consumes entry orders (``apply.result``, from the apply-layer only), reduce-only exits and
the exit-brain's protective levels (``harvest.intent``), prices (``market.tick``) and
reconcile's findings (``reconcile.events``). Publishes every ack, fill and reject to
``execution.result``, each closed trade to ``trade.closed`` and the portfolio after every
change to ``portfolio.state``; the venue's full state and the portfolio are written to
their state keys in the same transaction as the acks, so a crash loses nothing.

The venue is chosen by name (``QT_EXCHANGE``): the paper exchange settles in event time
inside the handlers; Binance futures only records intents in the handlers (committed
before anything is sent) and talks to the exchange from the idle hook
(:mod:`quantum.exchange.live`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis
from prometheus_client import Counter, Gauge

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import (
    EndOfData,
    ExecutionReport,
    ExitLevels,
    HarvestIntent,
    OrderRequest,
    ReconcileEvent,
    Tick,
    TradeClosed,
)
from quantum.contracts.streams import EXECUTION_RESULT, PORTFOLIO_STATE, TRADE_CLOSED
from quantum.exchange.base import Venue
from quantum.exchange.binance import BinanceFutures
from quantum.exchange.live import LiveConfig, LiveExchange
from quantum.exchange.paper import PaperExchange
from quantum.exchange.weights import WeightBudget
from quantum.registry.fleet import EXECUTION_KEY, PORTFOLIO_KEY
from services.execution.config import Settings

NAME = "execution"
TESTNET_WS = "wss://stream.binancefuture.com/"
MAINNET_WS = "wss://fstream.binance.com/"

REPORTS = Counter("quantum_execution_reports_total", "Execution reports", ["kind"])
TRADES = Counter("quantum_execution_trades_closed_total", "Trades closed", ["reason"])
EQUITY = Gauge("quantum_portfolio_equity", "Equity in USDT")
BALANCE = Gauge("quantum_portfolio_balance", "Wallet balance in USDT")
OPEN_POSITIONS = Gauge("quantum_portfolio_open_positions", "Open positions")


def binance_adapter(settings: Settings) -> BinanceFutures:
    """The adapter from settings (keys read here and nowhere else)."""
    return BinanceFutures(
        api_key=settings.binance_api_key.get_secret_value(),
        api_secret=settings.binance_api_secret.get_secret_value(),
        testnet=settings.binance_testnet, rest_url=settings.binance_rest_url or None,
        recv_window_ms=settings.binance_recv_window_ms, timeout_s=settings.binance_timeout_s,
        budget=WeightBudget(limit=settings.binance_weight_limit),
    )


class Execution(ServiceBase):
    name = NAME

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.venue: Venue = self._fresh()
        self._state_dirty = True
        self._sequence = 0

    def _fresh(self) -> Venue:
        s = self.settings
        if s.exchange == "binance":
            return LiveExchange(binance_adapter(s), LiveConfig(
                margin_type=s.binance_margin_type, taker_fee=s.taker_fee,
                poll_interval_s=s.binance_poll_interval_s,
                maintenance_margin_rate=s.maintenance_margin_rate,
                ws_url=s.binance_ws_url or (TESTNET_WS if s.binance_testnet else MAINNET_WS),
                protective_orders=s.protective_orders,
            ))
        return PaperExchange(initial_balance=s.initial_balance, taker_fee=s.taker_fee,
                             slippage_bps=s.slippage_bps,
                             maintenance_margin_rate=s.maintenance_margin_rate)

    def restore(self, client: redis.Redis) -> None:
        raw = client.get(EXECUTION_KEY)
        if isinstance(self.venue, LiveExchange):
            # Keep the adapter, its clock offset and user stream; reload the book.
            self.venue.restore(orjson.loads(raw) if raw else None)
        else:
            self.venue = PaperExchange.from_snapshot(orjson.loads(raw)) if raw else self._fresh()
        self._state_dirty = raw is None  # publish the initial portfolio on a fresh start

    def close(self) -> None:
        if isinstance(self.venue, LiveExchange):
            self.venue.close()

    def _publish(self, out: Outbox, cause: Envelope[Any] | None, reports: list[ExecutionReport],
                 trades: list[TradeClosed], changed: bool) -> None:
        for i, report in enumerate(reports):
            key: object = i if cause is not None else (
                f"{report.client_order_id}:{report.kind}:{report.ts}:{self._next()}")
            out.emit(EXECUTION_RESULT, new_envelope(report, ts=report.ts, source=NAME, cause=cause,
                                                    key=key))
            REPORTS.labels(report.kind).inc()
        for trade in trades:
            out.emit(TRADE_CLOSED, new_envelope(trade, ts=trade.exit_ts, source=NAME, cause=cause,
                                                key=trade.trade_id))
            TRADES.labels(trade.exit_reason).inc()
        if changed or reports or trades:
            # One snapshot per change, never per batch: how events happen to be batched must
            # not change what is published (replays at any speed publish the same events).
            portfolio = self.venue.portfolio()
            key = "portfolio" if cause is not None else f"portfolio:{self._next()}"
            out.emit(PORTFOLIO_STATE, new_envelope(portfolio, ts=portfolio.ts, source=NAME,
                                                   cause=cause, key=key))
            self._state_dirty = True

    def _next(self) -> str:
        """A unique key for events with no cause (idle-hook reports of a live venue)."""
        self._sequence += 1
        return f"{time.time_ns()}:{self._sequence}"

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        payload = event.payload
        if isinstance(payload, Tick):
            reports, trades, changed = self.venue.on_tick(payload)
            self._publish(out, event, reports, trades, changed)
            if payload.symbol in self.venue.positions:
                self._state_dirty = True  # marked to market
        elif isinstance(payload, OrderRequest):
            self._publish(out, event, self.venue.submit(payload, event.ts), [], False)
            self._state_dirty = True  # the intent is committed before it is sent
        elif isinstance(payload, HarvestIntent):
            reports, trades = self.venue.harvest(payload)
            self._publish(out, event, reports, trades, isinstance(self.venue, PaperExchange))
            self._state_dirty = True
        elif isinstance(payload, ExitLevels):
            self.venue.set_levels(payload)
            self._state_dirty = isinstance(self.venue, LiveExchange) or self._state_dirty
        elif isinstance(payload, ReconcileEvent):
            reports, trades = self.venue.on_reconcile(payload)
            self._publish(out, event, reports, trades, bool(reports or trades))
            self._state_dirty = True
        elif isinstance(payload, EndOfData):
            self._publish(out, event, self.venue.cancel_all(payload.last_ts), [], True)

    def on_batch_end(self, out: Outbox) -> None:
        if not self._state_dirty:
            return
        self._state_dirty = False
        portfolio = self.venue.portfolio()
        out.put_state(EXECUTION_KEY, self.venue.snapshot())
        out.put_state(PORTFOLIO_KEY, portfolio.model_dump(mode="json"))
        EQUITY.set(portfolio.equity)
        BALANCE.set(portfolio.balance)
        OPEN_POSITIONS.set(len(portfolio.positions))

    def on_idle(self, out: Outbox, now: float) -> None:
        reports, trades, changed = self.venue.poll(int(now * 1000))
        if reports or trades or changed:
            self._publish(out, None, reports, trades, changed)
            self._state_dirty = True
        if self._state_dirty:
            self.on_batch_end(out)
