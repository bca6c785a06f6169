"""The shared pieces of ``quantumctl``: the typer app, one-line errors, the Redis
connection and the output helpers. Every command group is a module of its own
(``*_cmd.py``) that registers on :data:`app`; :mod:`quantum.ctl.main` only assembles them.

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

import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
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


def help_without_command(context: typer.Context) -> None:
    """A group named alone prints its help and exits 0 (not a usage error)."""
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())


for _group in (app, streams_app, dlq_app):
    _group.callback(invoke_without_command=True)(help_without_command)

RedisUrl = Annotated[str, typer.Option(
    "--redis-url", envvar="QT_REDIS_URL", show_envvar=True, help="The fleet's Redis.",
)]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


# --- shared helpers -----------------------------------------------------------------------


def connect(url: str) -> redis.Redis:
    """A client that has answered PING; one line naming the URL if Redis does not answer.
    Direct or through Sentinel (``redis+sentinel://``, :mod:`quantum.bus.connection`)."""
    import redis

    from quantum.bus import connection

    try:
        client = connection.connect(url, socket_connect_timeout=3, socket_timeout=30)
    except ValueError as e:
        raise ArgumentError(f"--redis-url {redact_url(url)!r} is not a Redis URL: {e}") from None
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise CtlError(f"cannot reach Redis at {redact_url(url)}: {e}") from None
    except redis.ResponseError as e:
        raise CtlError(f"Redis at {redact_url(url)} refused PING: {e}") from None
    return client


def make_console() -> Console:
    """A console for tables: the terminal's width, or 110 columns when piped (logs, CI),
    where rich would otherwise assume 80 and truncate the report's wider tables."""
    from rich.console import Console

    console = Console(soft_wrap=False)
    return console if console.is_terminal else Console(soft_wrap=False, width=110)


def print_json(document: Any) -> None:
    import orjson

    typer.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def run_paths() -> Any:
    from quantum.ctl.runstate import RunPaths

    return RunPaths.from_environment()


def live_state() -> dict[str, Any] | None:
    """The supervisor's state file, when the supervisor that wrote it still runs."""
    from quantum.ctl.runstate import pid_alive, read_state

    state = read_state(run_paths())
    if state is None or not isinstance(state.get("pid"), int) or not pid_alive(state["pid"]):
        return None
    return state


def service_names(requested: Sequence[str] | None) -> list[str]:
    from quantum.process.supervisor import launcher_table

    table = launcher_table()
    if not requested:
        return list(table)
    unknown = [name for name in requested if name not in table]
    if unknown:
        raise ArgumentError(f"unknown service {unknown[0]!r}; known: {', '.join(table)}")
    return list(dict.fromkeys(requested))


def stream_key(name: str) -> str:
    from quantum.contracts.streams import spec_for

    try:
        return spec_for(name).key
    except KeyError as e:
        raise ArgumentError(str(e.args[0])) from None


def ms_to_iso(value: Any) -> str:
    try:
        millis = int(value)
    except (TypeError, ValueError):
        return str(value)
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")
