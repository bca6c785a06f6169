"""``quantumctl trades``, ``profit`` and ``balance``: the operator's books over the journal,
and ``quantumctl restart SERVICE`` for the local supervisor.

The journal is the one the journal service writes: ``--database-url`` / ``QT_DATABASE_URL``
(SQLite by default, ``var/journal.sqlite``; PostgreSQL when it names one). Tables by default,
``--json`` for scripts. Every bad argument is one line, exit code 2.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from quantum.ctl.cli import Json, app, make_console, ms_to_iso, print_json, run_paths
from quantum.ctl.errors import ArgumentError, CtlError, redact_url

if TYPE_CHECKING:
    from sqlalchemy import Engine

DatabaseUrl = Annotated[str, typer.Option(
    "--database-url", envvar="QT_DATABASE_URL", show_envvar=True,
    help="The journal (default: SQLite var/journal.sqlite).")]
Symbol = Annotated[str | None, typer.Option("--symbol", help="e.g. BTCUSDT")]
RESTART_PATIENCE_S = 60.0


def parse_since(text: str | None) -> int | None:
    """An ISO date or time (UTC unless it says otherwise) as epoch milliseconds."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ArgumentError(f"--since {text!r} is not an ISO date or time "
                            "(e.g. 2025-09-01 or 2025-09-01T12:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def check_symbol(symbol: str | None) -> str | None:
    if symbol is None:
        return None
    upper = symbol.strip().upper()
    if not upper.isalnum() or not 2 <= len(upper) <= 20:
        raise ArgumentError(f"--symbol {symbol!r} is not a symbol (e.g. BTCUSDT)")
    return upper


def journal(url: str) -> Engine:
    """The journal engine with its schema at head; one line when it cannot be used."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # stderr: one line, or nothing
    from sqlalchemy.exc import ArgumentError as UrlError

    from quantum.journal.database import UNAVAILABLE_ERRORS, make_engine, resolve_url, upgrade

    resolved = resolve_url(url)
    try:
        engine = make_engine(resolved)
        upgrade(engine)
    except UrlError as e:
        raise ArgumentError(f"--database-url is not a database URL: {e}") from None
    except UNAVAILABLE_ERRORS as e:
        raise CtlError(f"cannot read the journal at {redact_url(resolved)}: "
                       f"{type(e).__name__}: {str(e).splitlines()[0]}") from None
    return engine


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def _signed(value: float | None) -> str:
    if value is None:
        return ""
    colour = "green" if value > 0 else "red" if value < 0 else "white"
    return f"[{colour}]{value:+,.2f}[/{colour}]"


@app.command()
def trades(
    open_only: Annotated[bool, typer.Option("--open", help="Open positions instead.")] = False,
    symbol: Symbol = None,
    since: Annotated[str | None, typer.Option("--since", help="Exits from (ISO, UTC).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 50,
    database_url: DatabaseUrl = "",
    json: Json = False,
) -> None:
    """Closed trades, newest first (or the open positions with --open)."""
    from rich.table import Table

    from quantum.journal import books

    wanted, since_ms = check_symbol(symbol), parse_since(since)
    if open_only and since is not None:
        raise ArgumentError("--since applies to closed trades, not to --open")
    engine = journal(database_url)
    try:
        if open_only:
            rows = books.open_positions(engine, symbol=wanted)
        else:
            rows = books.closed_trades(engine, symbol=wanted, since_ms=since_ms, limit=limit)
    finally:
        engine.dispose()
    if json:
        print_json({"open" if open_only else "closed": rows})
        return
    console = make_console()
    if open_only:
        table = Table(title=f"Open positions ({len(rows)})")
        for column in ("symbol", "side", "qty", "entry", "mark", "lev", "margin", "liq",
                       "unrealised", "opened"):
            table.add_column(column, justify="left" if column in ("symbol", "side") else "right")
        for p in rows:
            table.add_row(p["symbol"], p["side"], f"{p['quantity']:g}", f"{p['entry_price']:g}",
                          f"{p['mark_price']:g}", f"{p['leverage']}x", _money(p["margin"]),
                          f"{p['liquidation_price']:g}", _signed(p["unrealised_pnl"]),
                          ms_to_iso(p["opened_ts"])[:19])
    else:
        table = Table(title=f"Closed trades ({len(rows)}, newest first)")
        for column in ("exit", "symbol", "side", "qty", "entry", "exit px", "net", "fees",
                       "R", "reason", "held"):
            table.add_column(column, justify="left" if column in ("exit", "symbol", "side",
                                                                   "reason") else "right")
        for t in rows:
            r = "" if t["r_multiple"] is None else f"{t['r_multiple']:+.2f}"
            table.add_row(ms_to_iso(t["exit_ts"])[:19], t["symbol"], t["side"],
                          f"{t['quantity']:g}", f"{t['entry_price']:g}", f"{t['exit_price']:g}",
                          _signed(t["net_pnl"]), _money(t["fees"]), r, t["exit_reason"],
                          f"{t['holding_seconds'] / 3600:.1f}h")
    console.print(table)


@app.command()
def profit(
    by: Annotated[str, typer.Option("--by", help="symbol, exit_reason, day or week.")] =
        "symbol",
    symbol: Symbol = None,
    since: Annotated[str | None, typer.Option("--since", help="Exits from (ISO, UTC).")] = None,
    database_url: DatabaseUrl = "",
    json: Json = False,
) -> None:
    """Net profit of closed trades, grouped, with the total."""
    from rich.table import Table

    from quantum.journal import books

    if by not in books.GROUPINGS:
        raise ArgumentError(f"--by {by!r}: choose one of {', '.join(books.GROUPINGS)}")
    wanted, since_ms = check_symbol(symbol), parse_since(since)
    engine = journal(database_url)
    try:
        document = books.profit(engine, by, symbol=wanted, since_ms=since_ms)
    finally:
        engine.dispose()
    if json:
        print_json(document)
        return
    table = Table(title=f"Profit by {by}")
    for column in (by, "trades", "win rate", "net", "gross", "fees", "funding", "PF"):
        table.add_column(column, justify="left" if column == by else "right")

    def row(label: str, g: dict[str, Any], style: str | None = None) -> None:
        factor = "" if g["profit_factor"] is None else f"{g['profit_factor']:.2f}"
        table.add_row(label, str(g["trades"]), f"{g['win_rate']:.0%}", _signed(g["net_pnl"]),
                      _money(g["gross_pnl"]), _money(g["fees"]), _money(g["funding"]), factor,
                      style=style)

    for group in document["groups"]:
        row(str(group[by]), group)
    table.add_section()
    row("total", document["total"], style="bold")
    make_console().print(table)


@app.command()
def balance(database_url: DatabaseUrl = "", json: Json = False) -> None:
    """Balance, equity, fees, funding and drawdown from the newest portfolio snapshot."""
    from rich.table import Table

    from quantum.journal import books

    engine = journal(database_url)
    try:
        snapshot = books.balance(engine)
    finally:
        engine.dispose()
    if snapshot is None:
        raise CtlError("the journal holds no portfolio snapshot yet (is the journal running?)")
    if json:
        print_json(snapshot)
        return
    table = Table(title=f"Balance at {ms_to_iso(snapshot['ts'])[:19]} UTC", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    for label, key in (("balance", "balance"), ("equity", "equity"),
                       ("unrealised PnL", "unrealised_pnl"), ("realised PnL", "realised_pnl"),
                       ("fees paid", "fees_paid"), ("funding paid", "funding_paid"),
                       ("gross exposure", "gross_exposure"), ("net exposure", "net_exposure"),
                       ("peak equity", "peak_equity")):
        table.add_row(label, _money(snapshot[key]))
    table.add_row("drawdown from peak", f"{snapshot['drawdown']:.2%}")
    table.add_row("open positions", str(snapshot["open_positions"]))
    table.add_row("pending orders", str(snapshot["pending_orders"]))
    make_console().print(table)


@app.command()
def restart(
    service: Annotated[str, typer.Argument(help="The service to restart.")],
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait.")] =
        RESTART_PATIENCE_S,
) -> None:
    """Restart one service under the local supervisor (`quantumctl up`); under systemd use
    `systemctl restart quantum-SERVICE`."""
    from quantum.ctl.runstate import read_state, running_supervisor

    paths = run_paths()
    pid = running_supervisor(paths)
    state = read_state(paths) or {}
    if pid is None or state.get("pid") != pid:
        raise CtlError("no local supervisor is running (`quantumctl up --detach` starts one; "
                       "under systemd use `systemctl restart`)")
    supervised = {s["name"]: s for s in state.get("services", [])}
    if service not in supervised:
        raise ArgumentError(f"{service!r} is not supervised here; supervised: "
                            f"{', '.join(supervised) or 'none'}")
    before = supervised[service].get("pid")
    paths.requests_dir.mkdir(parents=True, exist_ok=True)
    (paths.requests_dir / f"{service}.restart").write_text(f"{time.time()}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = {s["name"]: s for s in (read_state(paths) or {}).get("services", [])}
        row = now.get(service, {})
        if row.get("alive") and row.get("pid") not in (None, before):
            typer.echo(f"restarted {service}: pid {before} -> {row['pid']}")
            return
        time.sleep(0.2)
    raise CtlError(f"{service} did not come back within {timeout:.0f} s; "
                   f"see {paths.log_dir / (service + '.log')}")


@app.command()
def supervision(
    since: Annotated[str | None, typer.Option("--since", help="From (ISO, UTC).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 20,
    database_url: DatabaseUrl = "",
    json: Json = False,
) -> None:
    """The model supervisor's findings (ai.supervisor): bias, drift, swaps, members."""
    from rich.table import Table

    from quantum.journal import books

    since_ms = parse_since(since)
    engine = journal(database_url)
    try:
        rows = books.supervision(engine, limit=limit, since_ms=since_ms)
    finally:
        engine.dispose()
    if json:
        print_json({"supervision": rows})
        return
    table = Table(title=f"Model supervision ({len(rows)}, newest first)")
    for column in ("time", "severity", "kind", "model", "detail"):
        table.add_column(column, overflow="fold")
    colours = {"critical": "red", "warning": "yellow", "info": "white"}
    for row in rows:
        colour = colours.get(row["severity"], "white")
        table.add_row(ms_to_iso(row["ts"])[:19], f"[{colour}]{row['severity']}[/{colour}]",
                      row["kind"], row["model_version"], row["detail"])
    make_console().print(table)
