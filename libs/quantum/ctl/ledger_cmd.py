"""``quantumctl ledger``: the venue's income history against the journal, per day and per
trade, computed now as the ledger service computes it (:mod:`quantum.ledger`).

The journal is ``--database-url`` / ``QT_DATABASE_URL``; the venue is ``--exchange`` /
``QT_EXCHANGE``: ``paper`` reads the paper venue's income trail in the fleet's Redis,
``binance`` asks ``/fapi/v1/income`` with the ledger's access settings (``QT_BINANCE_*``,
from the environment, never printed). Tables by default, ``--json`` for scripts; exit code
1 when a difference beyond tolerance is found (``--differences`` lists only those rows).
Every bad argument is one line, exit code 2.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from quantum.ctl.books_cmd import DatabaseUrl, Symbol, check_symbol
from quantum.ctl.cli import Json, RedisUrl, app, connect, make_console, ms_to_iso, print_json
from quantum.ctl.errors import ArgumentError, CtlError, redact_url

EXCHANGES = ("paper", "binance")


def _settings(exchange: str, database_url: str, redis_url: str) -> Any:
    """The ledger's settings from the environment, with the command's options."""
    import os

    from quantum.config import ConfigError
    from quantum.ledger.config import Settings

    if exchange == "binance":
        for key in ("QT_BINANCE_API_KEY", "QT_BINANCE_API_SECRET"):
            if not os.environ.get(key):
                raise CtlError(f"--exchange binance needs {key} in the environment")
    try:
        return Settings(exchange=exchange, database_url=database_url, redis_url=redis_url)
    except ConfigError as e:
        raise CtlError(str(e)) from None
    except ValueError as e:  # pydantic's ValidationError: one line naming the field
        first = str(e).splitlines()
        raise CtlError(f"bad ledger setting: {' '.join(first[:3])}") from None


def compare_now(exchange: str, days: int, symbol: str | None, database_url: str,
                redis_url: str) -> dict[str, Any]:
    """The comparison as a JSON-able document (plus ``venue``)."""
    from sqlalchemy.exc import ArgumentError as UrlError

    from quantum.bus.redisports import RedisState
    from quantum.journal.database import make_engine, resolve_url
    from quantum.ledger.compare import Tolerance
    from quantum.ledger.run import LedgerUnavailable, run
    from quantum.ledger.sources import income_source

    settings = _settings(exchange, database_url, redis_url)
    client = connect(redis_url) if exchange == "paper" else None
    url = resolve_url(settings.database_url.get_secret_value())
    try:
        engine = make_engine(url, pool_size=1)
    except UrlError as e:
        raise ArgumentError(f"--database-url is not a database URL: {e}") from None
    try:
        source = income_source(settings, RedisState(client) if client is not None else None)
        comparison = run(engine, source, now_ms=int(time.time() * 1000), lookback_days=days,
                         settle_ms=int(settings.ledger_settle_s * 1000),
                         tolerance=Tolerance(absolute=settings.ledger_tolerance_usdt,
                                             ratio=settings.ledger_tolerance_ratio),
                         slack_ms=int(settings.ledger_match_slack_s * 1000),
                         asset=settings.ledger_asset, symbol=symbol)
    except LedgerUnavailable as e:
        where = redact_url(url) if e.source == "journal" else e.source
        raise CtlError(f"cannot compare the ledger: {where}: {e.detail}") from None
    finally:
        engine.dispose()
        if client is not None:
            client.close()
    return {"venue": source.name, **comparison.document()}


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _signed(value: float) -> str:
    colour = "red" if abs(value) > 0 else "white"
    return f"[{colour}]{value:+,.4f}[/{colour}]"


def _status(status: str) -> str:
    return "[green]match[/green]" if status == "match" else "[red]differs[/red]"


@app.command()
def ledger(
    days: Annotated[int, typer.Option("--days", min=1, max=90,
                                      help="UTC days compared, today included.")] = 7,
    exchange: Annotated[str, typer.Option("--exchange", envvar="QT_EXCHANGE",
                                          help="paper or binance.")] = "paper",
    symbol: Symbol = None,
    differences: Annotated[bool, typer.Option(
        "--differences", help="Only the days and trades that differ.")] = False,
    database_url: DatabaseUrl = "",
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0",
    json: Json = False,
) -> None:
    """The venue's income (realised PnL, fees, funding) against the journal, per day and
    per trade; exit code 1 when they differ beyond tolerance."""
    from rich.table import Table

    if exchange not in EXCHANGES:
        raise ArgumentError(f"--exchange {exchange!r}: choose one of {', '.join(EXCHANGES)}")
    document = compare_now(exchange, days, check_symbol(symbol), database_url, redis_url)
    if differences:
        document["days"] = [d for d in document["days"] if d["status"] != "match"]
        document["trades"] = [t for t in document["trades"] if t["status"] != "match"]
    code = 1 if document["differences"] else 0
    if json:
        print_json(document)
        if code:
            raise typer.Exit(code)
        return
    summary = document["summary"]
    console = make_console()
    days_table = Table(title=f"Ledger by day: {document['venue']} venue against the journal "
                       f"({ms_to_iso(summary['since_ms'])[:10]} to "
                       f"{ms_to_iso(summary['until_ms'])[:19]} UTC)")
    for column in ("day", "trades", "venue PnL", "journal PnL", "venue fees", "journal fees",
                   "venue funding", "journal funding", "net difference", "status"):
        days_table.add_column(column, justify="left" if column in ("day", "status") else "right")
    for day in document["days"]:
        venue, journal = day["venue"], day["journal"]
        days_table.add_row(day["day"], str(day["trades"]), _money(venue["realised_pnl"]),
                           _money(journal["realised_pnl"]), _money(venue["fees"]),
                           _money(journal["fees"]), _money(venue["funding"]),
                           _money(journal["funding"]),
                           _signed(venue["net"] - journal["net"]), _status(day["status"]))
    console.print(days_table)
    trades_table = Table(title=f"Ledger by trade ({len(document['trades'])})")
    for column in ("exit", "symbol", "trade", "records", "Δ PnL", "Δ fees", "Δ funding",
                   "status"):
        trades_table.add_column(column, justify="left" if column in (
            "exit", "symbol", "trade", "status") else "right")
    for trade in document["trades"]:
        venue, journal = trade["venue"], trade["journal"]
        trades_table.add_row(
            ms_to_iso(trade["exit_ts"])[:19], trade["symbol"], trade["trade_id"][:24],
            str(trade["income_records"]),
            _signed(venue["realised_pnl"] - journal["realised_pnl"]),
            _signed(venue["fees"] - journal["fees"]),
            _signed(venue["funding"] - journal["funding"]), _status(trade["status"]))
    console.print(trades_table)
    console.print(f"{summary['differences']} differences beyond tolerance; "
                  f"{summary['unattributed_records']} income records match no journal trade; "
                  f"{summary['waiting_records']} wait for open positions to close")
    if code:
        raise typer.Exit(code)
