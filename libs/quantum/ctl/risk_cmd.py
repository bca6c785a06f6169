"""``quantumctl ess …`` and ``quantumctl policy …``: the operator's hands on risk.

Every change is audited with who made it and why; a reason is required.
"""

from __future__ import annotations

import getpass
import socket
from typing import Annotated, Any

import typer

from quantum.ctl.cli import Json, RedisUrl, app, connect, help_without_command, print_json
from quantum.ctl.errors import ArgumentError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

ess_app = typer.Typer(help="The emergency stop: status, trip, reset, pause, resume.")
policy_app = typer.Typer(help="The risk, sizing and universe policy: get, set, history, rollback.")
app.add_typer(ess_app, name="ess")
app.add_typer(policy_app, name="policy")
for _group in (ess_app, policy_app):
    _group.callback(invoke_without_command=True)(help_without_command)

Reason = Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")]


def operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _require(reason: str) -> str:
    if not reason.strip():
        raise ArgumentError("--reason must not be empty")
    return reason.strip()


@app.command("init")
def init(
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    after_loss: Annotated[bool, typer.Option(
        "--after-loss", help="Re-initialise a fleet whose state was lost (ESS stays tripped).",
    )] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why (required with --after-loss).")]
    = "",
) -> None:
    """Initialise a new fleet on this Redis: its epoch and a clear emergency stop."""
    from quantum.risk import ess, fleetstate

    if after_loss:
        _require(reason)
    client = connect(redis_url)
    epoch, written = fleetstate.initialise(client, operator(), after_loss=after_loss)
    if written and after_loss:
        ess.trip(client, f"{fleetstate.STATE_LOST}: re-initialised after a loss: {reason}",
                 by=operator(), evaluator=fleetstate.STATE_LOST)
    if written:
        typer.echo(f"fleet initialised: epoch {epoch.epoch}"
                   + ("; the ESS stays tripped until `ess reset`" if after_loss else ""))
    else:
        typer.echo(f"already initialised: epoch {epoch.epoch} (by {epoch.by})")


@ess_app.command("status")
def ess_status(redis_url: RedisUrl = DEFAULT_REDIS_URL, json: Json = False) -> None:
    """Show the emergency stop and its recent audit trail."""
    from quantum.risk import ess

    client = connect(redis_url)
    state = ess.status(client)
    document: dict[str, Any] = {"state": state.model_dump(), "audit": ess.audit(client, 10)}
    if json:
        print_json(document)
        return
    if state.tripped:
        typer.echo(
            f"TRIPPED by {state.by} ({state.evaluator}) at {state.tripped_at}: {state.reason}"
        )
    else:
        typer.echo("clear")
    if state.paused:
        typer.echo(f"trading paused by {state.paused_by}")
    for entry in document["audit"]:
        typer.echo(f"  {entry['at']}  {entry['action']:<6} {entry['by']}: {entry['reason']}")


@ess_app.command("trip")
def ess_trip(reason: Reason, redis_url: RedisUrl = DEFAULT_REDIS_URL) -> None:
    """Trip the emergency stop by hand: no new risk until an operator resets it."""
    from quantum.risk import ess

    state = ess.trip(connect(redis_url), _require(reason), by=operator(), evaluator="manual")
    typer.echo(f"tripped: {state.reason}")


@ess_app.command("reset")
def ess_reset(reason: Reason, redis_url: RedisUrl = DEFAULT_REDIS_URL) -> None:
    """Clear a trip (audited)."""
    from quantum.risk import ess

    ess.reset(connect(redis_url), _require(reason), by=operator())
    typer.echo("reset: the emergency stop is clear")


@ess_app.command("pause")
def ess_pause(reason: Reason, redis_url: RedisUrl = DEFAULT_REDIS_URL) -> None:
    """Stop opening positions (exits go on) until `resume`."""
    from quantum.risk import ess

    ess.pause(connect(redis_url), by=operator(), reason=_require(reason))
    typer.echo("paused: no new entries")


@ess_app.command("resume")
def ess_resume(reason: Reason, redis_url: RedisUrl = DEFAULT_REDIS_URL) -> None:
    """Allow new entries again after a pause."""
    from quantum.risk import ess

    ess.resume(connect(redis_url), by=operator(), reason=_require(reason))
    typer.echo("resumed")


@app.command("exit")
def force_exit(
    position_id: Annotated[str, typer.Argument(help="The open position to close in full.")],
    reason: Reason,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
) -> None:
    """Force the exit of one open position: the exit-brain closes it reduce-only (audited)."""
    from quantum.exits import manual

    try:
        request = manual.request_exit(connect(redis_url), position_id, _require(reason),
                                      by=operator())
    except manual.ExitRefused as e:
        raise ArgumentError(str(e)) from None
    typer.echo(f"exit requested: {request.position_id} ({request.symbol} {request.side}); "
               "the exit-brain closes it within a second")


def parse_assignment(text: str) -> tuple[str, Any]:
    """``risk.max_leverage=5`` → (key, 5); values are JSON when they parse, else text."""
    import orjson

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ArgumentError(f"expected KEY=VALUE (e.g. risk.max_leverage=5), got {text!r}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = raw
    return key.strip(), value


@policy_app.command("get")
def policy_get(redis_url: RedisUrl = DEFAULT_REDIS_URL, json: Json = False) -> None:
    """Print the policy in force (version 0 is the built-in defaults)."""
    from quantum.risk import policy

    current = policy.load(connect(redis_url))
    if json:
        print_json(current.model_dump(mode="json"))
        return
    typer.echo(f"version {current.version} by {current.updated_by}: {current.reason}")
    for section in ("risk", "sizing", "universe"):
        for key, value in getattr(current, section).model_dump(mode="json").items():
            typer.echo(f"  {section}.{key} = {value}")


@policy_app.command("set")
def policy_set(
    assignments: Annotated[list[str], typer.Argument(help="KEY=VALUE, e.g. risk.max_leverage=5")],
    reason: Reason,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
) -> None:
    """Write a new policy version: validated as a whole, applied all at once."""
    from quantum.risk import policy

    changes = dict(parse_assignment(a) for a in assignments)
    try:
        new = policy.write(connect(redis_url), changes, by=operator(), reason=_require(reason))
    except policy.PolicyError as e:
        raise ArgumentError(f"policy refused: {e}") from None
    typer.echo(f"policy version {new.version} in force")


@policy_app.command("history")
def policy_history(
    count: Annotated[int, typer.Option("--count", min=1, help="Entries to show.")] = 20,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    json: Json = False,
) -> None:
    """Past versions: who, when, why, what changed."""
    from quantum.risk import policy

    entries = policy.history(connect(redis_url), count)
    if json:
        print_json(entries)
        return
    for e in entries:
        typer.echo(f"v{e['version']}  {e['at']}  {e['by']}: {e['reason']}  {e['changes']}")


@policy_app.command("rollback")
def policy_rollback(
    version: Annotated[int, typer.Argument(min=0, help="The version to restore.")],
    reason: Reason,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
) -> None:
    """Restore an earlier version's document as a new version."""
    from quantum.risk import policy

    try:
        new = policy.rollback(connect(redis_url), version, by=operator(), reason=_require(reason))
    except policy.PolicyError as e:
        raise ArgumentError(str(e)) from None
    typer.echo(f"policy version {new.version} in force (the document of v{version})")
