"""Direction-bias supervision: is the model's lean explained by what the market did?

A model that calls SHORT on most bars is either broken (a stuck feature, a bad version) or
right (the market is falling). Counting the signals alone cannot tell the two apart, and a
rule that blocks above a fixed share stops the fleet in every trending market. This
supervisor pairs each directional signal with the **realised move of its own symbol over
the signal's horizon**, and blocks only when the model leans further than the market did.

The rule (parameters in :class:`BiasRule`, set from the ai-engine's settings):

1. The window is the last ``window`` actionable directional signals (LONG or SHORT).
   Until it is full nothing is blocked.
2. ``model share`` = the share of the window's dominant side. At or below ``threshold`` the
   model is balanced and nothing is blocked.
3. Each signal's ``market move`` is the log return of its symbol over ``horizon_bars``
   five-minute bars: from the signal's bar to ``horizon_bars`` later once that bar has
   closed (the outcome the signal predicted), and, while that bar is still in the future,
   the newest ``horizon_bars`` move known (the direction the market is going now). A move
   beyond ``+dead_zone`` counts as up, beyond ``-dead_zone`` as down, anything smaller as
   half of each. ``market share`` = the share of the window's signals whose move went the
   model's dominant way.
4. Blocked when ``model share - market share > tolerance``: the lean is not explained by
   the market. When fewer than half of the window's signals have a known move (a restart
   with no bars yet, a symbol's first hour) the market share is taken as 0.5: with no
   evidence the market trended, the lean has to be balanced by the threshold alone, as the
   old rule required.

Causality: every close used was observed before the decision it judges (the supervisor is
only told about bars as they close). Nothing here reads a clock or a connection; its whole
state is :meth:`BiasSupervisor.state`, which the ai-engine commits with its acks.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

BAR_MS = 300_000

REASONS = ("window_not_full", "balanced", "explained_by_market", "not_explained_by_market",
           "market_unknown")


@dataclass(frozen=True)
class BiasRule:
    """Attributes:
    window: directional signals judged together.
    threshold: model share of one side at or below which the model counts as balanced.
    tolerance: how far the model's share may exceed the market's share of the same side.
    horizon_bars: the signals' horizon in five-minute bars (the label horizon, 12 = 1 h).
    dead_zone: log moves within ``±dead_zone`` count as neither up nor down.
    """

    window: int = 20
    threshold: float = 0.7
    tolerance: float = 0.2
    horizon_bars: int = 12
    dead_zone: float = 0.0008

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"bias window must be at least 2 signals, got {self.window}")
        if not 0.5 < self.threshold <= 1:
            raise ValueError(f"bias threshold must be in (0.5, 1], got {self.threshold}")
        if not 0 <= self.tolerance <= 0.5:
            raise ValueError(f"bias tolerance must be in [0, 0.5], got {self.tolerance}")
        if self.horizon_bars < 1:
            raise ValueError(f"bias horizon must be at least 1 bar, got {self.horizon_bars}")
        if self.dead_zone < 0:
            raise ValueError(f"bias dead zone must not be negative, got {self.dead_zone}")


@dataclass(frozen=True)
class BiasVerdict:
    """The supervisor's judgement of the current window."""

    signals: int
    model_share_long: float
    market_share_up: float | None  # None: no signal of the window has a known move
    market_moves: int
    side: str | None  # the model's dominant side
    model_share: float  # of the dominant side
    market_share: float  # of the dominant side, as used by the rule
    blocked: bool
    reason: str  # one of REASONS

    @property
    def blocked_reason(self) -> str | None:
        """The reason carried on signals and counted by the blocked metric."""
        if not self.blocked:
            return None
        return (f"direction_bias:{self.side}:{self.model_share:.2f}:market:"
                f"{self.market_share:.2f}")

    def data(self) -> dict[str, float | int | str | bool | None]:
        return {"model_share_long": round(self.model_share_long, 4),
                "market_share_up": (None if self.market_share_up is None
                                    else round(self.market_share_up, 4)),
                "side": self.side, "model_share": round(self.model_share, 4),
                "market_share": round(self.market_share, 4), "signals": self.signals,
                "market_moves": self.market_moves, "blocked": self.blocked,
                "reason": self.reason}

    def explain(self, rule: BiasRule) -> str:
        if self.reason == "window_not_full":
            return f"{self.signals} of {rule.window} signals: not judged yet"
        shares = (f"model {self.model_share:.0%} {self.side}, market "
                  f"{self.market_share:.0%} {self.side} over {self.market_moves} moves")
        if self.reason == "balanced":
            return f"{shares}: at or below the threshold {rule.threshold:.0%}"
        gap = self.model_share - self.market_share
        if self.reason == "explained_by_market":
            return (f"{shares}: the lean is explained by the market (gap {gap:.2f} <= "
                    f"{rule.tolerance:.2f})")
        unknown = " (market unknown: taken as 50 %)" if self.reason == "market_unknown" else ""
        return (f"{shares}{unknown}: not explained by the market (gap {gap:.2f} > "
                f"{rule.tolerance:.2f})")


class BiasSupervisor:
    """Judges the direction bias of recent signals against the market's realised moves.

    Call :meth:`observe_bar` for every closed bar the model sees (before acting on it),
    :meth:`verdict` before acting on an actionable signal, and :meth:`observe` with it.
    """

    def __init__(self, rule: BiasRule) -> None:
        self.rule = rule
        # [symbol, bar_time, direction, close at the signal, realised horizon move or None]
        self.recent: deque[list[Any]] = deque(maxlen=rule.window)
        # per symbol: the newest horizon_bars + 1 contiguous (close_time, close)
        self.closes: dict[str, deque[tuple[int, float]]] = {}

    # --- inputs ---------------------------------------------------------------------------

    def observe_bar(self, symbol: str, close_time: int, close: float) -> None:
        """A bar of ``symbol`` closed at ``close``; resolves the signals it completes."""
        ring = self.closes.setdefault(symbol, deque(maxlen=self.rule.horizon_bars + 1))
        if ring and close_time <= ring[-1][0]:
            return  # a bar already seen
        if ring and close_time - ring[-1][0] != BAR_MS:
            ring.clear()  # a gap: the newest move is unknown until the ring refills
        ring.append((close_time, close))
        horizon_ms = self.rule.horizon_bars * BAR_MS
        for signal in self.recent:
            if (signal[0] == symbol and signal[4] is None
                    and close_time >= signal[1] + horizon_ms and signal[3] > 0):
                signal[4] = math.log(close / signal[3])

    def observe(self, symbol: str, bar_time: int, direction: str, close: float) -> None:
        """An actionable signal; FLAT is not a direction and is ignored."""
        if direction in ("LONG", "SHORT"):
            self.recent.append([symbol, bar_time, direction, close, None])

    # --- judgement ------------------------------------------------------------------------

    def share_long(self) -> float:
        if not self.recent:
            return 0.5
        return sum(1 for s in self.recent if s[2] == "LONG") / len(self.recent)

    def market_move(self, signal: list[Any]) -> float | None:
        if signal[4] is not None:
            return float(signal[4])
        ring = self.closes.get(signal[0])
        if ring is None or len(ring) < self.rule.horizon_bars + 1:
            return None
        return math.log(ring[-1][1] / ring[0][1])

    def market_share_up(self) -> tuple[float | None, int]:
        """Share of the window's signals whose market move was up, and how many are known."""
        dz = self.rule.dead_zone
        scores = []
        for signal in self.recent:
            move = self.market_move(signal)
            if move is not None:
                scores.append(1.0 if move > dz else 0.0 if move < -dz else 0.5)
        return (sum(scores) / len(scores) if scores else None), len(scores)

    def verdict(self) -> BiasVerdict:
        rule = self.rule
        share_long = self.share_long()
        up, known = self.market_share_up()
        side = "LONG" if share_long >= 0.5 else "SHORT"
        model = max(share_long, 1 - share_long)
        enough = up is not None and known * 2 >= len(self.recent)
        market_up = up if enough and up is not None else 0.5
        market = market_up if side == "LONG" else 1 - market_up
        if len(self.recent) < rule.window:
            reason, blocked = "window_not_full", False
        elif model <= rule.threshold:
            reason, blocked = "balanced", False
        elif model - market <= rule.tolerance:
            reason, blocked = "explained_by_market", False
        else:
            reason = "not_explained_by_market" if enough else "market_unknown"
            blocked = True
        return BiasVerdict(signals=len(self.recent), model_share_long=share_long,
                           market_share_up=up, market_moves=known, side=side,
                           model_share=model, market_share=market, blocked=blocked,
                           reason=reason)

    def blocked(self) -> str | None:
        return self.verdict().blocked_reason

    # --- state ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"signals": [list(s) for s in self.recent],
                "closes": {k: [list(c) for c in v] for k, v in self.closes.items()}}

    def load(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state` (replacing everything held). ``None`` or ``{}``: empty."""
        self.recent.clear()
        self.closes.clear()
        if not state:
            return
        for symbol, bar_time, direction, close, move in state.get("signals", []):
            self.recent.append([str(symbol), int(bar_time), str(direction), float(close),
                                None if move is None else float(move)])
        for symbol, rows in state.get("closes", {}).items():
            ring: deque[tuple[int, float]] = deque(maxlen=self.rule.horizon_bars + 1)
            ring.extend((int(t), float(c)) for t, c in rows)
            self.closes[str(symbol)] = ring
