"""One comparison: read the journal and the venue's income for a window, then compare.

The window is the last ``lookback_days`` UTC days (today included) up to ``settle_ms``
before now. The journal is read without migrating it (the journal service owns its schema):
closed trades from the window's start (less the matching slack, so a trade that closed just
before it still takes its own income) and the open positions of the newest portfolio
snapshot; the venue's income from the earliest entry among them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quantum.exchange.venues.binance.filters import ExchangeDataError
from quantum.exchange.venues.binance.http import ExchangeRejected, ExchangeUnavailable
from quantum.exchange.venues.binance.weights import RateLimited
from quantum.journal import books
from quantum.journal.database import UNAVAILABLE_ERRORS
from quantum.ledger.compare import DAY_MS, Comparison, Tolerance, compare, day_start_ms
from quantum.ledger.sources import IncomeSource

if TYPE_CHECKING:
    from sqlalchemy import Engine

VENUE_ERRORS = (ExchangeUnavailable, RateLimited, ExchangeRejected, ExchangeDataError)


class LedgerUnavailable(RuntimeError):
    """The comparison could not be made: ``source`` (``journal`` or the venue's name) did
    not answer, or answered what cannot be read."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.source = source
        self.detail = detail


def run(engine: Engine, source: IncomeSource, *, now_ms: int, lookback_days: int,
        settle_ms: int, tolerance: Tolerance, slack_ms: int, asset: str = "USDT",
        symbol: str | None = None) -> Comparison:
    """Compare the window ending ``settle_ms`` before ``now_ms``; ``symbol``: only its trades
    and income. Raises :class:`LedgerUnavailable`."""
    until_ms = now_ms - settle_ms
    since_ms = day_start_ms(now_ms) - (lookback_days - 1) * DAY_MS
    try:
        trades = books.closed_trades(engine, symbol=symbol, since_ms=since_ms - slack_ms)
        open_positions = books.open_positions(engine, symbol=symbol)
    except UNAVAILABLE_ERRORS as e:
        message = str(getattr(e, "orig", None) or e).strip().splitlines()
        raise LedgerUnavailable("journal", f"{type(e).__name__}: "
                                f"{message[0] if message else ''}"[:300]) from None
    starts = [int(t["entry_ts"]) for t in trades] + [int(p["opened_ts"]) for p in open_positions]
    start_ms = min([since_ms, *starts]) - slack_ms
    try:
        income = source.income(start_ms, now_ms)
    except VENUE_ERRORS as e:
        raise LedgerUnavailable(source.name, str(e)[:300]) from None
    if symbol is not None:
        income = [record for record in income if record.symbol == symbol]
    return compare(trades, open_positions, income, since_ms=since_ms, until_ms=until_ms,
                   tolerance=tolerance, slack_ms=slack_ms, asset=asset)
