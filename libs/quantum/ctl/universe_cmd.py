"""``quantumctl universe show|diff|apply``: the symbol universe and its policy.

``show`` prints the selection in force and the last ranking (every candidate, its figures
and reasons). ``diff`` re-ranks that ranking's candidates under proposed ``universe.*``
changes and says what would enter and leave, writing nothing. ``apply`` writes the changes
to the policy store as a new version (validated as a whole, audited with who and why); the
universe service ranks with it at its next ranking. No file is edited, ever.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from quantum.ctl.cli import (
    Json,
    RedisUrl,
    app,
    connect,
    help_without_command,
    ms_to_iso,
    print_json,
)
from quantum.ctl.errors import ArgumentError, CtlError
from quantum.ctl.risk_cmd import DEFAULT_REDIS_URL, Reason, operator, parse_assignment

universe_app = typer.Typer(help="The symbol universe: show, diff and apply policy changes.")
app.add_typer(universe_app, name="universe")
universe_app.callback(invoke_without_command=True)(help_without_command)

Assignments = Annotated[list[str], typer.Argument(
    help="KEY=VALUE of the universe policy, e.g. size=3 or blacklist='[\"ZECUSDT\"]'")]


def _changes(assignments: list[str]) -> dict[str, Any]:
    """``size=3`` / ``universe.size=3`` → ``{"universe.size": 3}``; other sections refused."""
    from quantum.risk.policy import UniversePolicy

    out: dict[str, Any] = {}
    for text in assignments:
        key, value = parse_assignment(text)
        short = key.removeprefix("universe.")
        if "." in short or short not in UniversePolicy.model_fields:
            known = ", ".join(UniversePolicy.model_fields)
            raise ArgumentError(f"unknown universe policy key {key!r}; known: {known}")
        out[f"universe.{short}"] = value
    return out


def _read(client: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    import orjson

    from quantum.registry.fleet import UNIVERSE_KEY, UNIVERSE_RANKING_KEY

    selection, ranking = client.get(UNIVERSE_KEY), client.get(UNIVERSE_RANKING_KEY)
    return (orjson.loads(selection) if selection else None,
            orjson.loads(ranking) if ranking else None)


def _candidates(ranking: dict[str, Any]) -> dict[str, Any]:
    from quantum.universe.ranking import Candidate

    return {m["symbol"]: Candidate(
        symbol=m["symbol"], quote_volume_24h=m["quote_volume_24h"], spread_bps=m["spread_bps"],
        spread_source=m["spread_source"], volatility_24h=m["volatility_24h"],
        listing_age_days=m["listing_age_days"], history_bars=m["history_bars"],
        completeness=m["completeness"], realised_pnl=m["realised_pnl"], trades=m["trades"],
    ) for m in ranking["members"]}


def _proposal(client: Any, changes: dict[str, Any], reason: str) -> dict[str, Any]:
    """The proposed policy and what it would select from the last ranking's candidates."""
    from quantum.risk import policy
    from quantum.universe.ranking import rank

    current = policy.load(client)
    try:
        proposed, _ = policy.compose(current, changes, by=operator(), reason=reason)
    except policy.PolicyError as e:
        raise ArgumentError(f"policy refused: {e}") from None
    _, ranking = _read(client)
    out: dict[str, Any] = {"changes": changes, "policy_version": current.version,
                           "ranked": ranking is not None}
    if ranking is None:
        return out
    before = tuple(ranking["symbols"])
    after = rank(_candidates(ranking), proposed.universe, before)
    out.update(
        ranked_at=ranking["ts"], before=list(before), after=list(after.symbols),
        entered=[s for s in after.symbols if s not in before],
        left=[s for s in before if s not in after.symbols],
        reasons={m.symbol: list(m.reasons) for m in after.members
                 if m.symbol not in before or m.symbol not in after.symbols},
    )
    return out


def _print_proposal(found: dict[str, Any]) -> None:
    changes = ", ".join(f"{k}={v}" for k, v in found["changes"].items())
    typer.echo(f"proposed: {changes} (policy version {found['policy_version']} in force)")
    if not found["ranked"]:
        typer.echo("no ranking yet: the universe service has not ranked; nothing to compare")
        return
    typer.echo(f"on the ranking of {ms_to_iso(found['ranked_at'])}: "
               f"{len(found['before'])} → {len(found['after'])} symbols")
    for symbol in found["entered"]:
        typer.echo(f"  + {symbol}")
    for symbol in found["left"]:
        typer.echo(f"  - {symbol}: {'; '.join(found['reasons'].get(symbol, []))}")
    if not found["entered"] and not found["left"]:
        typer.echo("  (no symbol enters or leaves)")


@universe_app.command("show")
def universe_show(
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    json: Json = False,
    all_members: Annotated[bool, typer.Option(
        "--all", help="Every candidate, not only the first 30 ranks.")] = False,
) -> None:
    """The selection in force, the universe policy and the last ranking with its reasons."""
    from quantum.risk import policy

    client = connect(redis_url)
    selection, ranking = _read(client)
    current = policy.load(client)
    universe = current.universe.model_dump(mode="json")
    document = {"selection": selection, "policy": universe,
                "policy_version": current.version, "ranking": ranking}
    if json:
        print_json(document)
        return
    if selection is None:
        typer.echo("no universe published yet (the governor uses the policy's symbols alone)")
    else:
        typer.echo(f"{len(selection['symbols'])} symbols in force since "
                   f"{ms_to_iso(selection['ts'])} (policy v{selection['policy_version']}, "
                   f"{selection['source']}): {', '.join(selection['symbols']) or '(none)'}")
    settings = ", ".join(f"{k}={v}" for k, v in universe.items())
    typer.echo(f"policy v{current.version}: {settings}")
    if ranking is None:
        return
    members = ranking["members"] if all_members else ranking["members"][:30]
    typer.echo(f"ranking of {ms_to_iso(ranking['ts'])}: {len(ranking['members'])} candidates")
    typer.echo(f"  {'rank':>4} {'symbol':<14} {'in':<3} {'score':>6} {'volume 24h':>11} "
               f"{'spread':>7} {'vol 24h':>7} {'bars':>6}  reasons")
    for m in members:
        spread = f"{m['spread_bps']:.1f}" if m["spread_bps"] is not None else "-"
        vol = f"{m['volatility_24h']:.3f}" if m["volatility_24h"] is not None else "-"
        typer.echo(f"  {m['rank']:>4} {m['symbol']:<14} {'yes' if m['selected'] else 'no':<3} "
                   f"{m['score']:>6.3f} {m['quote_volume_24h']:>11.3g} {spread:>7} {vol:>7} "
                   f"{m['history_bars']:>6}  {'; '.join(m['reasons'])}")


@universe_app.command("diff")
def universe_diff(
    assignments: Assignments,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    json: Json = False,
) -> None:
    """What the proposed universe policy would select from the last ranking (writes nothing)."""
    changes = _changes(assignments)  # bad keys are refused before Redis is asked
    found = _proposal(connect(redis_url), changes, reason="diff")
    if json:
        print_json(found)
        return
    _print_proposal(found)


@universe_app.command("apply")
def universe_apply(
    assignments: Assignments,
    reason: Reason,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
) -> None:
    """Write the universe policy change as a new policy version (validated, audited)."""
    from quantum.risk import policy

    if not reason.strip():
        raise ArgumentError("--reason must not be empty")
    changes = _changes(assignments)
    client = connect(redis_url)
    found = _proposal(client, changes, reason=reason)
    try:
        new = policy.write(client, found["changes"], by=operator(), reason=reason.strip())
    except policy.PolicyError as e:
        raise CtlError(f"policy refused: {e}") from None
    _print_proposal(found)
    typer.echo(f"policy version {new.version} in force; the universe service ranks with it "
               "at its next ranking")
