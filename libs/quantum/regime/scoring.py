"""Each regime call scored against what followed.

A call made at a bar is judged ``horizon`` bars later (48 bars, 4 h) on what the market
did meanwhile, in the call's own units (its baseline volatility ``σ_b``):

* forward trend score ``z_f = ln(close_{t+H} / close_t) / (σ_b · √H)``: a ``trend_up`` call
  is a hit when ``z_f > 0``, ``trend_down`` when ``z_f < 0``, ``range`` when
  ``|z_f| < trend_enter`` (the market did not break out);
* forward volatility ratio ``v_f = σ_s(t+H) / σ_b(t)`` (the realised volatility of the next
  ``H`` bars against the baseline at the call), labelled with the entry thresholds: a
  volatility call is a hit when the labels agree.

Next to each label's hit rate the scorecard keeps the **base rate**: how often the outcome
the label predicts happened over all scored calls (an up move, a stay in range, a forward
high volatility). A rule earns its keep only where the hit rate beats the base rate.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from quantum.regime.rules import (
    DEFAULT_RULES,
    LABELS,
    RANGE,
    TREND_DOWN,
    TREND_LABELS,
    TREND_UP,
    VOLATILITY_LABELS,
    Reading,
    RegimeRules,
    volatility_label,
)


@dataclass(frozen=True)
class Outcome:
    """What followed a call: the forward trend score and the forward volatility ratio."""

    forward_score: float
    forward_vol_ratio: float

    def happened(self, label: str, rules: RegimeRules = DEFAULT_RULES) -> bool:
        """Whether the outcome ``label`` predicts is what happened."""
        if label == TREND_UP:
            return self.forward_score > 0
        if label == TREND_DOWN:
            return self.forward_score < 0
        if label == RANGE:
            return abs(self.forward_score) < rules.trend_enter
        return volatility_label(self.forward_vol_ratio, None, rules) == label


@dataclass
class Scorecard:
    """Calls, hits and outcomes per label, for one scope (a symbol or the market)."""

    scored: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)  # outcome label → times it happened

    def add(self, call: Reading, outcome: Outcome, rules: RegimeRules = DEFAULT_RULES) -> None:
        self.scored += 1
        for label in (call.trend, call.volatility):
            self.calls[label] = self.calls.get(label, 0) + 1
            if outcome.happened(label, rules):
                self.hits[label] = self.hits.get(label, 0) + 1
        for label in LABELS:
            if outcome.happened(label, rules):
                self.outcomes[label] = self.outcomes.get(label, 0) + 1

    def merge(self, other: Scorecard) -> None:
        self.scored += other.scored
        for mine, theirs in ((self.calls, other.calls), (self.hits, other.hits),
                             (self.outcomes, other.outcomes)):
            for label, count in theirs.items():
                mine[label] = mine.get(label, 0) + count

    def hit_rate(self, label: str) -> float | None:
        calls = self.calls.get(label, 0)
        return self.hits.get(label, 0) / calls if calls else None

    def base_rate(self, label: str) -> float | None:
        return self.outcomes.get(label, 0) / self.scored if self.scored else None

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        """label → calls, hit rate, base rate and lift (hit − base), for reports."""
        out: dict[str, dict[str, float | int | None]] = {}
        for label in TREND_LABELS + VOLATILITY_LABELS:
            hit, base = self.hit_rate(label), self.base_rate(label)
            out[label] = {"calls": self.calls.get(label, 0), "hit_rate": hit,
                          "base_rate": base,
                          "lift": hit - base if hit is not None and base is not None else None}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"scored": self.scored, "calls": self.calls, "hits": self.hits,
                "outcomes": self.outcomes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scorecard:
        return cls(scored=int(data.get("scored", 0)), calls=dict(data.get("calls", {})),
                   hits=dict(data.get("hits", {})), outcomes=dict(data.get("outcomes", {})))


class PendingCalls:
    """A symbol's calls of the last ``horizon`` bars, waiting for their outcome."""

    def __init__(self, rules: RegimeRules = DEFAULT_RULES) -> None:
        self.rules = rules
        self.calls: deque[tuple[Reading, float]] = deque()  # (call, close at the call)

    def add(self, call: Reading, close: float) -> None:
        self.calls.append((call, close))

    def due(self, close: float, short_vol: float) -> tuple[Reading, Outcome] | None:
        """The call made ``horizon`` bars ago with what followed it, once it is due."""
        if len(self.calls) <= self.rules.horizon:
            return None
        call, then = self.calls.popleft()
        horizon = self.rules.horizon
        outcome = Outcome(
            forward_score=math.log(close / then) / (call.baseline_vol * math.sqrt(horizon)),
            forward_vol_ratio=short_vol / call.baseline_vol)
        return call, outcome

