"""The shadow test: a candidate and the active model predict the same live bars.

Both see every feature vector; a row counts once both made a prediction on it and its
outcome is known, ``horizon`` bars later, from the closes in later vectors (the label of
:mod:`quantum.ml.labels`). The metric is fixed when the test starts (``metric``), so the
decision cannot be chosen after seeing the numbers. The candidate wins when its mean score
beats the active model's by at least ``margin`` after ``needed`` resolved rows.

The test also records its **window** (the first and last bar it saw, and the symbols), so
the CLM can backtest both models over exactly those bars through the in-process engine
(:func:`backtest_verdict` judges the two reports; ``services.clm.judge`` runs them).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantum.ml.labels import direction_labels
from quantum.models.ensemble import Row, ServedEnsemble

BAR_MS = 300_000


def row_score(metric: str, probabilities: tuple[float, float, float], label: int) -> float:
    if metric == "log_loss":
        return -math.log(max(probabilities[label], 1e-12))
    return sum((p - (1.0 if k == label else 0.0)) ** 2 for k, p in enumerate(probabilities))


@dataclass
class ShadowTest:
    candidate: ServedEnsemble
    active: ServedEnsemble
    metric: str
    needed: int
    horizon: int
    dead_zone: float
    margin: float = 0.0
    candidate_total: float = 0.0
    active_total: float = 0.0
    resolved: int = 0
    pending: dict[str, deque[tuple[int, float, Any, Any]]] = field(default_factory=dict)
    first_ms: int | None = None  # close time of the first bar the test saw
    last_ms: int | None = None  # and of the newest
    symbols: set[str] = field(default_factory=set)

    def observe(self, symbol: str, close_time: int, close: float, values: dict[str, float],
                window: np.ndarray | None) -> None:
        """Resolve rows whose outcome this bar reveals, then predict this bar with both."""
        queue = self.pending.setdefault(symbol, deque())
        self.first_ms = close_time if self.first_ms is None else min(self.first_ms, close_time)
        self.last_ms = close_time if self.last_ms is None else max(self.last_ms, close_time)
        self.symbols.add(symbol)
        while queue and queue[0][0] + self.horizon * BAR_MS <= close_time:
            then, then_close, candidate, active = queue.popleft()
            if then + self.horizon * BAR_MS != close_time:
                continue  # a gap in the bars: the outcome at exactly h bars is unknown
            future = np.array([math.log(close / then_close)])
            label = int(direction_labels(future, self.dead_zone)[0])
            self.candidate_total += row_score(self.metric, candidate, label)
            self.active_total += row_score(self.metric, active, label)
            self.resolved += 1
        row = [Row(values, window)]
        candidate_prediction = self.candidate.predict_batch(row)[0]
        active_prediction = self.active.predict_batch(row)[0]
        if candidate_prediction is None or active_prediction is None:
            return
        queue.append((close_time, close, _classes(candidate_prediction),
                      _classes(active_prediction)))

    @property
    def done(self) -> bool:
        return self.resolved >= self.needed

    def scores(self) -> tuple[float, float]:
        if not self.resolved:
            return float("nan"), float("nan")
        return self.candidate_total / self.resolved, self.active_total / self.resolved

    def candidate_wins(self) -> bool:
        candidate, active = self.scores()
        return self.done and candidate < active - self.margin


def backtest_figures(report: dict[str, Any]) -> dict[str, float]:
    """The figures a promotion compares, from a backtest report (``run_backtest``)."""
    initial = float(report["initial_balance"])
    return {"net_return": float(report["net_pnl"]) / initial,
            "max_drawdown": float(report["max_drawdown"]), "trades": float(report["trades"]),
            "fees": float(report["fees"]), "funding": float(report["funding"]),
            "sharpe": float(report["sharpe"])}


def backtest_verdict(candidate: dict[str, float], active: dict[str, float], brake: float,
                     margin: float = 0.0) -> tuple[bool, str]:
    """Promote only when the candidate's net return over the window beats the active
    model's by more than ``margin`` and its max drawdown stays below the policy's
    ``brake``; returns the decision and why."""
    c, a = candidate, active
    if c["max_drawdown"] >= brake:
        return False, (f"candidate drawdown {c['max_drawdown']:.2%} reaches the brake "
                       f"{brake:.0%}")
    if c["net_return"] <= a["net_return"] + margin:
        return False, (f"candidate net return {c['net_return']:+.3%} does not beat the active "
                       f"model's {a['net_return']:+.3%}" + (f" by {margin:.3%}" if margin else ""))
    return True, (f"candidate net return {c['net_return']:+.3%} beats {a['net_return']:+.3%}, "
                  f"drawdown {c['max_drawdown']:.2%} within the brake {brake:.0%}")


def _classes(prediction: Any) -> tuple[float, float, float]:
    flat = max(0.0, 1.0 - prediction.prob_long - prediction.prob_short)
    return (prediction.prob_short, flat, prediction.prob_long)
