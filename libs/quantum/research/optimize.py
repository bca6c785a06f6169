"""``quantumctl optimize``: search the edge strategy's parameters, judge the winner once.

Each Optuna trial samples :class:`~quantum.research.walkforward.StrategyParams` (horizon,
cost margin, take-profit and stop multiples, risk per trade, leverage, entry order type)
and backtests them through the engine on every fold's **validation** block, with the
fold's edge model (trained on the train block only; models are cached per horizon and
fold, so trials share them). The score is the Sharpe of the chained validation days,
penalised when the drawdown passes the policy's brake. Test blocks are never seen by a
trial: after the search the best parameters are walked forward once over the test blocks
(:func:`~quantum.research.walkforward.run_walkforward`) and the report puts the two side by
side, with the overfitting guard:

* the **validation - test spread** of net return and Sharpe;
* the **deflated Sharpe ratio** (Bailey and Lopez de Prado, 2014): the probability that the
  best trial's validation Sharpe beats the best of ``N`` trials of a strategy with no skill,
  given the spread of the trials' Sharpes and the skew and kurtosis of its daily returns.

With ``--storage postgresql://...`` every worker on every machine pointed at the same
database and study name shares one study (Optuna's RDB storage): trials are handed out by
the database, each worker records its name on its trials. Use a distinct ``--seed`` per
worker, or they propose the same parameters.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from quantum.research import trading
from quantum.research.walkforward import (
    HORIZONS,
    Research,
    StrategyParams,
    edge_strategy,
    run_walkforward,
)

Progress = Callable[[str], None]
EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class SearchSpace:
    horizons: tuple[int, ...] = HORIZONS
    margin: tuple[float, float] = (0.0, 0.01)
    take_profit_r: tuple[float, float] = (1.0, 6.0)
    stop_atr_multiple: tuple[float, float] = (1.0, 5.0)
    risk_per_trade: tuple[float, float] = (0.002, 0.02)
    leverage: tuple[int, int] = (1, 5)
    entry_orders: tuple[str, ...] = ("taker", "maker")
    drawdown_brake: float = 0.20


def storage_url(url: str) -> str:
    """SQLAlchemy's URL for Optuna: ``postgresql://`` goes through psycopg 3 (installed)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def sample(trial: Any, space: SearchSpace) -> StrategyParams:
    return StrategyParams(
        horizon=trial.suggest_categorical("horizon", list(space.horizons)),
        cost_margin=trial.suggest_float("cost_margin", *space.margin),
        take_profit_r=trial.suggest_float("take_profit_r", *space.take_profit_r),
        stop_atr_multiple=trial.suggest_float("stop_atr_multiple", *space.stop_atr_multiple),
        risk_per_trade=trial.suggest_float("risk_per_trade", *space.risk_per_trade, log=True),
        leverage=trial.suggest_int("leverage", *space.leverage),
        entry_order=trial.suggest_categorical("entry_order", list(space.entry_orders)))


def validate(research: Research, params: StrategyParams) -> trading.Figures:
    """``params`` over every fold's validation block, chained."""
    parts = []
    for fold in research.folds(params.horizon):
        version, _ = research.model(params.horizon, fold)
        figures, _ = trading.backtest(edge_strategy(params, research.models_dir, version),
                                      research.data_dir, research.symbols, fold.validation,
                                      research.processes)
        parts.append(figures)
    return trading.total(parts)


def score(figures: trading.Figures, brake: float) -> float:
    over = max(0.0, figures.max_drawdown - brake)
    return figures.sharpe - 10.0 * over


def deflated_sharpe(daily: list[float], trial_sharpes: list[float]) -> float | None:
    """P(the selected daily Sharpe is real) after ``len(trial_sharpes)`` trials."""
    returns = np.asarray(daily, dtype=np.float64)
    trials = np.asarray([s for s in trial_sharpes if math.isfinite(s)])
    if returns.size < 3 or trials.size < 2 or returns.std(ddof=1) == 0:
        return None
    sr = returns.mean() / returns.std(ddof=1)
    normal = NormalDist()
    n = trials.size
    sr0 = math.sqrt(float(trials.var(ddof=1))) * (
        (1 - EULER_GAMMA) * normal.inv_cdf(1 - 1 / n)
        + EULER_GAMMA * normal.inv_cdf(1 - 1 / (n * math.e)))
    centred = returns - returns.mean()
    skew = float((centred ** 3).mean() / returns.std() ** 3)
    kurtosis = float((centred ** 4).mean() / returns.std() ** 4)
    denominator = 1 - skew * sr + (kurtosis - 1) / 4 * sr ** 2
    if denominator <= 0:
        return None
    return float(normal.cdf((sr - sr0) * math.sqrt(returns.size - 1) / math.sqrt(denominator)))


def run_optimize(research: Research, *, trials: int, study_name: str, storage: str | None,
                 seed: int, space: SearchSpace | None = None, final: bool = True,
                 progress: Progress = print) -> dict[str, Any]:
    import optuna

    space = space or SearchSpace()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    study = _open_study(optuna, study_name, storage, seed, trials)
    started = time.perf_counter()

    def objective(trial: Any) -> float:
        params = sample(trial, space)
        figures = validate(research, params)
        value = score(figures, space.drawdown_brake)
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("validation", figures.row())
        trial.set_user_attr("daily_sharpe", _daily_sharpe(figures.daily_returns))
        trial.set_user_attr("daily_returns", figures.daily_returns)
        progress(f"trial {trial.number} [{worker}]: {params.model_dump()} -> validation net "
                 f"{figures.net_return:+.2%}, Sharpe {figures.sharpe:+.2f}, DD "
                 f"{figures.max_drawdown:.1%}, {figures.trades} trades; score {value:+.3f}")
        return value

    study.optimize(objective, n_trials=trials)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial
    params = StrategyParams(**{k: v for k, v in best.params.items()})
    report: dict[str, Any] = {
        "kind": "optimize", "study": study_name, "storage": _redacted(storage),
        "seed": seed, "trials": len(done), "worker": worker,
        "search_seconds": time.perf_counter() - started,
        "best": {"number": best.number, "params": best.params, "score": best.value,
                 "validation": best.user_attrs.get("validation"),
                 "worker": best.user_attrs.get("worker")},
        "workers": sorted({str(t.user_attrs.get("worker")) for t in done}),
        "guard": {"deflated_sharpe": deflated_sharpe(
            best.user_attrs.get("daily_returns", []),
            [t.user_attrs.get("daily_sharpe", float("nan")) for t in done]),
            "trials": len(done)},
    }
    if final:
        progress(f"best trial {best.number}: {best.params}; walking it forward over the "
                 "test blocks")
        research.config = research.config.model_copy(update={"params": params})
        test = run_walkforward(research, progress)
        report["test"] = test
        validation = best.user_attrs.get("validation") or {}
        edge = test["total"].get("edge", {})
        report["guard"].update(
            validation_net=validation.get("net_return"), test_net=edge.get("net_return"),
            validation_sharpe=validation.get("sharpe"), test_sharpe=edge.get("sharpe"),
            net_spread=(validation.get("net_return", 0.0) - edge.get("net_return", 0.0)),
            sharpe_spread=(validation.get("sharpe", 0.0) - edge.get("sharpe", 0.0)))
    return report


def _open_study(optuna: Any, name: str, storage: str | None, seed: int, trials: int) -> Any:
    """Create or join the study. Workers started together race to create the storage's
    schema (PostgreSQL refuses the second ``CREATE TYPE``); the loser retries and joins."""
    import random

    from sqlalchemy.exc import IntegrityError, ProgrammingError

    attempts = 5
    while True:
        attempts -= 1
        try:
            return optuna.create_study(
                study_name=name, direction="maximize", load_if_exists=True,
                storage=storage_url(storage) if storage else None,
                sampler=optuna.samplers.TPESampler(seed=seed,
                                                   n_startup_trials=min(10, trials)))
        except (IntegrityError, ProgrammingError, optuna.exceptions.DuplicatedStudyError):
            if attempts == 0:
                raise
            time.sleep(0.5 + random.random())


def _daily_sharpe(daily: list[float]) -> float:
    array = np.asarray(daily, dtype=np.float64)
    if array.size < 2 or array.std(ddof=1) == 0:
        return 0.0
    return float(array.mean() / array.std(ddof=1))


def _redacted(url: str | None) -> str | None:
    """The storage URL without a password (reports and logs never carry secrets)."""
    if url is None or "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
