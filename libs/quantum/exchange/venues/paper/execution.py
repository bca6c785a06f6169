"""The paper exchange: USDⓈ-M futures economics, deterministic, in event time.

* An entry order is acknowledged at once and filled at the **open of the next tick** of its
  symbol (the first tick later than the bar that produced it), with adverse slippage and
  the taker fee. It is rejected (Binance code -2019) when free margin cannot cover it.
* A **maker entry** (``LIMIT`` with ``time_in_force`` ``GTX``, post-only) is rejected when
  placed if it would take liquidity (a buy at or above the last price, a sell at or below
  it: Binance code -5022); otherwise it rests. It fills only when a later bar trades
  *through* its price (a buy: the bar's low strictly below the limit; a sell: the high
  strictly above; a touch is not a fill), in full, at the limit price, without slippage,
  with the maker fee. Not filled by the tick at ``expires_at`` (event time) it is cancelled
  (``cancel``, reason ``expired``); resting orders are part of the book's state, so they
  survive a restart like everything else.
* A reduce-only exit fills at the price it names (the level the exit-brain saw touched):
  take-profits as limit orders without slippage, everything else as market orders with it.
* Funding is charged at each settlement a tick carries: ``quantity × mark × rate``, paid by
  longs and received by shorts when the rate is positive.
* Isolated margin: ``margin = notional / leverage``; the liquidation price is where the
  loss eats the margin down to the maintenance margin; a tick through it liquidates.
* One position per symbol (one-way mode). ``balance`` is the wallet: initial balance plus
  realised PnL minus fees and funding; ``equity`` adds unrealised PnL.

* **Income** is booked as Binance's income history books it (:mod:`quantum.exchange.income`):
  ``COMMISSION`` (negative) per fill, ``REALIZED_PNL`` per closing fill, ``FUNDING_FEE`` per
  settlement, each with the position id as its trade; execution appends them to the income
  trail (``quantum:state:execution:income``) in the commit that holds the book, which the
  ledger compares with the journal as it compares Binance's own history.

Every figure a closed trade reports (fees, funding, PnL) is counted once, on that trade, so
``final balance = initial balance + Σ net PnL`` holds exactly up to float rounding.

Duplicate guard: every client order id submitted is kept, with its event time, for
``order_retention_ms`` of event time (execution sets it longer than the approval freshness
bound, so a copy of an order arriving later than that is refused as stale before it gets
here) and persisted with the book. It is bounded by time, not by a count: a burst of
orders cannot push out an id that is still inside its freshness window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from quantum.contracts.events import (
    POST_ONLY_REJECTED,
    BookSource,
    BookSummary,
    ExecutionReport,
    ExitLevels,
    ExitPlan,
    HarvestIntent,
    OrderRequest,
    PortfolioState,
    PositionView,
    ReconcileEvent,
    Tick,
    TradeClosed,
)
from quantum.exchange.income import COMMISSION, FUNDING_FEE, REALIZED_PNL, IncomeRecord
from quantum.exchange.position import Position
from quantum.exchange.venues.paper.config import DEFAULT_ORDER_RETENTION_MS, PaperConfig

DUST = 1e-9  # a remaining quantity below this share of the original closes the position
MARGIN_INSUFFICIENT = -2019
REDUCE_ONLY_REJECTED = -2022
POST_ONLY_MESSAGE = ("Due to the order could not be executed as maker, the Post Only order "
                     "will be rejected.")


@dataclass
class PendingOrder:
    order: dict[str, Any]  # OrderRequest as JSON-able dict
    submitted_ts: int


@dataclass
class PaperExchange:
    initial_balance: float
    taker_fee: float
    slippage_bps: float
    maintenance_margin_rate: float
    balance: float = 0.0
    realised_pnl: float = 0.0
    fees_paid: float = 0.0
    funding_paid: float = 0.0
    positions: dict[str, Position] = field(default_factory=dict)  # by symbol
    pending: dict[str, list[PendingOrder]] = field(default_factory=dict)  # by symbol
    last_tick_ts: dict[str, int] = field(default_factory=dict)
    last_price: dict[str, float] = field(default_factory=dict)
    seen_orders: dict[str, int] = field(default_factory=dict)  # client order id -> event ms
    clock_ms: int = 0
    order_retention_ms: int = DEFAULT_ORDER_RETENTION_MS
    maker_fee: float = 0.0002  # after the defaulted fields: snapshots without it still load
    # Income booked and not yet taken by execution (which appends it to the income trail in
    # the commit that holds this book), and the count that numbers the records.
    income_pending: list[dict[str, Any]] = field(default_factory=list)
    income_seq: int = 0

    def __post_init__(self) -> None:
        if self.balance == 0.0 and not self.positions:
            self.balance = self.initial_balance
        if isinstance(self.seen_orders, list):  # a snapshot from before the ids had times
            self.seen_orders = dict.fromkeys(self.seen_orders, self.clock_ms)

    # --- persistence ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The book as plain data, equal to ``dataclasses.asdict`` of it but built field by
        field: it is taken after every batch that changed the book, and ``asdict``'s deep
        copies cost more than everything else execution does in a backtest. Nested
        documents (exit plans, order requests) are shared, not copied: the book never
        mutates them, and the snapshot is serialised before the next event is handled."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["positions"] = {s: dict(vars(p)) for s, p in self.positions.items()}
        data["pending"] = {s: [{"order": o.order, "submitted_ts": o.submitted_ts}
                               for o in orders] for s, orders in self.pending.items()}
        for name in ("last_tick_ts", "last_price", "seen_orders"):
            data[name] = dict(data[name])
        data["income_pending"] = list(self.income_pending)
        return data

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> PaperExchange:
        data = dict(data)
        positions = {s: Position(**p) for s, p in data.pop("positions").items()}
        pending = {
            s: [PendingOrder(**o) for o in orders] for s, orders in data.pop("pending").items()
        }
        return cls(**data, positions=positions, pending=pending)

    @classmethod
    def fresh(cls, config: PaperConfig) -> PaperExchange:
        """An empty book with these economics (the wallet at its initial balance)."""
        return cls(initial_balance=config.initial_balance, taker_fee=config.taker_fee,
                   maker_fee=config.maker_fee, slippage_bps=config.slippage_bps,
                   maintenance_margin_rate=config.maintenance_margin_rate,
                   order_retention_ms=config.order_retention_ms)

    def restored(self, snapshot: dict[str, Any] | None) -> PaperExchange:
        """A new book from a committed snapshot (its economics included); this book's
        duplicate-guard retention applies to it."""
        if snapshot is None:
            raise ValueError("the paper book cannot be restored from an empty state")
        venue = PaperExchange.from_snapshot(snapshot)
        venue.order_retention_ms = self.order_retention_ms
        return venue

    # --- what execution asks of a venue ---------------------------------------------------

    @property
    def settles_in_handlers(self) -> bool:
        """Fills are booked in the handlers, in event time: a harvest settles at once."""
        return True

    @property
    def levels_in_state(self) -> bool:
        """The exit-brain's levels are not kept: nothing rests on a paper book."""
        return False

    @property
    def rebuild_pending(self) -> bool:
        """Never: the paper book is not rebuilt from an exchange."""
        return False

    @property
    def rebuilt(self) -> BookSummary | None:
        return None

    def take_rebuilt(self) -> BookSummary | None:
        return None

    def rebuild_from_exchange(self) -> bool:
        """The paper book is its own exchange: there is nothing to rebuild it from (execution
        takes it from its local record instead)."""
        return False

    def book_summary(self, source: BookSource, detail: str) -> BookSummary:
        return BookSummary(source=source, balance=self.balance,
                           positions=tuple(sorted(self.positions)),
                           open_orders=sum(len(v) for v in self.pending.values()),
                           detail=detail)

    def close(self) -> None:
        """Nothing to release."""
        return None

    # --- income (what the wallet booked, as Binance's income history records it) ----------

    def _book_income(self, symbol: str, income_type: str, amount: float, ts: int,
                     trade_id: str) -> None:
        if amount == 0.0:
            return
        self.income_seq += 1
        self.income_pending.append(IncomeRecord(
            symbol=symbol, income_type=income_type, amount=amount, asset="USDT", time_ms=ts,
            tran_id=f"p{ts}-{self.income_seq}", trade_id=trade_id).document())

    def take_income(self) -> list[dict[str, Any]]:
        """The income booked since the last call (``REALIZED_PNL`` and ``COMMISSION`` per
        fill, ``FUNDING_FEE`` per settlement; signed as the wallet saw them), then cleared."""
        taken, self.income_pending = self.income_pending, []
        return taken

    # --- orders ---------------------------------------------------------------------------

    def _slip(self, price: float, side: str) -> float:
        factor = self.slippage_bps / 10_000
        return price * (1 + factor) if side == "BUY" else price * (1 - factor)

    def liquidation_price(self, position: Position) -> float:
        move = 1.0 / position.leverage - self.maintenance_margin_rate
        return max(0.0, position.entry_price * (1 - position.sign * move))

    def used_margin(self) -> float:
        return sum(p.margin for p in self.positions.values())

    def equity(self) -> float:
        return self.balance + sum(p.unrealised() for p in self.positions.values())

    def knows(self, client_order_id: str) -> bool:
        """Whether an order with this client id was submitted inside the retention window."""
        return client_order_id in self.seen_orders

    def _forget_old_orders(self) -> None:
        horizon = self.clock_ms - self.order_retention_ms
        if self.seen_orders and min(self.seen_orders.values()) < horizon:
            self.seen_orders = {k: t for k, t in self.seen_orders.items() if t >= horizon}

    def refuse(self, order: OrderRequest, ts: int, reason: str, message: str) -> ExecutionReport:
        """A reject for an entry execution refused before the book saw it; its id is kept,
        so a copy of it arriving later is a duplicate, not a new order."""
        self.clock_ms = max(self.clock_ms, ts)
        self.seen_orders[order.client_order_id] = ts
        self._forget_old_orders()
        return self._report("reject", order, None, 0.0, 0.0, 0.0, ts, reason=reason,
                            message=message)

    def takes_liquidity(self, order: OrderRequest) -> bool:
        """Whether a limit order would match at once against the last price (a buy at or
        above it, a sell at or below): what a post-only order must not do."""
        assert order.limit_price is not None
        last = self.last_price.get(order.symbol, order.reference_price)
        return order.limit_price >= last if order.side == "BUY" else order.limit_price <= last

    def submit(self, order: OrderRequest, ts: int) -> list[ExecutionReport]:
        """Queue an entry order for the next tick, or rest a post-only limit order (refused
        if it would take liquidity); duplicates (same client id) are ignored."""
        if order.client_order_id in self.seen_orders:
            return []
        self.clock_ms = max(self.clock_ms, ts)
        self.seen_orders[order.client_order_id] = ts
        self._forget_old_orders()
        if order.order_type == "LIMIT" and self.takes_liquidity(order):
            return [self._report("reject", order, None, 0.0, 0.0, 0.0, ts, reason=order.reason,
                                 code=POST_ONLY_REJECTED, message=POST_ONLY_MESSAGE)]
        self.pending.setdefault(order.symbol, []).append(
            PendingOrder(order.model_dump(mode="json"), order.bar_time)
        )
        return [self._report("ack", order, None, 0.0, 0.0, 0.0, ts, reason=order.reason)]

    def _report(
        self,
        kind: str,
        order: OrderRequest,
        position: Position | None,
        quantity: float,
        price: float,
        fee: float,
        ts: int,
        *,
        reason: str,
        code: int | None = None,
        message: str | None = None,
    ) -> ExecutionReport:
        return ExecutionReport(
            kind=kind,
            client_order_id=order.client_order_id,
            plan_id=order.plan_id,
            symbol=order.symbol,
            side=order.side,
            position_side=order.position_side,
            position_id=position.position_id if position else None,
            quantity=quantity,
            price=price,
            fee=fee,
            reduce_only=order.reduce_only,
            reason=reason,
            code=code,
            message=message,
            ts=ts,
            exit_plan=order.exit_plan if kind == "fill" else None,
            position_quantity=position.quantity if position else 0.0,
            liquidation_price=self.liquidation_price(position) if position else 0.0,
        )

    def _fill_entry(self, order: OrderRequest, tick: Tick) -> list[ExecutionReport]:
        """A market entry at the tick's open (slipped, taker fee), or a resting limit entry
        the tick traded through, at its limit (maker fee)."""
        if order.limit_price is not None:
            price, rate = order.limit_price, self.maker_fee
        else:
            price, rate = self._slip(tick.open, order.side), self.taker_fee
        notional = order.quantity * price
        fee = notional * rate
        free = self.equity() - self.used_margin()
        refusal = None
        if notional / order.leverage + fee > free:
            refusal = (MARGIN_INSUFFICIENT, "Margin is insufficient.")
        elif order.symbol in self.positions:
            refusal = (REDUCE_ONLY_REJECTED, "position already open")
        if refusal is not None:
            code, message = refusal
            return [self._report("reject", order, None, 0.0, 0.0, 0.0, tick.ts, reason="entry",
                                 code=code, message=message)]
        plan: ExitPlan | None = order.exit_plan
        stop_distance = abs(order.reference_price - plan.stop_loss) if plan else 0.0
        position = Position(
            position_id=order.plan_id,
            symbol=order.symbol,
            side=order.position_side,
            quantity=order.quantity,
            initial_quantity=order.quantity,
            entry_price=price,
            leverage=order.leverage,
            opened_ts=tick.ts,
            stop_distance=stop_distance,
            exit_plan=plan.model_dump(mode="json") if plan else None,
            fees=fee,
            mark_price=price,
        )
        self.positions[order.symbol] = position
        self.balance -= fee
        self.fees_paid += fee
        self._book_income(order.symbol, COMMISSION, -fee, tick.ts, position.position_id)
        return [
            self._report(
                "fill", order, position, order.quantity, price, fee, tick.ts, reason="entry"
            )
        ]

    def on_tick(self, tick: Tick) -> tuple[list[ExecutionReport], list[TradeClosed], bool]:
        """Fill queued orders, settle funding, liquidate, mark to market.

        Returns the reports, the trades closed, and whether balances changed (fills,
        funding, liquidation) so the caller can publish the portfolio."""
        if tick.ts <= self.last_tick_ts.get(tick.symbol, -1):
            return [], [], False  # a redelivered or out-of-order tick: already applied
        self.last_tick_ts[tick.symbol] = tick.ts
        self.last_price[tick.symbol] = tick.close
        self.clock_ms = max(self.clock_ms, tick.ts)
        reports: list[ExecutionReport] = []
        closed: list[TradeClosed] = []
        changed = False
        waiting = self.pending.pop(tick.symbol, [])
        for pending in waiting:
            if pending.submitted_ts >= tick.ts:
                self.pending.setdefault(tick.symbol, []).append(pending)
                continue
            order = OrderRequest.model_validate(pending.order)
            if order.limit_price is not None and not self._traded_through(order, tick):
                if order.expires_at is not None and tick.ts >= order.expires_at:
                    reports.append(self._report("cancel", order, None, 0.0, 0.0, 0.0, tick.ts,
                                                reason="expired",
                                                message="not filled before it expired"))
                else:
                    self.pending.setdefault(tick.symbol, []).append(pending)
                continue
            reports.extend(self._fill_entry(order, tick))
            changed = True
        position = self.positions.get(tick.symbol)
        if position is None:
            return reports, closed, changed
        if tick.funding_rate is not None:
            mark = tick.mark_price or tick.close
            payment = position.sign * position.quantity * mark * tick.funding_rate
            position.funding += payment
            self.balance -= payment
            self.funding_paid += payment
            self._book_income(position.symbol, FUNDING_FEE, -payment, tick.ts,
                              position.position_id)
            changed = True
        liquidation = self.liquidation_price(position)
        breached = tick.low <= liquidation if position.side == "LONG" else tick.high >= liquidation
        if breached:
            result = self._reduce(position, 1.0, liquidation, tick.ts, "liquidation", slip=False)
            reports.append(result[0])
            closed.extend(result[1])
            return reports, closed, True
        position.mark_price = tick.mark_price or tick.close
        return reports, closed, changed

    @staticmethod
    def _traded_through(order: OrderRequest, tick: Tick) -> bool:
        """Whether the bar traded through a resting limit: strictly beyond it, so that the
        queue ahead of the order at that price was certainly filled."""
        assert order.limit_price is not None
        if order.side == "BUY":
            return tick.low < order.limit_price
        return tick.high > order.limit_price

    def _reduce(
        self,
        position: Position,
        fraction: float,
        price: float,
        ts: int,
        reason: str,
        *,
        slip: bool,
        client_order_id: str | None = None,
    ) -> tuple[ExecutionReport, list[TradeClosed]]:
        side = "SELL" if position.side == "LONG" else "BUY"
        fill_price = self._slip(price, side) if slip else price
        quantity = position.quantity * fraction
        if position.quantity - quantity <= position.initial_quantity * DUST:
            quantity = position.quantity
        pnl = position.sign * (fill_price - position.entry_price) * quantity
        fee = quantity * fill_price * self.taker_fee
        position.quantity -= quantity
        position.realised += pnl
        position.fees += fee
        position.exit_value += fill_price * quantity
        position.exit_quantity += quantity
        position.mark_price = fill_price
        self.balance += pnl - fee
        self.realised_pnl += pnl
        self.fees_paid += fee
        self._book_income(position.symbol, REALIZED_PNL, pnl, ts, position.position_id)
        self._book_income(position.symbol, COMMISSION, -fee, ts, position.position_id)
        order = OrderRequest(
            client_order_id=client_order_id
            or f"qx-{position.position_id.replace('-', '')[:19]}-{ts}",
            plan_id=position.position_id,
            symbol=position.symbol,
            side=side,
            position_side=position.side,
            quantity=quantity,
            reference_price=price,
            leverage=position.leverage,
            reduce_only=True,
            reason=reason,
            bar_time=ts,
        )
        report = self._report("fill", order, position, quantity, fill_price, fee, ts, reason=reason)
        trades: list[TradeClosed] = []
        if position.quantity <= 0:
            del self.positions[position.symbol]
            trades.append(self._closed(position, ts, reason))
        return report, trades

    def _closed(self, position: Position, ts: int, reason: str) -> TradeClosed:
        net = position.realised - position.fees - position.funding
        risk = position.initial_quantity * position.stop_distance
        return TradeClosed(
            trade_id=position.position_id,
            symbol=position.symbol,
            side=position.side,
            quantity=position.initial_quantity,
            entry_price=position.entry_price,
            exit_price=position.exit_value / position.exit_quantity,
            entry_ts=position.opened_ts,
            exit_ts=ts,
            gross_pnl=position.realised,
            fees=position.fees,
            funding=position.funding,
            net_pnl=net,
            r_multiple=net / risk if risk > 0 else None,
            exit_reason=reason,
            holding_seconds=max(0.0, (ts - position.opened_ts) / 1000),
            leverage=position.leverage,
        )

    def harvest(self, intent: HarvestIntent) -> tuple[list[ExecutionReport], list[TradeClosed]]:
        """Reduce-only exit; ignored (reported as a reject) when the position is gone."""
        self.clock_ms = max(self.clock_ms, intent.ts)
        position = self.positions.get(intent.symbol)
        if position is None or position.position_id != intent.position_id:
            order = OrderRequest(
                client_order_id=f"qx-{intent.harvest_id.replace('-', '')[:32]}",
                plan_id=intent.position_id,
                symbol=intent.symbol,
                side="SELL" if intent.side == "LONG" else "BUY",
                position_side=intent.side,
                quantity=1.0,
                reference_price=intent.price,
                leverage=1,
                reduce_only=True,
                reason=intent.reason,
                bar_time=intent.ts,
            )
            return [
                self._report(
                    "reject",
                    order,
                    None,
                    0.0,
                    0.0,
                    0.0,
                    intent.ts,
                    reason=intent.reason,
                    code=REDUCE_ONLY_REJECTED,
                    message="no such open position",
                )
            ], []
        slip = not intent.reason.startswith("take_profit")
        report, trades = self._reduce(
            position,
            intent.fraction,
            intent.price,
            intent.ts,
            intent.reason,
            slip=slip,
            client_order_id=f"qx-{intent.harvest_id.replace('-', '')[:32]}",
        )
        return [report], trades

    def cancel_all(self, ts: int) -> list[ExecutionReport]:
        reports = []
        for orders in self.pending.values():
            for pending in orders:
                order = OrderRequest.model_validate(pending.order)
                reports.append(
                    self._report("cancel", order, None, 0.0, 0.0, 0.0, ts, reason="end_of_data")
                )
        self.pending.clear()
        return reports

    @property
    def resting_entries(self) -> bool:
        """Whether a limit entry rests on the book (waiting to be traded through)."""
        return any(p.order.get("order_type") == "LIMIT"
                   for orders in self.pending.values() for p in orders)

    def cancel_resting(self, ts: int, reason: str) -> list[ExecutionReport]:
        """Cancel every resting limit entry (the emergency stop blocks new risk); market
        entries waiting for their next tick are left to fill as before."""
        self.clock_ms = max(self.clock_ms, ts)
        reports = []
        for symbol in sorted(self.pending):
            kept = []
            for pending in self.pending[symbol]:
                if pending.order.get("order_type") != "LIMIT":
                    kept.append(pending)
                    continue
                order = OrderRequest.model_validate(pending.order)
                reports.append(self._report("cancel", order, None, 0.0, 0.0, 0.0, ts,
                                            reason=reason, message="cancelled: " + reason))
            if kept:
                self.pending[symbol] = kept
            else:
                del self.pending[symbol]
        return reports

    def set_levels(self, levels: ExitLevels) -> None:
        """Nothing rests on a paper book: the exit-brain's harvests are the only exits."""
        return None

    def on_reconcile(
        self, event: ReconcileEvent
    ) -> tuple[list[ExecutionReport], list[TradeClosed]]:
        """The paper book is its own exchange: there is nothing to reconcile against."""
        return [], []

    def poll(self, now_ms: int, may_send: Callable[[], bool] = lambda: True
             ) -> tuple[list[ExecutionReport], list[TradeClosed], bool]:
        """Paper fills happen on ticks, in event time; nothing arrives between events."""
        return [], [], False

    def portfolio(self) -> PortfolioState:
        views = tuple(
            PositionView(
                position_id=p.position_id,
                symbol=p.symbol,
                side=p.side,
                quantity=p.quantity,
                entry_price=p.entry_price,
                mark_price=p.mark_price,
                leverage=p.leverage,
                margin=p.margin,
                liquidation_price=self.liquidation_price(p),
                unrealised_pnl=p.unrealised(),
                opened_ts=p.opened_ts,
            )
            for p in sorted(self.positions.values(), key=lambda p: p.symbol)
        )
        unrealised = sum(v.unrealised_pnl for v in views)
        return PortfolioState(
            ts=self.clock_ms,
            balance=self.balance,
            equity=self.balance + unrealised,
            unrealised_pnl=unrealised,
            realised_pnl=self.realised_pnl,
            fees_paid=self.fees_paid,
            funding_paid=self.funding_paid,
            gross_exposure=sum(abs(p.notional) for p in self.positions.values()),
            net_exposure=sum(p.sign * p.notional for p in self.positions.values()),
            positions=views,
            pending_orders=sum(len(v) for v in self.pending.values()),
            pending_plans=tuple(p.order["plan_id"] for symbol in sorted(self.pending)
                                for p in self.pending[symbol]),
        )
