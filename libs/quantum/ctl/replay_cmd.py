"""Research commands: ``replay`` (the real fleet over history) and ``backtest`` (the same
handlers in one process, :mod:`quantum.engine`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from quantum.ctl.cli import (
    app,
    make_console,
    ms_to_iso,
)
from quantum.ctl.errors import ArgumentError, CtlError

if TYPE_CHECKING:
    from rich.console import Console

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

    def __init__(self, console: Console, label: str = "replay") -> None:
        self.console = console
        self.label = label
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

            self._bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=self.console)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=None)
        return self

    def __call__(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total or None)
            return
        tenth = 10 if total <= 0 else min(10, done * 10 // total)
        if tenth > self._last_tenth:
            self._last_tenth = tenth
            typer.echo(f"{self.label}: {done}/{total} klines ({tenth * 10}%)")

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


DataDir = Annotated[Path, typer.Option("--data", help="Directory of <SYMBOL>-5m.csv.gz files.")]
Symbols = Annotated[str, typer.Option("--symbols", help="Comma-separated: BTCUSDT,ETHUSDT.")]
ReportPath = Annotated[Path, typer.Option("--report", help="Where to write the JSON report.")]
Start = Annotated[str | None, typer.Option("--start", help="ISO date or time (UTC).")]
End = Annotated[str | None, typer.Option("--end", help="ISO date or time (UTC).")]


def parse_range(data: Path, symbols: str, start: str | None, end: str | None
                ) -> tuple[tuple[str, ...], datetime | None, datetime | None]:
    """What ``replay`` and ``backtest`` both take: symbols with their files in ``data``, and
    a range whose end is after its start."""
    symbol_list = parse_symbols(symbols)
    start_time, end_time = parse_time(start, "--start"), parse_time(end, "--end")
    if start_time and end_time and end_time <= start_time:
        raise ArgumentError(f"--end {end!r} must be after --start {start!r}")
    check_data_dir(data, symbol_list)
    return symbol_list, start_time, end_time


@app.command()
def replay(
    data: DataDir,
    symbols: Symbols,
    report_path: ReportPath,
    start: Start = None,
    end: End = None,
    speed: Annotated[str, typer.Option("--speed", help="'max' or a multiple of real time.")]
    = "max",
    redis_url: Annotated[str | None, typer.Option(
        "--redis-url", help="Replay on this Redis (default: a private one).",
    )] = None,
) -> None:
    """Run the fleet over historical klines with the paper exchange; write a report."""
    request_speed = parse_speed(speed)
    symbol_list, start_time, end_time = parse_range(data, symbols, start, end)
    try:
        from quantum.replay.orchestrator import ReplayRequest, run_replay
    except ImportError as e:
        raise CtlError(f"the replay orchestrator cannot be imported: {e}") from None
    request = ReplayRequest(data_dir=data, symbols=symbol_list, start=start_time, end=end_time,
                            speed=request_speed, report_path=report_path, redis_url=redis_url)
    console = make_console()
    try:
        with _Progress(console) as progress:
            result = run_replay(request, progress)
    except (ValueError, RuntimeError) as e:
        raise CtlError(f"replay failed: {e}") from None
    _print_report(result, data, report_path, console)


def _print_report(result: dict[str, Any], data: Path, report_path: Path,
                  console: Console) -> None:
    """The tables people read, the PNG and HTML beside the JSON, then the key figures."""
    from quantum.reporting import render

    written = render(result, data, report_path, console)
    report_path.write_bytes(_json(result))  # now with the benchmark comparison
    for key, value in _key_figures(result):
        typer.echo(f"{key}: {value}")
    for change in result.get("universe_changes", []):  # what entered and left, when
        moves = [f"+{s}" for s in change["entered"]] + [f"-{s}" for s in change["left"]]
        typer.echo(f"universe {ms_to_iso(change['ts'])}: {' '.join(moves)} "
                   f"({change['size']} symbols)")
    for path in written.values():
        typer.echo(f"wrote {path}")
    typer.echo(f"report written to {report_path}")


def _json(document: Any) -> bytes:
    import orjson

    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


def parse_assignments(values: Sequence[str]) -> tuple[tuple[tuple[str, str], ...],
                                                      tuple[tuple[str, Any], ...]]:
    """``--set`` values: ``QT_KEY=value`` is a service setting, ``section.key=value`` a
    policy override (its value read as JSON when it parses, else as text)."""
    import orjson

    settings: list[tuple[str, str]] = []
    overrides: list[tuple[str, Any]] = []
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ArgumentError(f"--set takes KEY=VALUE, got {item!r}")
        if key.upper().startswith("QT_"):
            settings.append((key.upper(), value))
        elif "." in key:
            try:
                parsed: Any = orjson.loads(value)
            except orjson.JSONDecodeError:
                parsed = value
            overrides.append((key, parsed))
        else:
            raise ArgumentError(
                f"--set {key!r}: expected a service setting (QT_…) or a policy key "
                "(section.key, e.g. risk.max_leverage)"
            )
    return tuple(settings), tuple(overrides)


@app.command()
def backtest(
    data: DataDir,
    symbols: Symbols,
    report_path: ReportPath,
    start: Start = None,
    end: End = None,
    model: Annotated[str, typer.Option(
        "--model", help="baseline, momentum, ensemble or edge (the registry's active "
        "one), KIND:VERSION, or an ensemble version.",
    )] = "baseline",
    assignments: Annotated[list[str] | None, typer.Option(
        "--set", help="QT_KEY=VALUE (a service setting) or section.key=VALUE (policy); "
        "repeatable.", show_default=False,
    )] = None,
) -> None:
    """The replay's services in one process (no Redis): the same trades, much faster."""
    if not model.strip():
        raise ArgumentError("--model must be baseline, ensemble or a model version")
    symbol_list, start_time, end_time = parse_range(data, symbols, start, end)
    settings, overrides = parse_assignments(assignments or [])
    from quantum.engine.backtest import BacktestError, BacktestRequest, run_backtest

    request = BacktestRequest(data_dir=data, symbols=symbol_list, start=start_time,
                              end=end_time, report_path=report_path, model=model.strip(),
                              settings=settings, policy=overrides)
    console = make_console()
    try:
        with _Progress(console, "backtest") as progress:
            result = run_backtest(request, progress)
    except BacktestError as e:
        raise CtlError(f"backtest failed: {e}") from None
    _print_report(result, data, report_path, console)
