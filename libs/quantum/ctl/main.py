"""``quantumctl``: run, inspect and repair the fleet from a shell.

Every failure is one line on stderr, ``quantumctl: error: …``: exit code 2 for a bad argument
(the parser's own errors and our checks alike), 1 when the command could not do its job
(Redis unreachable, drift found, replay failed). The parser runs with
``standalone_mode=False`` so its errors reach :func:`_run` instead of a multi-line box.
typer (0.29 and later) carries its own copy of click; every parser error derives from
:class:`typer.TyperException` and carries its exit code (2 for usage errors), which is all
:func:`_run` relies on.

Only typer and click are imported at start; Redis, rich and the fleet's modules are imported
inside the commands, so ``quantumctl --help`` stays fast.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from quantum.ctl.errors import ArgumentError, CtlError, redact_url

if TYPE_CHECKING:
    import redis
    from rich.console import Console

PROG = "quantumctl"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _error(message: str) -> None:
    text = " ".join(message.split())
    typer.echo(f"{PROG}: error: {text}", err=True)


def _run(call: Callable[[], Any]) -> int:
    """Run the parser and command; turn every expected failure into one line and a code."""
    try:
        result = call()
    except CtlError as e:
        _error(str(e))
        return e.exit_code
    except typer.TyperException as e:
        _error(e.format_message())
        return e.exit_code
    except typer.Abort:
        _error("interrupted")
        return 130
    return result if isinstance(result, int) else 0


class _Group(TyperGroup):
    """The top-level group: always parses in non-standalone mode and formats errors itself."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        code = _run(lambda: super(_Group, self).main(
            args=args, prog_name=prog_name or PROG, complete_var=complete_var,
            standalone_mode=False, windows_expand_args=windows_expand_args, **extra,
        ))
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_Group, name=PROG, add_completion=False, pretty_exceptions_enable=False,
    help="Run, inspect and repair the Quantum Trader fleet.",
)
streams_app = typer.Typer(help="Look at the fleet's streams.")
dlq_app = typer.Typer(help="List and replay dead-lettered entries.")
app.add_typer(streams_app, name="streams")
app.add_typer(dlq_app, name="dlq")


def _help_without_command(context: typer.Context) -> None:
    """A group named alone prints its help and exits 0 (not a usage error)."""
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())


for _group in (app, streams_app, dlq_app):
    _group.callback(invoke_without_command=True)(_help_without_command)

RedisUrl = Annotated[str, typer.Option(
    "--redis-url", envvar="QT_REDIS_URL", show_envvar=True, help="The fleet's Redis.",
)]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


# --- shared helpers -----------------------------------------------------------------------


def _connect(url: str) -> redis.Redis:
    """A client that has answered PING; one line naming the URL if Redis does not answer."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=30)
    except ValueError as e:
        raise ArgumentError(f"--redis-url {redact_url(url)!r} is not a Redis URL: {e}") from None
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise CtlError(f"cannot reach Redis at {redact_url(url)}: {e}") from None
    except redis.ResponseError as e:
        raise CtlError(f"Redis at {redact_url(url)} refused PING: {e}") from None
    return client


def _console() -> Console:
    from rich.console import Console

    return Console(soft_wrap=False)


def _print_json(document: Any) -> None:
    import orjson

    typer.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def _paths() -> Any:
    from quantum.ctl.runstate import RunPaths

    return RunPaths.from_environment()


def _live_state() -> dict[str, Any] | None:
    """The supervisor's state file, when the supervisor that wrote it still runs."""
    from quantum.ctl.runstate import pid_alive, read_state

    state = read_state(_paths())
    if state is None or not isinstance(state.get("pid"), int) or not pid_alive(state["pid"]):
        return None
    return state


def _service_names(requested: Sequence[str] | None) -> list[str]:
    from quantum.ctl.supervisor import launcher_table

    table = launcher_table()
    if not requested:
        return list(table)
    unknown = [name for name in requested if name not in table]
    if unknown:
        raise ArgumentError(f"unknown service {unknown[0]!r}; known: {', '.join(table)}")
    return list(dict.fromkeys(requested))


def _stream_key(name: str) -> str:
    from quantum.contracts.streams import spec_for

    try:
        return spec_for(name).key
    except KeyError as e:
        raise ArgumentError(str(e.args[0])) from None


def _ms_to_iso(value: Any) -> str:
    try:
        millis = int(value)
    except (TypeError, ValueError):
        return str(value)
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")


# --- up / down ----------------------------------------------------------------------------


@app.command()
def up(
    services: Annotated[list[str] | None, typer.Argument(
        help="Services to run (default: every service in the registry).", show_default=False,
    )] = None,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    detach: Annotated[bool, typer.Option(
        "--detach", help="Run the supervisor in the background; `down` stops it.",
    )] = False,
) -> None:
    """Run the fleet locally; starts a local Redis when none answers at the URL."""
    from quantum.ctl import fleet
    names = _service_names(services)
    paths = _paths()
    if detach:
        pid = fleet.detach(names, redis_url, paths)
        typer.echo(f"supervisor running in the background (pid {pid}); "
                   f"`{PROG} status` shows the fleet, `{PROG} down` stops it")
        return
    code = fleet.serve(names, redis_url, paths, echo=typer.echo)
    if code:
        raise typer.Exit(code)


@app.command()
def down() -> None:
    """Stop the background supervisor, its services and a Redis it started."""
    from quantum.ctl import fleet

    for line in fleet.down(_paths()):
        typer.echo(line)


# --- status / report / verify -------------------------------------------------------------


def _render(document: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    services = Table(title="services")
    for column in ("service", "state", "pid", "heartbeat age", "restarts", "required"):
        services.add_column(column)
    for row in document["services"]:
        age = row["heartbeat_age_s"]
        restarts = "" if row["restarts"] is None else str(row["restarts"])
        if row["gave_up"]:
            restarts += f" (gave up, exit {row['last_exit']})"
        state = "[green]up[/]" if row["state"] == "up" else "[red]down[/]"
        services.add_row(row["name"], state, str(row["pid"] or ""),
                         "" if age is None else f"{age:.1f} s", restarts,
                         "yes" if row["required"] else "no")
    console.print(services)
    streams = Table(title="streams")
    for column in ("stream", "length", "last entry", "producer", "groups (pending / lag)"):
        streams.add_column(column)
    for row in document["streams"]:
        groups = "\n".join(
            f"{group['name']}{'' if group['declared'] else ' (orphan)'} "
            f"{group['pending']} / {group['lag']}"
            for group in row["groups"]
        )
        missing = [g for g in row["declared_groups"]
                   if g not in {group["name"] for group in row["groups"]}]
        if missing:
            groups = "\n".join(filter(None, [groups, *(f"{g} (missing)" for g in missing)]))
        producer = row["producer"] or ("(any consumer)" if row["name"] == "dlq" else "-")
        streams.add_row(row["name"], str(row["length"]), row["last_entry_time"] or "",
                        producer, groups)
    console.print(streams)
    trading = document["trading"]
    if trading["entries_allowed"]:
        console.print(f"trading: [green]entries allowed[/] (policy v{trading['policy_version']})")
    else:
        console.print("trading: [red]entries blocked[/]: " + "; ".join(trading["blocked_by"]))
    durability = document.get("redis", {})
    colour = "green" if durability.get("durable") else "yellow"
    console.print(f"redis: [{colour}]{durability.get('detail', 'unknown')}[/]; fleet epoch "
                  f"{trading.get('fleet_epoch') or '[red]missing[/]'}")
    if document["flags"]:
        flags = Table(title="flags")
        for column in ("kind", "subject", "detail"):
            flags.add_column(column)
        for flag in document["flags"]:
            flags.add_row(f"[yellow]{flag['kind']}[/]", flag["subject"], flag["detail"])
        console.print(flags)
    else:
        console.print("no flags: the live system matches the registry")


@app.command()
def status(redis_url: RedisUrl = DEFAULT_REDIS_URL, json: Json = False) -> None:
    """Services, streams and consumer groups, with everything that looks wrong flagged."""
    from quantum.ctl.truth import truth_map

    document = truth_map(_connect(redis_url), _live_state())
    if json:
        _print_json(document)
    else:
        _render(document, _console())


@app.command()
def report(redis_url: RedisUrl = DEFAULT_REDIS_URL, json: Json = False) -> None:
    """The whole truth map as one document: services, streams, flags, DLQ, supervisor."""
    from quantum.bus.streams import DLQ
    from quantum.ctl.truth import drift, truth_map

    client = _connect(redis_url)
    state = _live_state()
    document = truth_map(client, state)
    info = client.info("server")
    document["redis"] = {"url": redact_url(redis_url), "version": info.get("redis_version")}
    document["supervisor"] = None if state is None else {
        key: state.get(key) for key in ("pid", "started_at", "updated_at", "log_dir")
    }
    document["dlq"] = {"length": int(client.xlen(DLQ.key))}
    document["drift"] = drift(document)
    if json:
        _print_json(document)
        return
    console = _console()
    console.print(f"Quantum Trader fleet at {document['redis']['url']} "
                  f"(Redis {document['redis']['version']}), {document['generated_at']}")
    supervisor = document["supervisor"]
    console.print("local supervisor: " + (
        f"pid {supervisor['pid']} since {supervisor['started_at']}" if supervisor else "none"))
    _render(document, console)
    up_count = sum(row["state"] == "up" for row in document["services"])
    console.print(f"{up_count}/{len(document['services'])} services up, "
                  f"{len(document['drift'])} drift findings, "
                  f"{document['dlq']['length']} entries in the DLQ")


@app.command()
def verify(redis_url: RedisUrl = DEFAULT_REDIS_URL) -> None:
    """Compare the live system with the registry; exit 1 on any difference."""
    from quantum.ctl.truth import drift, truth_map

    differences = drift(truth_map(_connect(redis_url), _live_state()))
    for flag in differences:
        typer.echo(f"{flag['kind']}: {flag['subject']}: {flag['detail']}")
    if differences:
        raise CtlError(f"{len(differences)} differences between the live system and the registry")
    typer.echo("the live system matches the registry")


# --- streams and the DLQ ------------------------------------------------------------------


def _format_entry(entry_id: str, fields: dict[bytes, bytes]) -> str:
    import orjson

    text = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
    if "payload" in text:
        try:
            body = orjson.dumps(orjson.loads(text["payload"])).decode()
        except orjson.JSONDecodeError:
            body = text["payload"]
    else:
        rest = {k: v for k, v in text.items() if k not in ("type", "ts", "source")}
        body = orjson.dumps(rest).decode()
    return (f"{entry_id}  {text.get('type', '?')}  {_ms_to_iso(text.get('ts'))}  "
            f"{text.get('source', '-')}  {body}")


@streams_app.command("tail")
def streams_tail(
    name: Annotated[str, typer.Argument(help="Stream name, e.g. market.klines.")],
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Entries to show.")] = 10,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new ones.")]
    = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
) -> None:
    """Print a stream's latest entries: id, type, time, source, payload."""
    from quantum.ctl.entries import as_entries, as_stream_entries

    key = _stream_key(name)
    client = _connect(redis_url)
    entries = list(reversed(as_entries(client.xrevrange(key, count=count))))
    for entry_id, fields in entries:
        typer.echo(_format_entry(entry_id, fields))
    if not follow:
        return
    last = entries[-1][0] if entries else "$"
    try:
        while True:
            for entry_id, fields in as_stream_entries(
                client.xread({key: last}, block=1000, count=100)
            ):
                typer.echo(_format_entry(entry_id, fields))
                last = entry_id
    except KeyboardInterrupt:
        return


@dlq_app.command("list")
def dlq_list(
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Entries to show.")] = 20,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    json: Json = False,
) -> None:
    """The oldest dead-lettered entries, with where they came from and why."""
    from quantum.ctl.dlq import list_entries

    entries = list_entries(_connect(redis_url), count)
    if json:
        _print_json(entries)
        return
    for entry in entries:
        event_type = entry["original"].get("type", "?") if isinstance(
            entry["original"], dict) else "?"
        typer.echo(f"{entry['id']}  {_ms_to_iso(entry['ts'])}  {entry['stream']} "
                   f"{entry['entry_id']}  group={entry['group']}  type={event_type}  "
                   f"reason: {entry['reason']}")
    if not entries:
        typer.echo("the DLQ is empty")


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[list[str] | None, typer.Option(
        "--id", help="A DLQ entry id to replay (repeatable).", show_default=False,
    )] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every entry.")] = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
) -> None:
    """Put entries back on their original stream and remove them from the DLQ, atomically."""
    from quantum.ctl.dlq import ENTRY_ID, replay

    if bool(ids) == replay_all:
        raise ArgumentError("give either --id ID (repeatable) or --all")
    bad = [value for value in ids or [] if not ENTRY_ID.match(value)]
    if bad:
        raise ArgumentError(f"--id must be a stream entry id like 1735603500000-0, got {bad[0]!r}")
    outcome = replay(_connect(redis_url), ids or None)
    for dlq_id, stream, new_id in outcome.replayed:
        typer.echo(f"replayed {dlq_id} to {stream} as {new_id}")
    for dlq_id, why in outcome.refused:
        typer.echo(f"left {dlq_id} in the DLQ: {why}")
    if outcome.missing:
        typer.echo(f"not in the DLQ: {', '.join(outcome.missing)}")
    typer.echo(f"{len(outcome.replayed)} replayed")
    if outcome.refused or outcome.missing:
        raise CtlError(f"{len(outcome.refused) + len(outcome.missing)} entries not replayed")


# --- generated files ----------------------------------------------------------------------


@app.command()
def units(
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if a file differs.")] = False,
    write: Annotated[bool, typer.Option("--write", help="Regenerate the files.")] = False,
) -> None:
    """Check (or rewrite) the files generated from the registry: units, env files, launcher."""
    if check == write:
        raise ArgumentError("give either --check or --write")
    try:
        from quantum.registry import generate
    except ImportError as e:
        raise CtlError(f"the generator quantum.registry.generate cannot be imported: {e}") from None
    if write:
        for path in generate.write():
            typer.echo(f"wrote {path}")
        return
    differing = generate.check()
    for path in differing:
        typer.echo(f"differs from the registry: {path}")
    if differing:
        raise CtlError(f"{len(differing)} generated files are out of date; "
                       f"run `{PROG} units --write`")
    typer.echo("generated files match the registry")


# --- replay -------------------------------------------------------------------------------


def parse_speed(text: str) -> float | None:
    """``max`` → None (as fast as the fleet goes), else a positive multiple of real time."""
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ArgumentError(f"--speed must be 'max' or a positive number, got {text!r}")
    return value


def parse_time(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or time; without a zone it is taken as UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ArgumentError(
            f"{option} must be an ISO 8601 date or time such as 2024-01-31 or "
            f"2024-01-31T12:00:00Z, got {text!r}"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_symbols(text: str) -> tuple[str, ...]:
    symbols = tuple(dict.fromkeys(part.strip().upper() for part in text.split(",")
                                  if part.strip()))
    if not symbols:
        raise ArgumentError(f"--symbols must list at least one symbol, got {text!r}")
    return symbols


def check_data_dir(data_dir: Path, symbols: Sequence[str]) -> None:
    if not data_dir.is_dir():
        raise ArgumentError(f"--data {str(data_dir)!r} is not a directory")
    missing = [s for s in symbols if not (data_dir / f"{s}-5m.csv.gz").is_file()]
    if missing:
        raise ArgumentError(
            f"--data {str(data_dir)!r} has no 5-minute klines for "
            f"{', '.join(missing)} (expected {', '.join(f'{s}-5m.csv.gz' for s in missing)})"
        )


class _Progress:
    """A rich progress bar on a terminal; a line per tenth done otherwise (logs, CI)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar: Any = None
        self._task: Any = None
        self._last_tenth = -1

    def __enter__(self) -> _Progress:
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=self.console)
            self._bar.start()
            self._task = self._bar.add_task("replay", total=None)
        return self

    def __call__(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total or None)
            return
        tenth = 10 if total <= 0 else min(10, done * 10 // total)
        if tenth > self._last_tenth:
            self._last_tenth = tenth
            typer.echo(f"replay: {done}/{total} klines ({tenth * 10}%)")

    def __exit__(self, *_: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _key_figures(report_document: dict[str, Any]) -> list[tuple[str, Any]]:
    """The report's scalar figures, one level of nesting deep, in the report's order."""
    figures: list[tuple[str, Any]] = []
    for key, value in report_document.items():
        if isinstance(value, dict):
            figures.extend((f"{key}.{inner}", item) for inner, item in value.items()
                           if isinstance(item, str | int | float | bool) or item is None)
        elif isinstance(value, str | int | float | bool) or value is None:
            figures.append((key, value))
    return figures


@app.command()
def replay(
    data: Annotated[Path, typer.Option("--data", help="Directory of <SYMBOL>-5m.csv.gz files.")],
    symbols: Annotated[str, typer.Option("--symbols", help="Comma-separated: BTCUSDT,ETHUSDT.")],
    report_path: Annotated[Path, typer.Option("--report", help="Where to write the JSON report.")],
    start: Annotated[str | None, typer.Option("--start", help="ISO date or time (UTC).")] = None,
    end: Annotated[str | None, typer.Option("--end", help="ISO date or time (UTC).")] = None,
    speed: Annotated[str, typer.Option("--speed", help="'max' or a multiple of real time.")]
    = "max",
    redis_url: Annotated[str | None, typer.Option(
        "--redis-url", help="Replay on this Redis (default: a private one).",
    )] = None,
) -> None:
    """Run the fleet over historical klines with the paper exchange; write a report."""
    symbol_list = parse_symbols(symbols)
    request_speed = parse_speed(speed)
    start_time, end_time = parse_time(start, "--start"), parse_time(end, "--end")
    if start_time and end_time and end_time <= start_time:
        raise ArgumentError(f"--end {end!r} must be after --start {start!r}")
    check_data_dir(data, symbol_list)
    try:
        from quantum.replay.orchestrator import ReplayRequest, run_replay
    except ImportError as e:
        raise CtlError(f"the replay orchestrator cannot be imported: {e}") from None
    request = ReplayRequest(data_dir=data, symbols=symbol_list, start=start_time, end=end_time,
                            speed=request_speed, report_path=report_path, redis_url=redis_url)
    console = _console()
    try:
        with _Progress(console) as progress:
            result = run_replay(request, progress)
    except (ValueError, RuntimeError) as e:
        raise CtlError(f"replay failed: {e}") from None
    for key, value in _key_figures(result):
        typer.echo(f"{key}: {value}")
    typer.echo(f"report written to {report_path}")


def main(argv: Sequence[str] | None = None) -> None:
    """The ``quantumctl`` entry point.

    Logs (the supervisor's: started, restarting, gave up) go to stderr as JSON lines, so
    stdout carries only what the command prints: tables, JSON documents, replay figures.
    """
    from quantum.observability import logging as fleet_logging

    fleet_logging.configure(PROG)
    typer.main.get_command(app).main(args=argv, prog_name=PROG)


# Command groups of other domains register themselves on ``app`` when imported.
from quantum.ctl import models_cmd, risk_cmd, rl_cmd  # noqa: E402, F401

if __name__ == "__main__":
    main()
