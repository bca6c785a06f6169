"""``quantumctl timer run NAME``: one periodic job of the registry (what its timer starts)."""

from __future__ import annotations

from typing import Annotated

import typer

from quantum.ctl.cli import DEFAULT_REDIS_URL, RedisUrl, app, help_without_command
from quantum.ctl.errors import ArgumentError

timer_app = typer.Typer(help="The periodic jobs the systemd timers run.")
app.add_typer(timer_app, name="timer")
timer_app.callback(invoke_without_command=True)(help_without_command)


@timer_app.command("run")
def timer_run(
    name: Annotated[str, typer.Argument(help="The timer's job: verify, ensemble-health, "
                                             "rl-health, backup.")],
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
) -> None:
    """Run the job, print one JSON result line, record its success time in Redis."""
    from quantum.ctl import timers

    if name not in timers.JOBS:
        raise ArgumentError(f"unknown timer {name!r}; choose from {', '.join(timers.JOBS)}")
    code = timers.run(name, redis_url, echo=typer.echo)
    if code:
        raise typer.Exit(code)
