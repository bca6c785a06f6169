"""One training run of the sizing policy, as a function and as a child process.

``quantumctl rl train`` calls :func:`run`; the rl-trainer starts
``python -m quantum.rl.job …`` as a child process (training takes minutes; the service keeps
its heartbeat and handles events meanwhile) and reads the JSON result file it writes.

The opportunities are the history in ``data_dir`` (the last ``lookback_days``) plus, when a
Redis URL is given, every reward on ``rl_rewards`` (the fleet's own closed trades, at the
observation recorded at their entry). A new version is promoted only when asked to *and*
the walk-forward evaluation says it beats fixed sizing.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from quantum.rl.opportunities import Opportunities, concatenate, from_data, from_rewards
from quantum.rl.policy import PolicyRegistry
from quantum.rl.training import TrainingConfig, train_and_register

DAY_MS = 86_400_000


def fleet_rewards(redis_url: str) -> list[dict[str, Any]]:
    """Every ``rl.reward`` payload on the ``rl_rewards`` stream, oldest first."""
    import orjson

    from quantum.bus import connection
    from quantum.contracts.streams import RL_REWARDS

    client = connection.connect(redis_url)
    rewards: list[dict[str, Any]] = []
    cursor = "-"
    while True:
        entries = client.xrange(RL_REWARDS.key, min=cursor, count=1000)
        if not entries:
            break
        for _, fields in entries:
            if fields.get(b"type") == b"rl.reward":
                rewards.append(orjson.loads(fields[b"payload"]))
        last = entries[-1][0]
        cursor = "(" + (last.decode() if isinstance(last, bytes) else last)
        if len(entries) < 1000:
            break
    return rewards


def opportunities(data_dir: Path, symbols: tuple[str, ...] | None, lookback_days: float | None,
                  redis_url: str | None) -> tuple[Opportunities, dict[str, Any]]:
    """History plus the fleet's outcomes, and where they came from."""
    from quantum.replay.data import load_symbol

    chosen = symbols or None
    start_ms = None
    if lookback_days:
        from quantum.replay.data import available_symbols

        names = list(chosen) if chosen else available_symbols(data_dir)
        last = max(int(load_symbol(data_dir, s).open_time[-1]) for s in names)
        start_ms = last - int(lookback_days * DAY_MS)
    history = from_data(data_dir, chosen, start_ms=start_ms)
    fleet = from_rewards(fleet_rewards(redis_url)) if redis_url else from_rewards(())
    sources = {"data_dir": str(data_dir), "symbols": list(chosen) if chosen else "all",
               "history_trades": len(history), "fleet_trades": len(fleet)}
    return concatenate([history, fleet]), sources


def run(data_dir: Path, registry_dir: Path, config: TrainingConfig, *,
        symbols: tuple[str, ...] | None = None, lookback_days: float | None = None,
        redis_url: str | None = None, promote: bool = False) -> dict[str, Any]:
    """Train, register, and (if asked and deserved) promote; the result as a document."""
    table, sources = opportunities(data_dir, symbols, lookback_days, redis_url)
    registry = PolicyRegistry(registry_dir)
    previous = registry.active()
    version, metadata = train_and_register(table, registry, config, sources=sources)
    evaluation = metadata["evaluation"]
    promoted = False
    if promote and evaluation["beats_fixed"]:
        registry.promote(version)
        promoted = True
    elif not promote:
        registry.set_candidate(version)
    return {"version": version, "promoted": promoted, "previous": previous,
            "verdict": evaluation["verdict"], "beats_fixed": evaluation["beats_fixed"],
            "return_difference": evaluation.get("return_difference"),
            "sharpe_difference": evaluation.get("sharpe_difference"),
            "trades": len(table), "sources": sources, "seconds": metadata["seconds"],
            "evaluation": evaluation, "in_sample": metadata["in_sample"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantum.rl.job")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--symbols", default="")
    parser.add_argument("--lookback-days", type=float, default=0.0)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--timesteps", type=int, default=TrainingConfig.timesteps)
    parser.add_argument("--folds", type=int, default=TrainingConfig.folds)
    parser.add_argument("--seed", type=int, default=TrainingConfig.seed)
    parser.add_argument("--promote", action="store_true")
    arguments = parser.parse_args(argv)
    config = replace(TrainingConfig(), timesteps=arguments.timesteps, folds=arguments.folds,
                     seed=arguments.seed)
    symbols = tuple(s.strip().upper() for s in arguments.symbols.split(",") if s.strip())
    try:
        result = run(arguments.data, arguments.registry, config, symbols=symbols or None,
                     lookback_days=arguments.lookback_days or None,
                     redis_url=arguments.redis_url, promote=arguments.promote)
    except (ValueError, OSError, RuntimeError) as e:
        result = {"error": f"{type(e).__name__}: {e}"}
    arguments.result.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
