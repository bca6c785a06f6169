"""The exchange's side of the ranking: listing, 24 h statistics and book, over python-binance.

Three public requests per ranking (no keys needed): ``exchangeInfo`` (weight 1),
``ticker/24hr`` for all symbols (40) and ``ticker/bookTicker`` for all (5), through the
venue's REST adapter (:class:`~quantum.exchange.venues.binance.http.BinanceFutures`), so the
weight budget, bans and timeouts are the ones every Binance call of the fleet obeys.

A candidate is a USDⓈ-M perpetual in status ``TRADING`` whose symbol fits the fleet's
contracts. Its spread is the book's (``(ask − bid) / mid``); its history is the larger of
the fleet's own bars and the bars since the exchange listed it (``onboardDate``); its
volatility the fleet's realised figure when the fleet streams it, else the 24 h range
``ln(high / low)``; completeness the fleet's when it has streamed the symbol, else not
judged. A malformed row is skipped and counted, never fatal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from quantum.universe.bars import BarMeasures
from quantum.universe.ranking import DAY_MS, Candidate

log = structlog.get_logger(component="universe-exchange")

SYMBOL = re.compile(r"^[A-Z0-9]{1,16}(USDT|USDC)$")


@dataclass(frozen=True, slots=True)
class Listed:
    symbol: str
    onboard_ms: int | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the exchange said at ``fetched_ms`` (its server time when known)."""

    fetched_ms: int
    listed: dict[str, Listed]
    quote_volume: dict[str, float]
    range_log: dict[str, float]  # ln(high / low) over 24 h
    spread_bps: dict[str, float]
    skipped: int


def _float(row: Mapping[str, Any], key: str) -> float | None:
    try:
        value = float(row[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _listed(listing: list[Any]) -> tuple[dict[str, Listed], int]:
    listed: dict[str, Listed] = {}
    skipped = 0
    for row in listing:
        symbol = row.get("symbol") if isinstance(row, dict) else None
        if not isinstance(symbol, str):
            skipped += 1
            continue
        if row.get("status") != "TRADING" or row.get("contractType") != "PERPETUAL" \
                or not SYMBOL.fullmatch(symbol):
            continue  # delivery contracts, settling or halted symbols: not candidates
        onboard = row.get("onboardDate")
        listed[symbol] = Listed(symbol, int(onboard) if isinstance(onboard, int) else None)
    return listed, skipped


def _rows(answer: list[Any], listed: Mapping[str, Listed]
          ) -> tuple[list[dict[str, Any]], int]:
    """The rows of listed symbols; rows that are not objects are counted as skipped."""
    rows = [row for row in answer if isinstance(row, dict) and row.get("symbol") in listed]
    return rows, sum(1 for row in answer if not isinstance(row, dict))


def parse(listing: list[Any], tickers: list[Any], books: list[Any],
          fetched_ms: int) -> Snapshot:
    """The three answers as one snapshot; rows that do not parse are skipped (counted)."""
    listed, skipped = _listed(listing)
    volume: dict[str, float] = {}
    ranges: dict[str, float] = {}
    rows, bad = _rows(tickers, listed)
    skipped += bad
    for row in rows:
        quote, high, low = (_float(row, k) for k in ("quoteVolume", "highPrice", "lowPrice"))
        if quote is None or quote < 0:
            skipped += 1
            continue
        volume[row["symbol"]] = quote
        if high is not None and low is not None and high >= low > 0:
            ranges[row["symbol"]] = math.log(high / low)
    spreads: dict[str, float] = {}
    rows, bad = _rows(books, listed)
    skipped += bad
    for row in rows:
        bid, ask = _float(row, "bidPrice"), _float(row, "askPrice")
        if bid is None or ask is None or not ask >= bid > 0:
            skipped += 1
            continue
        spreads[row["symbol"]] = (ask - bid) / ((ask + bid) / 2) * 1e4
    return Snapshot(fetched_ms, listed, volume, ranges, spreads, skipped)


def fetch(adapter: Any, now_ms: int) -> Snapshot:
    """Ask the exchange (raises the adapter's errors: unavailable, rate limited, rejected)."""
    return parse(adapter.listing(), adapter.tickers_24h(), adapter.book_tickers(), now_ms)


def candidates(snapshot: Snapshot, bars: Mapping[str, BarMeasures],
               results: Mapping[str, tuple[float, int]], interval_ms: int
               ) -> dict[str, Candidate]:
    """Every listed symbol with the exchange's figures and the fleet's own where it has them."""
    out: dict[str, Candidate] = {}
    for symbol, listed in snapshot.listed.items():
        own = bars.get(symbol)
        age = None
        listed_bars = 0
        if listed.onboard_ms is not None:
            age = max(0.0, (snapshot.fetched_ms - listed.onboard_ms) / DAY_MS)
            listed_bars = max(0, (snapshot.fetched_ms - listed.onboard_ms) // interval_ms)
        volatility = own.volatility_24h if own is not None and own.history_bars > 1 \
            else snapshot.range_log.get(symbol)
        spread = snapshot.spread_bps.get(symbol)
        pnl, trades = results.get(symbol, (0.0, 0))
        out[symbol] = Candidate(
            symbol=symbol, quote_volume_24h=snapshot.quote_volume.get(symbol, 0.0),
            spread_bps=spread, spread_source="book" if spread is not None else "none",
            volatility_24h=volatility, listing_age_days=age,
            history_bars=max(listed_bars, own.history_bars if own is not None else 0),
            completeness=own.completeness if own is not None
            and own.history_bars * interval_ms >= DAY_MS else None,
            realised_pnl=pnl, trades=trades,
        )
    return out
