"""``quantumctl walkforward``: train per fold, backtest each test block, beside baselines.

Per fold (:mod:`quantum.research.folds`): the edge model's booster is fitted on the fit part
of the train block and calibrated on its calibration part; the version is saved in the
run's own registry; then the fold's **test** block is backtested through the engine with
that version, and so are the baselines on the same block: **flat**, **buy_and_hold**
(equal weight), **momentum** (the rule that trades its signal) and the fleet's **baseline**
model with the fleet's default policy. Nothing is chosen on a test block, and nothing on
the validation block either (that block is :mod:`quantum.research.optimize`'s).

The report has, per fold and chained over all folds, every strategy's net return, Sharpe,
max drawdown, trades, fees, funding, turnover, exposure and long/short share, plus the edge
model's calibration on each test block (predicted vs realised forward return by decile).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from quantum.features import FEATURE_NAMES, SCHEMA_HASH
from quantum.ml.dataset import Dataset, load_dataset
from quantum.ml.edge import EdgeConfig, calibration_table, fit_edge, save_version
from quantum.ml.labels import LabelSpec
from quantum.ml.registry import ModelRegistry, code_version
from quantum.research import trading
from quantum.research.folds import FoldRows, folds, forward_return
from quantum.research.trading import Figures, Strategy

Progress = Callable[[str], None]
BASELINES = ("flat", "buy_and_hold", "momentum", "baseline")
HORIZONS = (12, 48, 144, 288)


class StrategyParams(BaseModel):
    """The parameters of the edge strategy (what ``optimize`` searches).

    Attributes:
        horizon: bars the model predicts and the position is held (time stop).
        cost_margin: expected return beyond the full cost needed to act (log return).
        take_profit_r / stop_atr_multiple: the HORIZON exit profile's levels (R = stop).
        risk_per_trade: equity risked to the stop per trade.
        leverage: position leverage.
        entry_order: taker (market) or maker (post-only limit) entries.
        maker_offset_bps: a maker entry's distance from the signal price.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizon: int = Field(48, ge=1)
    cost_margin: float = Field(0.001, ge=0)
    take_profit_r: float = Field(3.0, gt=0)
    stop_atr_multiple: float = Field(2.0, gt=0)
    risk_per_trade: float = Field(0.005, gt=0, le=0.1)
    leverage: int = Field(3, ge=1, le=10)
    entry_order: Literal["taker", "maker"] = "taker"
    maker_offset_bps: float = Field(2.0, ge=0)

    def policy(self) -> tuple[tuple[str, Any], ...]:
        """Policy overrides: the gate decides (confidence = P(beating the cost) > 0.5)."""
        return (("sizing.exit_profile", "HORIZON"), ("sizing.take_profit_r", self.take_profit_r),
                ("sizing.stop_atr_multiple", self.stop_atr_multiple),
                ("sizing.risk_per_trade", self.risk_per_trade),
                ("sizing.leverage", self.leverage), ("sizing.min_confidence", 0.5),
                ("risk.min_confidence", 0.5), ("strategy.cost_margin", self.cost_margin),
                ("sizing.entry_order", self.entry_order),
                ("sizing.maker_offset_bps", self.maker_offset_bps))


class WalkForwardConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    folds: int = Field(4, ge=1)
    params: StrategyParams = StrategyParams()
    edge: EdgeConfig = EdgeConfig()
    baselines: tuple[str, ...] = BASELINES
    validation_share: float = 0.1
    test_share: float = 0.1


def edge_strategy(params: StrategyParams, models_dir: Path, version: str) -> Strategy:
    return Strategy("edge", f"edge:{version}", (("QT_MODELS_DIR", str(models_dir)),),
                    params.policy())


def momentum_strategy(params: StrategyParams) -> Strategy:
    """Momentum over the lookback nearest the horizon, held for the horizon, taker entries,
    with the same sizing and exits as the edge strategy."""
    lookback = min((12, 24, 48), key=lambda n: abs(n - params.horizon))
    policy = tuple((k, v) for k, v in params.policy()
                   if k not in ("sizing.entry_order", "sizing.maker_offset_bps"))
    return Strategy("momentum", "momentum",
                    (("QT_MOMENTUM_LOOKBACK", str(lookback)),
                     ("QT_MOMENTUM_HOLD_BARS", str(params.horizon))), policy)


BASELINE_MODEL = Strategy("baseline", "baseline")


@dataclass
class Research:
    """One dataset, its folds, and the edge models trained on them (cached on disk)."""

    data_dir: Path
    symbols: tuple[str, ...]
    work_dir: Path
    config: WalkForwardConfig
    start: datetime | None = None
    end: datetime | None = None
    progress: Progress = print
    processes: int | None = None  # the engine's: None = two-stage pipeline on 2+ cores
    data: Dataset = field(init=False)
    _folds: dict[int, list[FoldRows]] = field(default_factory=dict, init=False)
    _returns: dict[int, np.ndarray] = field(default_factory=dict, init=False)
    _trained: dict[tuple[int, int], tuple[str, dict[str, Any]]] = field(
        default_factory=dict, init=False)

    def __post_init__(self) -> None:
        started = time.perf_counter()
        self.data = load_dataset(self.data_dir, self.symbols, start=self.start, end=self.end,
                                 spec=LabelSpec(horizon=max(HORIZONS)))
        self.load_seconds = time.perf_counter() - started
        self.progress(f"dataset: {len(self.data)} rows x {len(FEATURE_NAMES)} features, "
                      f"{self.data.time_range[0]} .. {self.data.time_range[1]} "
                      f"({self.load_seconds:.0f}s)")
        self.registry = ModelRegistry(self.models_dir)

    @property
    def models_dir(self) -> Path:
        return self.work_dir / "models"

    def folds(self, horizon: int) -> list[FoldRows]:
        if horizon not in self._folds:
            self._folds[horizon] = folds(
                self.data, count=self.config.folds, horizon=horizon,
                validation_share=self.config.validation_share,
                test_share=self.config.test_share)
        return self._folds[horizon]

    def returns(self, horizon: int) -> np.ndarray:
        if horizon not in self._returns:
            self._returns[horizon] = forward_return(self.data, horizon)
        return self._returns[horizon]

    def key(self, horizon: int, fold: int) -> str:
        text = json.dumps({"symbols": self.symbols, "range": self.data.time_range,
                           "rows": len(self.data), "edge": self.config.edge.model_dump(),
                           "folds": self.config.folds, "schema": SCHEMA_HASH,
                           "code": code_version(), "horizon": horizon, "fold": fold},
                          sort_keys=True)
        return f"wf-h{horizon}-f{fold}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"

    def model(self, horizon: int, fold: FoldRows) -> tuple[str, dict[str, Any]]:
        """The fold's edge version for ``horizon``: trained once, then read from disk."""
        cached = self._trained.get((horizon, fold.number))
        if cached is not None:
            return cached
        version = self.key(horizon, fold.number)
        if version in self.registry.versions():
            facts = self.registry.manifest(version)["edge_facts"]
        else:
            returns = self.returns(horizon)
            fit = fold.fit[np.isfinite(returns[fold.fit])]
            calibration = fold.calibration[np.isfinite(returns[fold.calibration])]
            model, facts = fit_edge(self.data.features, returns, fit, calibration, horizon,
                                    FEATURE_NAMES, self.config.edge)
            test_rows = np.flatnonzero((self.data.open_time >= fold.test.start_ms)
                                       & (self.data.open_time < fold.test.end_ms))
            facts["test_calibration"] = calibration_table(
                model.expected_return(self.data.features[test_rows]), returns[test_rows])
            save_version(self.registry, version, model, self.data.features[fit], {
                "fold": fold.number,
                "data": {"source": str(self.data_dir), "symbols": list(self.symbols),
                         "train_range": fold.train.iso()},
                "edge_facts": facts}, self.config.edge)
            self.progress(f"  fold {fold.number} h{horizon}: edge fitted on {fit.size} rows "
                          f"in {facts['fit_seconds']:.0f}s, calibration slope on test "
                          f"{facts['test_calibration'].get('slope', 0):+.2f}")
        self._trained[(horizon, fold.number)] = (version, facts)
        return version, facts


def run_walkforward(research: Research, progress: Progress = print) -> dict[str, Any]:
    """Every fold's test block: the edge strategy and the baselines, through the engine."""
    config = research.config
    params = config.params
    started = time.perf_counter()
    per_fold: list[dict[str, Any]] = []
    parts: dict[str, list[Figures]] = {}
    for fold in research.folds(params.horizon):
        version, facts = research.model(params.horizon, fold)
        block = fold.test
        progress(f"fold {fold.number}: test {block.iso()[0]} .. {block.iso()[1]}")
        results: dict[str, Figures] = {}
        strategies = [edge_strategy(params, research.models_dir, version)]
        if "momentum" in config.baselines:
            strategies.append(momentum_strategy(params))
        if "baseline" in config.baselines:
            strategies.append(BASELINE_MODEL)
        for strategy in strategies:
            results[strategy.name], _ = trading.backtest(strategy, research.data_dir,
                                                         research.symbols, block,
                                                         research.processes)
            row = results[strategy.name]
            progress(f"  {strategy.name:>12}: net {row.net_return:+.2%}, Sharpe "
                     f"{row.sharpe:+.2f}, DD {row.max_drawdown:.1%}, {row.trades} trades, "
                     f"fees {row.fees:.0f}")
        if "flat" in config.baselines:
            results["flat"] = trading.flat(block)
        if "buy_and_hold" in config.baselines:
            results["buy_and_hold"] = trading.buy_and_hold(research.data_dir,
                                                           research.symbols, block)
        for name, row in results.items():
            parts.setdefault(name, []).append(row)
        per_fold.append({"fold": fold.number, "train": fold.train.iso(),
                         "test": block.iso(), "model_version": version,
                         "calibration": facts.get("test_calibration"),
                         "results": {n: r.row() for n, r in results.items()}})
    totals = {name: trading.total(rows) for name, rows in parts.items()}
    return {"kind": "walkforward", "data_dir": str(research.data_dir),
            "symbols": list(research.symbols), "range": list(research.data.time_range),
            "config": config.model_dump(mode="json"), "folds": per_fold,
            "total": {n: t.row() for n, t in totals.items()},
            "verdict": verdict(totals, per_fold),
            "seconds": time.perf_counter() - started,
            "dataset_seconds": research.load_seconds}


def verdict(totals: dict[str, Figures], per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """Does the edge strategy beat each baseline, net of costs, over all test blocks?"""
    edge = totals.get("edge")
    if edge is None:
        return {"summary": "no edge strategy was run"}
    out: dict[str, Any] = {}
    positive = sum(1 for f in per_fold if f["results"]["edge"]["net_return"] > 0)
    lines = [f"edge: net {edge.net_return:+.2%} over {len(per_fold)} test folds "
             f"({positive} positive), Sharpe {edge.sharpe:+.2f}, max DD {edge.max_drawdown:.1%}"]
    beats_all = True
    for name, other in totals.items():
        if name == "edge":
            continue
        better = edge.sharpe > other.sharpe and edge.net_return > other.net_return
        beats_all &= better
        out[name] = {"beats_on_sharpe_and_net": better, "net": other.net_return,
                     "sharpe": other.sharpe}
        lines.append(f"{name}: net {other.net_return:+.2%}, Sharpe {other.sharpe:+.2f} -> "
                     f"edge {'beats' if better else 'does NOT beat'} it")
    out.update(beats_all_baselines=beats_all, positive_folds=positive, folds=len(per_fold),
               summary=lines[0] + ("; beats every baseline" if beats_all else
                                   "; does NOT beat every baseline"),
               details=lines)
    return out
