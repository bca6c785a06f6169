"""The one interface both venues implement: the paper exchange and Binance futures.

execution holds a :class:`Venue` chosen by name from its settings and never asks which one
it has. Event handlers (``submit``, ``harvest``, ``on_tick``) only *record*: the paper
exchange settles in event time, and the live venue records the order intent so that it is
committed with the runner's acks *before* anything is sent. ``poll`` runs between events
(the runner's idle hook) and is where a live venue talks to the exchange; it returns what
happened meanwhile. ``snapshot`` is the venue's whole state, written in the same
transaction as the acks, so a ``kill -9`` at any point loses nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

from quantum.contracts.events import (
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

    def set_levels(self, levels: ExitLevels) -> None:
        """The exit-brain's current stop and take-profit for a position."""

    def on_reconcile(self, event: ReconcileEvent) -> tuple[Reports, Trades]:
        """A difference reconcile found between the exchange and this venue's book."""

    def poll(self, now_ms: int) -> tuple[Reports, Trades, bool]:
        """Between events: talk to the exchange, return what happened."""

    def portfolio(self) -> PortfolioState:
        """Balance, equity, exposure and positions now."""

    def snapshot(self) -> dict[str, Any]:
        """The whole state, JSON-able, for the state key."""
