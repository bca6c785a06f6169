"""Fleet commands: up, down, status, report, verify, streams, dlq, units."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from quantum.ctl.cli import (
    DEFAULT_REDIS_URL,
    PROG,
    Json,
    RedisUrl,
    app,
    connect,
    dlq_app,
    live_state,
    make_console,
    ms_to_iso,
    print_json,
    run_paths,
    service_names,
    stream_key,
    streams_app,
)
from quantum.ctl.errors import ArgumentError, CtlError, redact_url

if TYPE_CHECKING:
    from rich.console import Console

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
    names = service_names(services)
    paths = run_paths()
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

    for line in fleet.down(run_paths()):
        typer.echo(line)


# --- status / report / verify -------------------------------------------------------------


def _render(document: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    services = Table(title="services")
    for column in ("service", "state", "host (active)", "pid", "heartbeat age", "standby",
                   "restarts", "required"):
        services.add_column(column)
    for row in document["services"]:
        age = row["heartbeat_age_s"]
        restarts = "" if row["restarts"] is None else str(row["restarts"])
        if row["gave_up"]:
            restarts += f" (gave up, exit {row['last_exit']})"
        state = "[green]up[/]" if row["state"] == "up" else "[red]down[/]"
        standby = ", ".join(f"{s['host']} (pid {s['pid']})" for s in row.get("standby", []))
        services.add_row(row["name"], state, str(row["host"] or ""), str(row["pid"] or ""),
                         "" if age is None else f"{age:.1f} s", standby or "-", restarts,
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
    _render_systemd(document.get("systemd"), console)
    if document["flags"]:
        flags = Table(title="flags")
        for column in ("kind", "subject", "detail"):
            flags.add_column(column)
        for flag in document["flags"]:
            flags.add_row(f"[yellow]{flag['kind']}[/]", flag["subject"], flag["detail"])
        console.print(flags)
    else:
        console.print("no flags: the live system matches the registry")


def _render_systemd(section: dict[str, Any] | None, console: Console) -> None:
    from rich.table import Table

    if not section or not section["present"]:
        console.print((section or {}).get("detail", "systemd: not present"))
        return
    units = Table(title="systemd units")
    for column in ("unit", "state", "restarts", "exit status", "file"):
        units.add_column(column)
    for row in [*section["units"], *section.get("jobs", [])]:
        colour = {"active": "green", "failed": "red"}.get(row["active_state"], "yellow")
        units.add_row(row["unit"], f"[{colour}]{row['active_state']} ({row['sub_state']})[/]",
                      str(row["restarts"] if row["restarts"] is not None else ""),
                      str(row["exit_status"] if row["exit_status"] is not None else ""),
                      row["fragment_path"] or "not installed")
    console.print(units)
    timers = Table(title="systemd timers")
    for column in ("timer", "state", "last run", "next run"):
        timers.add_column(column)
    for row in section["timers"]:
        timers.add_row(row["timer"], str(row["active_state"]), row["last_run"] or "never",
                       row["next_run"] or "-")
    console.print(timers)


def _truth(redis_url: str) -> dict[str, Any]:
    from quantum.ctl import systemd
    from quantum.ctl.truth import truth_map

    return systemd.add_to(truth_map(connect(redis_url), live_state()))


@app.command()
def status(redis_url: RedisUrl = DEFAULT_REDIS_URL, json: Json = False) -> None:
    """Services, streams and consumer groups, with everything that looks wrong flagged."""
    document = _truth(redis_url)
    if json:
        print_json(document)
    else:
        _render(document, make_console())


@app.command()
def report(redis_url: RedisUrl = DEFAULT_REDIS_URL, json: Json = False) -> None:
    """The whole truth map as one document: services, streams, flags, DLQ, supervisor."""
    from quantum.bus.streams import DLQ
    from quantum.ctl import systemd
    from quantum.ctl.truth import drift, truth_map

    client = connect(redis_url)
    state = live_state()
    document = systemd.add_to(truth_map(client, state))
    info = client.info("server")
    document["redis"] = {"url": redact_url(redis_url), "version": info.get("redis_version")}
    document["supervisor"] = None if state is None else {
        key: state.get(key) for key in ("pid", "started_at", "updated_at", "log_dir")
    }
    document["dlq"] = {"length": int(client.xlen(DLQ.key))}
    document["drift"] = drift(document)
    if json:
        print_json(document)
        return
    console = make_console()
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
    from quantum.ctl.truth import drift

    document = _truth(redis_url)
    typer.echo(document["systemd"]["detail"])
    differences = drift(document)
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
    return (f"{entry_id}  {text.get('type', '?')}  {ms_to_iso(text.get('ts'))}  "
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

    key = stream_key(name)
    client = connect(redis_url)
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

    entries = list_entries(connect(redis_url), count)
    if json:
        print_json(entries)
        return
    for entry in entries:
        event_type = entry["original"].get("type", "?") if isinstance(
            entry["original"], dict) else "?"
        typer.echo(f"{entry['id']}  {ms_to_iso(entry['ts'])}  {entry['stream']} "
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
    outcome = replay(connect(redis_url), ids or None)
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
