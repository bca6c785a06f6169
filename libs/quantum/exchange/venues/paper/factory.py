"""How execution builds the paper venue from its settings (``QT_EXCHANGE=paper``).

Keys read: ``initial_balance``, ``taker_fee``, ``maker_fee``, ``slippage_bps``,
``maintenance_margin_rate`` (the economics of a fresh book), ``book_record_dir`` and
``redis_url`` (where the book's durable local record lives, and whose fleet it belongs to).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from quantum.exchange.venues.paper.config import PaperConfig
from quantum.exchange.venues.paper.execution import PaperExchange
from quantum.exchange.venues.paper.record import BookRecord


def default_record_dir() -> Path:
    """``$STATE_DIRECTORY/execution`` under systemd (``StateDirectory=``), else ``var/state``."""
    state_directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state_directory) / "execution" if state_directory else Path("var/state")


def paper_config(settings: Any, *, order_retention_ms: int) -> PaperConfig:
    """The economics of a fresh book, from execution's settings."""
    return PaperConfig(initial_balance=settings.initial_balance, taker_fee=settings.taker_fee,
                       maker_fee=settings.maker_fee,
                       slippage_bps=settings.slippage_bps,
                       maintenance_margin_rate=settings.maintenance_margin_rate,
                       order_retention_ms=order_retention_ms)


class PaperVenueFactory:
    """The paper exchange, by the name ``paper``."""

    name = "paper"

    def create(self, settings: Any, *, order_retention_ms: int) -> PaperExchange:
        """A fresh paper book."""
        return PaperExchange.fresh(paper_config(settings, order_retention_ms=order_retention_ms))

    def local_record(self, settings: Any) -> BookRecord:
        """The book's durable local record: ``book_record_dir``, else :func:`default_record_dir`;
        one file per fleet (named after its Redis)."""
        directory = (Path(settings.book_record_dir) if settings.book_record_dir
                     else default_record_dir())
        return BookRecord(directory, settings.redis_url)
