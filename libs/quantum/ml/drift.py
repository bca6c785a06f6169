"""Feature drift: the population stability index (PSI) of live features against training.

The reference is each feature's decile edges over the training rows and the share of
training rows in each bin (stored with the model). Live, the last ``window`` vectors are
binned the same way; ``PSI = sum((live - train) * ln(live / train))`` per feature. Common
reading: below 0.1 stable, 0.1-0.25 a shift worth watching, above 0.25 a different market
than the model learned from.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

BINS = 10
FLOOR = 1e-4  # empty bins would make the log infinite


def reference(features: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    """Inner decile edges and training shares per feature."""
    edges = np.quantile(features, np.linspace(0, 1, BINS + 1)[1:-1], axis=0).T  # feats x 9
    shares = []
    for column in range(features.shape[1]):
        bins = np.searchsorted(edges[column], features[:, column], side="right")
        shares.append(np.bincount(bins, minlength=BINS) / features.shape[0])
    return {"names": list(names), "edges": edges.tolist(), "shares": np.asarray(shares).tolist()}


def psi(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """PSI per row of (features x bins) share tables."""
    e = np.clip(expected, FLOOR, None)
    a = np.clip(actual, FLOOR, None)
    return np.sum((a - e) * np.log(a / e), axis=-1)


class DriftMonitor:
    """Rolling PSI of served feature vectors against a model's training reference."""

    def __init__(self, ref: dict[str, Any], window: int = 500) -> None:
        self.names = tuple(ref["names"])
        self.edges = np.asarray(ref["edges"], dtype=np.float64)
        self.shares = np.asarray(ref["shares"], dtype=np.float64)
        self.window = window
        self.recent: deque[np.ndarray] = deque(maxlen=window)

    def observe(self, vector: np.ndarray) -> None:
        self.recent.append(np.asarray(vector, dtype=np.float64))

    @property
    def ready(self) -> bool:
        return len(self.recent) >= min(self.window, 100)

    def compute(self) -> dict[str, float]:
        """PSI per feature over the recent window (empty until ``ready``)."""
        if not self.ready:
            return {}
        live = np.stack(self.recent)
        shares = np.empty_like(self.shares)
        for column in range(live.shape[1]):
            bins = np.searchsorted(self.edges[column], live[:, column], side="right")
            shares[column] = np.bincount(bins, minlength=BINS) / live.shape[0]
        values = psi(self.shares, shares)
        return {name: float(v) for name, v in zip(self.names, values, strict=True)}
