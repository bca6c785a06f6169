"""``quantumctl rl train`` and ``quantumctl rl evaluate``: the PPO sizing policy.

Training libraries (stable-baselines3, torch) are imported inside the commands.
"""

from __future__ import annotations

import json as jsonlib
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from quantum.ctl.cli import app, help_without_command
from quantum.ctl.errors import ArgumentError, CtlError

rl_app = typer.Typer(help="The RL sizing policy: train, evaluate.")
app.add_typer(rl_app, name="rl")
rl_app.callback(invoke_without_command=True)(help_without_command)


def _symbols(text: str | None) -> tuple[str, ...] | None:
    return tuple(s.strip().upper() for s in text.split(",") if s.strip()) if text else None


@rl_app.command("train")
def train_command(
    data: Annotated[Path, typer.Option("--data", help="Directory of <SYMBOL>-5m.csv.gz files.")],
    out: Annotated[Path, typer.Option("--out", help="The model directory; policies go to "
                                                    "OUT/rl.")] = Path("models"),
    symbols: Annotated[str | None, typer.Option("--symbols", help="Comma list.")] = None,
    lookback_days: Annotated[float, typer.Option("--lookback-days",
                                                 help="Newest days used (0: all).")] = 0.0,
    timesteps: Annotated[int, typer.Option("--timesteps", help="PPO steps per fit.")] = 30_000,
    folds: Annotated[int, typer.Option("--folds", help="Walk-forward folds.")] = 3,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    redis_url: Annotated[str | None, typer.Option(
        "--redis-url", help="Also learn from the fleet's rl_rewards on this Redis.")] = None,
    promote: Annotated[bool, typer.Option(
        "--promote", help="Promote if it beats fixed sizing out of sample.")] = False,
) -> None:
    """Walk-forward evaluation against fixed 1.0x sizing, a final fit, a new registry version."""
    from quantum.rl.job import run
    from quantum.rl.training import TrainingConfig

    if not data.is_dir():
        raise ArgumentError(f"--data {data} is not a directory")
    if timesteps < 64 or folds < 0:
        raise ArgumentError("--timesteps must be at least 64 and --folds not negative")
    config = replace(TrainingConfig(), timesteps=timesteps, folds=folds, seed=seed)
    try:
        result = run(data, out / "rl", config, symbols=_symbols(symbols),
                     lookback_days=lookback_days or None, redis_url=redis_url, promote=promote)
    except (ValueError, OSError) as e:
        raise CtlError(f"training failed: {e}") from None
    typer.echo(jsonlib.dumps({k: v for k, v in result.items() if k != "evaluation"},
                             indent=1, default=str))
    for fold in result["evaluation"]["folds"]:
        typer.echo(f"fold {fold['fold']} {fold['test_from'][:10]}..{fold['test_to'][:10]}: "
                   f"policy return {fold['policy']['return']:+.4%} sharpe "
                   f"{fold['policy']['sharpe_per_trade']:+.4f} | fixed 1.0x return "
                   f"{fold['fixed']['return']:+.4%} sharpe "
                   f"{fold['fixed']['sharpe_per_trade']:+.4f}")
    typer.echo(result["verdict"])


@rl_app.command("evaluate")
def evaluate_command(
    data: Annotated[Path, typer.Option("--data", help="Directory of <SYMBOL>-5m.csv.gz files.")],
    models: Annotated[Path, typer.Option("--models", help="The model directory.")] =
        Path("models"),
    version: Annotated[str | None, typer.Option("--version", help="Default: active.")] = None,
    symbols: Annotated[str | None, typer.Option("--symbols", help="Comma list.")] = None,
    start: Annotated[str | None, typer.Option("--start", help="First entry (ISO).")] = None,
) -> None:
    """Size the trades of DATA with a stored policy and with fixed 1.0x, side by side.

    Meaningful out of sample only on data after the policy's ``data_to`` (use ``--start``).
    """
    from datetime import UTC, datetime

    from quantum.rl.opportunities import from_data
    from quantum.rl.policy import PolicyRefused, PolicyRegistry
    from quantum.rl.training import fixed_action, run_sizing

    registry = PolicyRegistry(models / "rl")
    try:
        policy = registry.load_policy(version)
    except PolicyRefused as e:
        raise CtlError(str(e)) from None
    start_ms = None
    if start:
        moment = datetime.fromisoformat(start)
        start_ms = int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
                       * 1000)
    table = from_data(data, _symbols(symbols), start_ms=start_ms)
    if len(table) == 0:
        raise CtlError("no trade opportunities in the chosen data")
    manifest = registry.manifest(policy.version)
    from quantum.rl.environment import EnvironmentConfig

    environment = EnvironmentConfig(min_multiplier=policy.min_multiplier,
                                    max_multiplier=policy.max_multiplier)
    with_policy = run_sizing(table, environment, policy.action)
    fixed = run_sizing(table, environment, fixed_action(environment))
    report = {
        "version": policy.version, "trained_to": manifest.get("data_to"),
        "policy": with_policy, "fixed": fixed,
        "return_difference": with_policy["return"] - fixed["return"],
    }
    typer.echo(jsonlib.dumps(report, indent=1))
