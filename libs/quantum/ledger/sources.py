"""Where a venue's income history is read, by the venue's name (``QT_EXCHANGE``).

* ``binance``: ``GET /fapi/v1/income`` through the venue's REST adapter
  (:meth:`~quantum.exchange.venues.binance.http.BinanceFutures.income`: python-binance's
  ``futures_income_history``, with its weight, clock and timeouts);
* ``paper``: the paper venue's income trail, which execution appends to in the commit that
  holds the book (``quantum:state:execution:income``, newest first), read through the state
  port in pages until the window's start.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from quantum.bus.ports import State
from quantum.exchange.income import IncomeRecord
from quantum.exchange.venues.binance.factory import http_client
from quantum.exchange.venues.binance.filters import ExchangeDataError
from quantum.exchange.venues.binance.http import BinanceFutures
from quantum.registry.fleet import EXECUTION_INCOME_KEY

PAGE = 2000


class IncomeSource(Protocol):
    """A venue's income history."""

    @property
    def name(self) -> str:
        """The venue's name, for reports."""

    def income(self, start_ms: int, end_ms: int) -> list[IncomeRecord]:
        """Records booked from ``start_ms`` to ``end_ms`` (inclusive), oldest first."""


class PaperIncome:
    """The paper venue's trail in Redis."""

    name = "paper"

    def __init__(self, state: State, key: str = EXECUTION_INCOME_KEY) -> None:
        self.state = state
        self.key = key

    def income(self, start_ms: int, end_ms: int) -> list[IncomeRecord]:
        found: list[IncomeRecord] = []
        offset = 0
        while True:
            page = self.state.items(self.key, offset, offset + PAGE - 1)
            older = False
            for raw in page:
                try:
                    record = IncomeRecord.from_document(orjson.loads(raw))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise ExchangeDataError(f"paper income trail {self.key}: unreadable "
                                            f"record ({e!r})") from None
                if record.time_ms < start_ms:
                    older = True
                elif record.time_ms <= end_ms:
                    found.append(record)
            if older or len(page) < PAGE:
                break
            offset += PAGE
        return sorted(found, key=lambda r: (r.time_ms, r.tran_id))


class BinanceIncome:
    """Binance's income history over the REST adapter (the server clock synced once)."""

    name = "binance"

    def __init__(self, adapter: BinanceFutures) -> None:
        self.adapter = adapter
        self._synced = False

    def income(self, start_ms: int, end_ms: int) -> list[IncomeRecord]:
        if not self._synced:
            self.adapter.sync_time()
            self._synced = True
        return self.adapter.income(start_ms, end_ms)


def income_source(settings: Any, state: State | None) -> IncomeSource:
    """The income history of the venue ``settings.exchange`` names (the paper venue's is in
    the fleet's Redis: ``state`` is required for it)."""
    if settings.exchange == "binance":
        return BinanceIncome(http_client(settings))
    if state is None:
        raise ValueError("the paper venue's income history is read from the fleet's Redis")
    return PaperIncome(state)
