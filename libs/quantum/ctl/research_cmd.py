"""``quantumctl walkforward`` and ``quantumctl optimize``: research through the engine.

Both train the edge model per fold and judge strategies by full backtests through the
fleet's handlers (:mod:`quantum.research`); the training libraries are imported inside the
commands.
"""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from quantum.ctl.cli import Json, app, make_console
from quantum.ctl.errors import ArgumentError, CtlError
from quantum.ctl.replay_cmd import DataDir, End, Start, Symbols, parse_range

Work = Annotated[Path, typer.Option("--work", help="Where fold models are kept (a cache "
                                    "keyed by data, horizon and configuration).")]
Folds = Annotated[int, typer.Option("--folds", min=1, max=12, help="Walk-forward folds.")]
Rounds = Annotated[int, typer.Option("--rounds", min=1, help="Boosting rounds of the edge "
                                     "model.")]
Report = Annotated[Path | None, typer.Option("--report", help="Write the JSON report here.")]
DEFAULT_WORK = Path("reports/research")


def _research(data: Path, symbols: str, start: str | None, end: str | None, folds: int,
              rounds: int, work: Path, params: dict[str, Any]) -> Any:
    from quantum.ml.edge import EdgeConfig
    from quantum.research.walkforward import Research, StrategyParams, WalkForwardConfig

    symbol_list, start_time, end_time = parse_range(data, symbols, start, end)
    try:
        config = WalkForwardConfig(folds=folds, edge=EdgeConfig(rounds=rounds),
                                   params=StrategyParams(**params))
    except ValueError as e:
        raise ArgumentError(" ".join(str(e).split())) from None
    try:
        return Research(data, symbol_list, work, config, start=start_time, end=end_time,
                        progress=_progress)
    except ValueError as e:
        raise CtlError(f"cannot build the research dataset: {e}") from None


def _progress(line: str) -> None:
    typer.echo(line, err=True)


def _write(report: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(jsonlib.dumps(report, indent=1, default=str) + "\n")


COLUMNS = (("net", "net_return", "{:+.2%}"), ("Sharpe", "sharpe", "{:+.2f}"),
           ("max DD", "max_drawdown", "{:.1%}"), ("trades", "trades", "{:d}"),
           ("fees", "fees", "{:,.0f}"), ("funding", "funding", "{:+,.0f}"),
           ("turnover", "turnover", "{:.1f}x"), ("exposure", "exposure", "{:.0%}"),
           ("long", "long_share", "{:.0%}"))


def walkforward_table(report: dict[str, Any]) -> Table:
    table = Table(title="Walk-forward test blocks (full backtests, all costs)")
    table.add_column("fold")
    table.add_column("strategy")
    for title, _, _ in COLUMNS:
        table.add_column(title, justify="right")
    rows = [(str(f["fold"]) + " " + f["test"][0][:10], f["results"]) for f in report["folds"]]
    rows.append(("total", report["total"]))
    for label, results in rows:
        for index, (name, row) in enumerate(results.items()):
            table.add_row(label if index == 0 else "", name,
                          *[fmt.format(row[key]) for _, key, fmt in COLUMNS])
        table.add_section()
    return table


@app.command("walkforward")
def walkforward_command(
    data: DataDir,
    symbols: Symbols,
    start: Start = None,
    end: End = None,
    folds: Folds = 4,
    horizon: Annotated[int, typer.Option("--horizon", min=1, help="Bars predicted and held.")] = 48,
    margin: Annotated[float, typer.Option("--margin", min=0.0, help="Expected return beyond "
                                          "the full cost needed to act (log return).")] = 0.001,
    take_profit: Annotated[float, typer.Option("--take-profit", min=0.1, help="Take-profit "
                                               "in R.")] = 3.0,
    stop: Annotated[float, typer.Option("--stop", min=0.1, help="Stop in ATR.")] = 2.0,
    risk: Annotated[float, typer.Option("--risk", min=0.0001, max=0.1, help="Equity risked "
                                        "per trade.")] = 0.005,
    leverage: Annotated[int, typer.Option("--leverage", min=1, max=10)] = 3,
    entry: Annotated[str, typer.Option("--entry", help="taker or maker entries.")] = "taker",
    rounds: Rounds = 150,
    work: Work = DEFAULT_WORK,
    report_path: Report = None,
    json: Json = False,
) -> None:
    """Train per fold, backtest every test block beside flat, buy-and-hold, momentum and the
    fleet's baseline model; nothing is chosen on a test block."""
    if entry not in ("taker", "maker"):
        raise ArgumentError(f"--entry must be taker or maker, not {entry!r}")
    from quantum.research.walkforward import run_walkforward

    research = _research(data, symbols, start, end, folds, rounds, work, {
        "horizon": horizon, "cost_margin": margin, "take_profit_r": take_profit,
        "stop_atr_multiple": stop, "risk_per_trade": risk, "leverage": leverage,
        "entry_order": entry})
    try:
        report = run_walkforward(research, _progress)
    except ValueError as e:
        raise CtlError(" ".join(str(e).split())) from None
    _write(report, report_path)
    if json:
        typer.echo(jsonlib.dumps(report, indent=1, default=str))
        return
    console = make_console()
    console.print(walkforward_table(report))
    console.print(report["verdict"]["summary"])


@app.command("optimize")
def optimize_command(
    data: DataDir,
    symbols: Symbols,
    start: Start = None,
    end: End = None,
    folds: Folds = 4,
    trials: Annotated[int, typer.Option("--trials", min=1, help="Trials this worker runs.")] = 20,
    study: Annotated[str, typer.Option("--study", help="Study name (shared in a storage).")
                     ] = "quantum-edge",
    storage: Annotated[str | None, typer.Option(
        "--storage", help="postgresql://user@host/db (several workers share one study) or "
        "sqlite:///file.db; default: in memory.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed; give each worker its "
                                      "own.")] = 7,
    horizons: Annotated[str, typer.Option("--horizons", help="Horizons to search (bars).")
                        ] = "12,48,144,288",
    rounds: Rounds = 150,
    final: Annotated[bool, typer.Option("--final/--no-final", help="Walk the best trial "
                                        "forward over the test blocks.")] = True,
    work: Work = DEFAULT_WORK,
    report_path: Report = None,
    json: Json = False,
) -> None:
    """Search the edge strategy's parameters on validation blocks; report the best once on
    the test blocks, with the validation-test spread and the deflated Sharpe ratio."""
    from quantum.research.optimize import SearchSpace, run_optimize

    try:
        chosen = tuple(int(h) for h in horizons.split(",") if h.strip())
    except ValueError:
        raise ArgumentError(f"--horizons {horizons!r} is not a comma list of bars") from None
    if not chosen or min(chosen) < 1:
        raise ArgumentError("--horizons needs at least one positive number of bars")
    if storage is not None and not storage.startswith(("postgresql://", "postgres://",
                                                       "postgresql+psycopg://", "sqlite:///")):
        raise ArgumentError("--storage must be a postgresql:// or sqlite:/// URL")
    research = _research(data, symbols, start, end, folds, rounds, work,
                         {"horizon": chosen[0]})
    try:
        report = run_optimize(research, trials=trials, study_name=study, storage=storage,
                              seed=seed, space=SearchSpace(horizons=chosen), final=final,
                              progress=_progress)
    except ValueError as e:
        raise CtlError(" ".join(str(e).split())) from None
    except Exception as e:  # the storage: a database that refuses is one line, not a trace
        if type(e).__module__.startswith(("sqlalchemy", "psycopg", "optuna")):
            raise CtlError(f"the study storage failed: {type(e).__name__}: "
                           f"{' '.join(str(e).split())[:200]}") from None
        raise
    _write(report, report_path)
    if json:
        typer.echo(jsonlib.dumps(report, indent=1, default=str))
        return
    console = make_console()
    best = report["best"]
    console.print(f"best of {report['trials']} trials: #{best['number']} {best['params']} "
                  f"(validation score {best['score']:+.3f})")
    guard = report["guard"]
    console.print(f"deflated Sharpe ratio: {guard['deflated_sharpe']}")
    if "test" in report:
        console.print(walkforward_table(report["test"]))
        console.print(f"validation vs test: net {guard['validation_net']:+.2%} vs "
                      f"{guard['test_net']:+.2%}, Sharpe {guard['validation_sharpe']:+.2f} vs "
                      f"{guard['test_sharpe']:+.2f}")
        console.print(report["test"]["verdict"]["summary"])
