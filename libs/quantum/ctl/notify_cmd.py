"""``quantumctl notify summary|ess|test``: messages to the operator through the notifier
Alertmanager's receiver uses (Telegram or a chat webhook).

The channels come from the dashboard-api's settings in the environment, never from the
command line (a token in argv shows in ``ps``): ``QT_NOTIFY_TELEGRAM_TOKEN``,
``QT_NOTIFY_TELEGRAM_CHAT_ID``, ``QT_NOTIFY_TELEGRAM_API``, ``QT_NOTIFY_WEBHOOK_URL`` — e.g.
``set -a; . /etc/quantum/dashboard-api.env; quantumctl notify summary``. The daily summary is
meant for a timer or cron at 00:05 UTC (docs/RUNBOOK.md, "Notifications").
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from quantum.ctl.books_cmd import DatabaseUrl, journal
from quantum.ctl.cli import DEFAULT_REDIS_URL, RedisUrl, app, connect, help_without_command
from quantum.ctl.errors import ArgumentError, CtlError

if TYPE_CHECKING:
    from quantum.notify.channels import Notifier

notify_app = typer.Typer(help="Send the daily summary, the ESS state or a test message.")
app.add_typer(notify_app, name="notify")
notify_app.callback(invoke_without_command=True)(help_without_command)


def notifier_from_environment() -> Notifier:
    from quantum.notify.channels import TELEGRAM_API, Notifier

    notifier = Notifier.from_settings(
        telegram_token=os.environ.get("QT_NOTIFY_TELEGRAM_TOKEN", ""),
        telegram_chat_id=os.environ.get("QT_NOTIFY_TELEGRAM_CHAT_ID", ""),
        telegram_api=os.environ.get("QT_NOTIFY_TELEGRAM_API", "") or TELEGRAM_API,
        webhook_url=os.environ.get("QT_NOTIFY_WEBHOOK_URL", ""))
    if not notifier.configured:
        raise CtlError("no notification channel configured: set QT_NOTIFY_TELEGRAM_TOKEN and "
                       "QT_NOTIFY_TELEGRAM_CHAT_ID, or QT_NOTIFY_WEBHOOK_URL")
    return notifier


def _deliver(text: str, dry_run: bool) -> None:
    from quantum.notify.channels import DeliveryError

    if dry_run:
        typer.echo(text)
        return
    notifier = notifier_from_environment()
    try:
        count = notifier.send(text)
    except DeliveryError as e:
        raise CtlError(f"not delivered: {e}") from None
    typer.echo(f"delivered to {count} channel{'s' if count != 1 else ''}")


DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the message, send nothing.")]


@notify_app.command("summary")
def summary(
    day: Annotated[str | None, typer.Option(
        "--day", help="The UTC day (ISO date; default: yesterday).")] = None,
    database_url: DatabaseUrl = "",
    dry_run: DryRun = False,
) -> None:
    """The daily profit summary: trades closed that day, per symbol, and the balance."""
    from quantum.notify.messages import daily_summary

    if day is None:
        wanted = datetime.now(UTC).date() - timedelta(days=1)
    else:
        try:
            wanted = date.fromisoformat(day)
        except ValueError:
            raise ArgumentError(f"--day {day!r} is not an ISO date (e.g. 2025-09-01)") from None
    engine = journal(database_url)
    try:
        text = daily_summary(engine, wanted)
    finally:
        engine.dispose()
    _deliver(text, dry_run)


@notify_app.command("ess")
def ess_message(redis_url: RedisUrl = DEFAULT_REDIS_URL, dry_run: DryRun = False) -> None:
    """The emergency stop's state now (reason, evaluator, who, when)."""
    from quantum.notify.messages import ess_text
    from quantum.risk import ess

    client = connect(redis_url)
    try:
        text = ess_text(ess.status(client).model_dump())
    finally:
        client.close()
    _deliver(text, dry_run)


@notify_app.command("test")
def test_message(dry_run: DryRun = False) -> None:
    """A test message, to check the channels are set up."""
    _deliver("Quantum Trader: test notification (quantumctl notify test)", dry_run)
