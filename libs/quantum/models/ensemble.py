"""The ensemble as the ai-engine serves it: a registry version behind the baseline's shape.

Input is one feature vector per event plus, per symbol, the last 64 one-bar log returns
(the forecasters' window), kept by the engine. Predictions are made in batches (one runner
batch of events at a time): the tree members score all rows at once and each network runs
one forward pass over the rows whose window is full. A row where fewer than the quorum of
members could vote gets ``None``: no signal, no intent, and the reason in health.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from quantum.features import FEATURE_NAMES
from quantum.models.baseline import Direction, Prediction, Vote

if TYPE_CHECKING:
    from quantum.ml.ensemble import Ensemble

CLASS_DIRECTIONS: tuple[Direction, Direction, Direction] = ("SHORT", "FLAT", "LONG")
FORECASTERS = ("nhits", "patchtst")


@dataclass(frozen=True, slots=True)
class Row:
    """One event's input: its feature values and its symbol's return window (or None)."""

    values: dict[str, float]
    window: np.ndarray | None


class ServedEnsemble:
    """A loaded registry version, predicting batches of rows."""

    name = "ensemble"

    def __init__(self, ensemble: Ensemble) -> None:
        self.ensemble = ensemble
        self.version = ensemble.version

    @property
    def members_loaded(self) -> tuple[str, ...]:
        return self.ensemble.loaded

    @property
    def members_missing(self) -> dict[str, str]:
        return dict(self.ensemble.missing)

    def predict_batch(self, rows: list[Row]) -> list[Prediction | None]:
        if not rows:
            return []
        features = np.array([[row.values[n] for n in FEATURE_NAMES] for row in rows],
                            dtype=np.float32)
        with_window = [i for i, row in enumerate(rows) if row.window is not None]
        probabilities: dict[str, np.ndarray] = {}
        available: dict[str, np.ndarray] = {}
        for name, member in self.ensemble.members.items():
            if name in FORECASTERS:
                if not with_window:
                    continue
                index = np.asarray(with_window)
                windows = np.stack([rows[i].window for i in with_window])  # type: ignore[misc]
                full = np.full((len(rows), 3), np.nan)
                full[index] = member.predict_proba(features[index], windows)
                probabilities[name] = full
                mask = np.zeros(len(rows), dtype=bool)
                mask[index] = True
                available[name] = mask
            else:
                probabilities[name] = member.predict_proba(features, np.empty((len(rows), 0)))
                available[name] = np.ones(len(rows), dtype=bool)
        return [self._one(i, probabilities, available) for i in range(len(rows))]

    def _one(self, row: int, probabilities: dict[str, np.ndarray],
             available: dict[str, np.ndarray]) -> Prediction | None:
        voting = {n: p[row:row + 1] for n, p in probabilities.items() if available[n][row]}
        combined = self.ensemble.combine(voting)
        if combined is None:
            return None
        p_short, _, p_long = (float(x) for x in combined[0])
        top = int(np.argmax(combined[0]))
        votes = tuple(
            Vote(name, CLASS_DIRECTIONS[int(np.argmax(p[0]))], float(np.max(p[0])))
            for name, p in sorted(voting.items()))
        return Prediction(CLASS_DIRECTIONS[top], float(combined[0][top]), p_long, p_short, votes)


class ReturnWindows:
    """Per symbol, the last 64 one-bar log returns (``log_ret_1`` of consecutive events).

    A repeated or older bar leaves the window as it is; a gap in the bars restarts it, so
    a window always holds consecutive bars, as in training.
    """

    BAR_MS = 300_000
    SIZE = 64

    def __init__(self) -> None:
        from collections import deque

        self._deque = deque
        self.values: dict[str, Any] = {}
        self.last_close: dict[str, int] = {}

    def update(self, symbol: str, close_time: int, log_return: float) -> np.ndarray | None:
        """Advance ``symbol``'s window with this bar; the full window, or None if short."""
        last = self.last_close.get(symbol)
        window = self.values.get(symbol)
        if last is None or close_time > last:
            if window is None or last is None or close_time - last != self.BAR_MS:
                window = self.values[symbol] = self._deque(maxlen=self.SIZE)
            window.append(float(log_return))
            self.last_close[symbol] = close_time
        if window is None or len(window) < self.SIZE:
            return None
        return np.fromiter(window, dtype=np.float32, count=self.SIZE)

    def state(self) -> dict[str, Any]:
        return {"windows": {s: list(w) for s, w in self.values.items()},
                "last_close": dict(self.last_close)}

    def load(self, state: dict[str, Any]) -> None:
        self.values = {s: self._deque(v, maxlen=self.SIZE)
                       for s, v in state.get("windows", {}).items()}
        self.last_close = {s: int(t) for s, t in state.get("last_close", {}).items()}
