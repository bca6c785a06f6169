"""Scoring direction probabilities: the same metrics for members, ensemble and baselines.

Every scorer receives probabilities of (SHORT, FLAT, LONG) per row, the true labels and the
realised future log returns. The trading rule scored by ``net_return`` is the ai-engine's:
act when the likeliest class is LONG or SHORT with probability at least ``threshold``;
hold ``horizon`` bars; pay the round-trip fee. At most one position per symbol at a time
(a signal while one is open is skipped), so the figure is one a single account could earn.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from quantum.ml.labels import FLAT, LONG, SHORT

EPSILON = 1e-12


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(labels.size), labels]
    return float(-np.mean(np.log(np.clip(picked, EPSILON, 1.0))))


def brier(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean squared distance to the one-hot label (0 best, 2 worst)."""
    onehot = np.zeros_like(probabilities)
    onehot[np.arange(labels.size), labels] = 1.0
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    recalls = [float(np.mean(predicted[labels == k] == k)) for k in (SHORT, FLAT, LONG)
               if np.any(labels == k)]
    return float(np.mean(recalls)) if recalls else float("nan")


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Confidence of the top class against how often it was right, in equal-width bins.

    ``ece`` (expected calibration error) is the row-weighted mean gap between the two.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    table = []
    ece = 0.0
    for low, high in itertools.pairwise(edges):
        inside = (confidence >= low) & ((confidence < high) | (high == 1.0))
        count = int(inside.sum())
        if count == 0:
            continue
        mean_confidence = float(confidence[inside].mean())
        accuracy = float(correct[inside].mean())
        ece += count / labels.size * abs(mean_confidence - accuracy)
        table.append({"low": round(float(low), 2), "high": round(float(high), 2), "count": count,
                      "confidence": mean_confidence, "accuracy": accuracy})
    return {"ece": float(ece), "bins": table}


def decisions(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """The rule's call per row: SHORT/LONG when the top class is directional and confident."""
    top = probabilities.argmax(axis=1)
    confident = probabilities.max(axis=1) >= threshold
    return np.where(confident & (top != FLAT), top, FLAT)


def net_return(calls: np.ndarray, future_return: np.ndarray, open_time: np.ndarray,
               symbol_index: np.ndarray, *, horizon: int, round_trip_fee: float) -> dict[str, Any]:
    """Simulated trades of ``calls``: log return net of fees, one position per symbol."""
    bar_ms = 300_000
    trades: list[float] = []
    busy_until: dict[int, int] = {}
    order = np.lexsort((symbol_index, open_time))
    for row in order:
        call = calls[row]
        if call == FLAT:
            continue
        symbol = int(symbol_index[row])
        if open_time[row] < busy_until.get(symbol, -1):
            continue
        busy_until[symbol] = int(open_time[row]) + horizon * bar_ms
        side = 1.0 if call == LONG else -1.0
        trades.append(side * float(future_return[row]) - round_trip_fee)
    values = np.asarray(trades)
    return {
        "trades": int(values.size),
        "total_log_return": float(values.sum()) if values.size else 0.0,
        "mean_per_trade": float(values.mean()) if values.size else 0.0,
        "win_rate": float(np.mean(values > 0)) if values.size else 0.0,
    }


def score(probabilities: np.ndarray, labels: np.ndarray, future_return: np.ndarray,
          open_time: np.ndarray, symbol_index: np.ndarray, *, threshold: float, horizon: int,
          round_trip_fee: float, calls: np.ndarray | None = None) -> dict[str, Any]:
    """Every metric of one model on one block of rows.

    ``calls`` overrides the thresholded arg-max rule for a model that decides by its own
    rule (the fleet's baseline).
    """
    predicted = probabilities.argmax(axis=1)
    calls = decisions(probabilities, threshold) if calls is None else calls
    confident = calls != FLAT
    realised_side = np.sign(future_return)
    call_side = np.where(calls == LONG, 1.0, -1.0)
    hit_rate = (float(np.mean(realised_side[confident] == call_side[confident]))
                if confident.any() else None)
    return {
        "rows": int(labels.size),
        "log_loss": log_loss(probabilities, labels),
        "balanced_accuracy": balanced_accuracy(predicted, labels),
        "accuracy": float(np.mean(predicted == labels)),
        "brier": brier(probabilities, labels),
        "calibration": reliability(probabilities, labels),
        "confident_signals": int(confident.sum()),
        "confident_hit_rate": hit_rate,
        "share": {
            "long": float(np.mean(calls == LONG)),
            "short": float(np.mean(calls == SHORT)),
            "flat": float(np.mean(calls == FLAT)),
        },
        "argmax_share": {
            "long": float(np.mean(predicted == LONG)),
            "short": float(np.mean(predicted == SHORT)),
            "flat": float(np.mean(predicted == FLAT)),
        },
        "net_of_fees": net_return(calls, future_return, open_time, symbol_index,
                                  horizon=horizon, round_trip_fee=round_trip_fee),
    }
