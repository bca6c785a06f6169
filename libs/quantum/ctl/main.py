"""``quantumctl``: run, inspect and repair the fleet from a shell.

This module only assembles: the shared app and helpers live in :mod:`quantum.ctl.cli`, and
each command group in a module of its own, imported here so it registers on the app.
"""

from __future__ import annotations

from collections.abc import Sequence

import typer

import quantum.ctl.books_cmd  # trades, profit, balance, restart
import quantum.ctl.ledger_cmd  # ledger
import quantum.ctl.notify_cmd
import quantum.ctl.regime_cmd  # regime
import quantum.ctl.research_cmd  # walkforward, optimize; the other groups
import quantum.ctl.timer_cmd  # timer run
import quantum.ctl.universe_cmd  # noqa: F401  (universe show, diff, apply)
from quantum.ctl import fleet_cmd, models_cmd, replay_cmd, risk_cmd, rl_cmd  # noqa: F401
from quantum.ctl.cli import PROG, app

__all__ = ["app", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """The ``quantumctl`` entry point.

    Logs (the supervisor's: started, restarting, gave up) go to stderr as JSON lines, so
    stdout carries only what the command prints: tables, JSON documents, replay figures.
    """
    from quantum.observability import logging as fleet_logging

    fleet_logging.configure(PROG)
    typer.main.get_command(app).main(args=argv, prog_name=PROG)

if __name__ == "__main__":
    main()
