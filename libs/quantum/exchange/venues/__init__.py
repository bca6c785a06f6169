"""Venues by name: the registry execution resolves ``QT_EXCHANGE`` against.

Each venue is a package of the same shape (``config``, ``execution``, ``factory``, and
whatever transport it needs: Binance adds ``http``, ``ws``, ``market``, ``filters`` and
``weights``); its factory is listed here under the name the setting takes. A service asks
:func:`venue_for` for the factory and the venue it builds for what it needs (the
:class:`~quantum.exchange.base.Venue` interface), never which venue it has.
"""

from __future__ import annotations

from typing import Any, Protocol

from quantum.config import ConfigError
from quantum.exchange.base import Venue
from quantum.exchange.venues.binance.factory import BinanceVenueFactory
from quantum.exchange.venues.paper.factory import PaperVenueFactory
from quantum.exchange.venues.paper.record import BookRecord


class VenueFactory(Protocol):
    """Builds one venue from a service's settings."""

    @property
    def name(self) -> str:
        """The ``QT_EXCHANGE`` value that selects it."""

    def create(self, settings: Any, *, order_retention_ms: int) -> Venue:
        """A venue with an empty book; ``order_retention_ms`` (event time) bounds its
        duplicate guard of client order ids."""

    def local_record(self, settings: Any) -> BookRecord | None:
        """The durable local record a book lost with its state key comes back from, or None
        when the venue rebuilds its book from the exchange."""


VENUES: dict[str, VenueFactory] = {
    factory.name: factory for factory in (PaperVenueFactory(), BinanceVenueFactory())
}


def venue_for(name: str) -> VenueFactory:
    """The factory of the venue called ``name``; an unknown name stops the service."""
    try:
        return VENUES[name]
    except KeyError:
        raise ConfigError(
            f"bad setting QT_EXCHANGE: unknown venue {name!r}; known venues: "
            f"{', '.join(sorted(VENUES))}"
        ) from None


def build_venue(settings: Any, *, order_retention_ms: int) -> Venue:
    """The venue ``settings.exchange`` names, with an empty book."""
    return venue_for(settings.exchange).create(settings, order_retention_ms=order_retention_ms)
