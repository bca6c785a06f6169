"""Live state for the dashboard, read from Redis without joining any consumer group.

The dashboard observes; it is no consumer of the bus. It reads the owners' state keys
(``quantum:state:portfolio`` from execution, ``quantum:state:ess`` from the risk-governor,
``quantum:state:journal`` from the journal) and the newest entries of the market streams
with ``XREVRANGE``, so it adds no consumer group the registry would have to declare and
can never hold entries back from a service.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from quantum.contracts.events import PortfolioState
from quantum.contracts.streams import AI_SUPERVISOR, MARKET_KLINES, MARKET_TICK
from quantum.registry.fleet import JOURNAL_KEY, PORTFOLIO_KEY

PRICE_SCAN = 2_000  # newest tick entries looked at for the latest price of each symbol
CANDLE_PAGE = 2_000
CANDLE_SCAN_LIMIT = 100_000  # entries looked at, at most, to gather one symbol's candles


def _fields(entry: Any) -> tuple[str, dict[bytes, bytes]]:
    entry_id, fields = entry
    return (entry_id.decode() if isinstance(entry_id, bytes) else entry_id), fields


def portfolio(client: redis.Redis) -> PortfolioState | None:
    raw = client.get(PORTFOLIO_KEY)
    return PortfolioState.model_validate_json(raw) if raw is not None else None


def journal_health(client: redis.Redis) -> dict[str, Any] | None:
    raw = client.get(JOURNAL_KEY)
    if raw is None:
        return None
    document = orjson.loads(raw)
    return document if isinstance(document, dict) else None


def ess_state(client: redis.Redis) -> dict[str, Any]:
    """The emergency stop state as :mod:`quantum.risk.ess` reads it (imported lazily: the
    dashboard must start even where the risk package changes under it)."""
    from quantum.risk import ess

    return ess.status(client).model_dump()


def prices(client: redis.Redis, symbols: set[str] | None = None) -> list[dict[str, Any]]:
    """The newest tick of each symbol among the last :data:`PRICE_SCAN` tick entries."""
    latest: dict[str, dict[str, Any]] = {}
    for entry in client.xrevrange(MARKET_TICK.key, count=PRICE_SCAN) or []:
        _, fields = _fields(entry)
        if fields.get(b"type") != b"market.tick":
            continue
        tick = orjson.loads(fields[b"payload"])
        symbol = tick["symbol"]
        if symbol in latest or (symbols and symbol not in symbols):
            continue
        latest[symbol] = {"symbol": symbol, "ts": tick["ts"], "price": tick["close"],
                          "mark_price": tick.get("mark_price")}
        if symbols and len(latest) == len(symbols):
            break
    return sorted(latest.values(), key=lambda row: row["symbol"])


def candles(client: redis.Redis, symbol: str, interval: str, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` closed candles of ``symbol`` from the klines stream, oldest first."""
    found: list[dict[str, Any]] = []
    upper = "+"
    scanned = 0
    while len(found) < limit and scanned < CANDLE_SCAN_LIMIT:
        page = client.xrevrange(MARKET_KLINES.key, max=upper, count=CANDLE_PAGE)
        if not page:
            break
        for entry in page:
            _, fields = _fields(entry)
            kline = orjson.loads(fields[b"payload"])
            if kline.get("symbol") == symbol and kline.get("interval") == interval:
                found.append({key: kline[key] for key in (
                    "open_time", "close_time", "open", "high", "low", "close", "volume")})
                if len(found) >= limit:
                    break
        scanned += len(page)
        last_id, _ = _fields(page[-1])
        upper = "(" + last_id
        if len(page) < CANDLE_PAGE:
            break
    found.reverse()
    return found


def supervisor_notices(client: redis.Redis, count: int) -> list[dict[str, Any]]:
    """The newest ``count`` notices of the model supervisor (``ai.supervisor``), newest
    first; an entry that does not decode is skipped."""
    out = []
    for entry in client.xrevrange(AI_SUPERVISOR.key, count=count) or []:
        _, fields = _fields(entry)
        try:
            payload = orjson.loads(fields[b"payload"])
            out.append({"ts": int(fields[b"ts"]), "kind": str(payload["kind"]),
                        "severity": str(payload["severity"]), "detail": str(payload["detail"]),
                        "model_version": str(payload.get("model_version", ""))})
        except (KeyError, ValueError, orjson.JSONDecodeError):
            continue
    return out
