"""The one interface both venues implement: the paper exchange and Binance futures.

execution holds a :class:`Venue` built by the factory its settings name
(:mod:`quantum.exchange.venues`) and never asks which one it has: what differs between
venues (where fills are booked, how a lost book comes back) it asks the venue. Event
handlers (``submit``, ``harvest``, ``on_tick``) only *record*: the paper exchange settles
in event time, and the live venue records the order intent so that it is committed with
the runner's acks *before* anything is sent. ``poll`` runs between events (the runner's
idle hook) and is where a live venue talks to the exchange; it returns what happened
meanwhile. ``snapshot`` is the venue's whole state, written in the same transaction as
the acks, so a ``kill -9`` at any point loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from quantum.contracts.events import (
    BookSource,
    BookSummary,
    ExecutionReport,
    ExitLevels,
    HarvestIntent,
    OrderRequest,
    PortfolioState,
    ReconcileEvent,
    Tick,
    TradeClosed,
)

Reports = list[ExecutionReport]
Trades = list[TradeClosed]


class Venue(Protocol):
    """What execution needs from an exchange."""

    positions: dict[str, Any]  # open positions by symbol

    def knows(self, client_order_id: str) -> bool:
        """Whether this client order id is in the duplicate guard (kept for a time window)."""

    def refuse(self, order: OrderRequest, ts: int, reason: str, message: str) -> ExecutionReport:
        """Reject an entry before it reaches the book; its id joins the duplicate guard."""

    def submit(self, order: OrderRequest, ts: int) -> Reports:
        """Accept an entry order (idempotent per client order id)."""

    def harvest(self, intent: HarvestIntent) -> tuple[Reports, Trades]:
        """Accept a reduce-only exit of a share of a position."""

    def on_tick(self, tick: Tick) -> tuple[Reports, Trades, bool]:
        """A price update; returns reports, closed trades and whether balances changed."""

    def cancel_all(self, ts: int) -> Reports:
        """Cancel every order not yet filled (end of a replay)."""

    @property
    def resting_entries(self) -> bool:
        """Whether a limit (maker) entry rests on the book, waiting for a fill."""

    def cancel_resting(self, ts: int, reason: str) -> Reports:
        """Cancel every resting limit entry (the emergency stop blocks new risk)."""

    def set_levels(self, levels: ExitLevels) -> None:
        """The exit-brain's current stop and take-profit for a position."""

    def on_reconcile(self, event: ReconcileEvent) -> tuple[Reports, Trades]:
        """A difference reconcile found between the exchange and this venue's book."""

    def poll(self, now_ms: int, may_send: Callable[[], bool] = lambda: True
             ) -> tuple[Reports, Trades, bool]:
        """Between events: talk to the exchange, return what happened. ``may_send`` is asked
        before each order or cancel request (the instance's lease, ``Ports.standing``);
        false: nothing more is sent this turn (queries and the user stream go on)."""

    def portfolio(self) -> PortfolioState:
        """Balance, equity, exposure and positions now."""

    def snapshot(self) -> dict[str, Any]:
        """The whole state, JSON-able, for the state key."""

    def restored(self, snapshot: dict[str, Any] | None) -> Venue:
        """This venue holding a committed ``snapshot`` (live: reloaded in place, keeping its
        adapter, clock offset and user stream; paper: a new book built from it)."""

    def rebuild_from_exchange(self) -> bool:
        """The state key is gone: empty the book and rebuild it from the exchange (in
        ``poll``, before anything is sent). False when there is no exchange to rebuild from
        (paper: execution takes the book from the venue's local record instead)."""

    def book_summary(self, source: BookSource, detail: str) -> BookSummary:
        """What the book holds now, for the ``book`` report of a book started without state."""

    @property
    def rebuild_pending(self) -> bool:
        """The rebuild from the exchange has not happened yet: no entry may pass
        (execution refuses it with ``book_not_rebuilt``)."""

    @property
    def rebuilt(self) -> BookSummary | None:
        """The book the last rebuild from the exchange produced, until it is taken."""

    def take_rebuilt(self) -> BookSummary | None:
        """:attr:`rebuilt`, then cleared: execution announces a rebuild once."""

    @property
    def settles_in_handlers(self) -> bool:
        """Whether fills are booked in the event handlers (paper, in event time) rather than
        in ``poll`` (live): a harvest then changes the portfolio at once."""

    @property
    def levels_in_state(self) -> bool:
        """Whether the exit-brain's levels are part of ``snapshot`` (live: the protective
        orders resting on the exchange follow them), so ``set_levels`` changes the state."""

    def take_income(self) -> list[dict[str, Any]]:
        """Income the venue booked since the last call, as
        :class:`~quantum.exchange.income.IncomeRecord` documents, then forgotten (paper:
        execution appends them to the income trail; live: none, the exchange keeps its own
        income history)."""

    def close(self) -> None:
        """Release what the venue holds open (the user data stream)."""
