"""Portfolio allocation: correlated clusters, concentration, and the exposure balancer.

**Clusters.** Two symbols are linked when the Pearson correlation of their bar log returns
over the last ``correlation_window`` bars (at least :data:`MIN_RETURNS` on both) exceeds
``cluster_correlation``; a cluster is a connected group of links (single linkage). Only a
positive correlation links: a market that moves against another is a hedge, not a twin. A
symbol without enough history is a cluster of its own.

**Concentration.** A symbol's exposure is the absolute notional of its position (quantity ×
mark) plus approved plans not filled yet, over equity; a cluster's is the absolute *net*
signed notional of its members over equity (a long and a short of two twins offset). The
governor refuses a plan that would take either past ``max_symbol_exposure`` or
``max_cluster_exposure`` (:mod:`quantum.risk.checks`).

**The balancer.** A plan cannot breach a limit, so a breach on the book comes from the
market (a position's notional grew, or equity fell). Once a bar the governor runs
:func:`rebalance` on the marked portfolio; a position of a symbol past ``limit × (1 +
rebalance_tolerance)`` is cut back to the limit, and a cluster past its own limit has the
positions on the side of its net exposure cut in proportion, so the net is back at the
limit. The tolerance is the hysteresis: a book drifting around a limit is not traded every
bar. Cuts are proposals on ``risk.events`` (``exposure_rebalance``) that the exit-brain
carries out as reduce-only harvests, the path every exit takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from quantum.contracts.events import PositionView

MIN_RETURNS = 20


def clusters(returns: Mapping[str, Sequence[float]], symbols: Iterable[str], threshold: float,
             window: int) -> dict[str, str]:
    """Symbol → the name of its cluster (its alphabetically first member)."""
    names = sorted(set(symbols))
    parent = {s: s for s in names}

    def root(s: str) -> str:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    usable = [s for s in names if len(returns.get(s, ())) >= MIN_RETURNS]
    if len(usable) >= 2:
        n = min(window, *(len(returns[s]) for s in usable))
        matrix = np.array([list(returns[s])[-n:] for s in usable], dtype=float)
        centred = matrix - matrix.mean(axis=1, keepdims=True)
        norms = np.sqrt((centred * centred).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = (centred @ centred.T) / np.outer(norms, norms)
        rho = np.where(np.outer(norms, norms) > 0, rho, 0.0)
        for i in range(len(usable)):
            for j in range(i + 1, len(usable)):
                if rho[i, j] > threshold:
                    a, b = root(usable[i]), root(usable[j])
                    if a != b:
                        parent[max(a, b)] = min(a, b)
    return {s: root(s) for s in names}


def signed_notional(position: PositionView) -> float:
    sign = 1.0 if position.side == "LONG" else -1.0
    return sign * position.quantity * position.mark_price


@dataclass(frozen=True)
class Cut:
    """A proposed reduction of one position: the share of it to close, and why."""

    position_id: str
    symbol: str
    side: str
    fraction: float
    reasons: tuple[str, ...]
    exposure: float  # the breaching exposure (symbol's or cluster's), fraction of equity
    limit: float


def rebalance(positions: Sequence[PositionView], equity: float,
              returns: Mapping[str, Sequence[float]], *, max_symbol: float, max_cluster: float,
              threshold: float, window: int, tolerance: float) -> list[Cut]:
    """The cuts that bring every symbol and cluster back within its limit."""
    if equity <= 0 or not positions:
        return []
    keep = {p.position_id: 1.0 for p in positions}  # share of each position that stays
    reasons: dict[str, list[str]] = {p.position_id: [] for p in positions}
    breach: dict[str, tuple[float, float]] = {}
    for p in positions:
        exposure = abs(signed_notional(p)) / equity
        if exposure > max_symbol * (1 + tolerance):
            keep[p.position_id] = max_symbol / exposure
            reasons[p.position_id].append("symbol_concentration")
            breach[p.position_id] = (exposure, max_symbol)
    groups: dict[str, list[PositionView]] = {}
    membership = clusters(returns, (p.symbol for p in positions), threshold, window)
    for p in positions:
        groups.setdefault(membership[p.symbol], []).append(p)
    for members in groups.values():
        net = sum(signed_notional(p) * keep[p.position_id] for p in members) / equity
        if abs(net) <= max_cluster * (1 + tolerance):
            continue
        side = "LONG" if net > 0 else "SHORT"
        heavy = [p for p in members if p.side == side]
        side_total = sum(abs(signed_notional(p)) * keep[p.position_id] for p in heavy) / equity
        share = min(1.0, (abs(net) - max_cluster) / side_total)
        for p in heavy:
            keep[p.position_id] *= 1.0 - share
            reasons[p.position_id].append("cluster_concentration")
            breach.setdefault(p.position_id, (abs(net), max_cluster))
    cuts = []
    for p in positions:
        if reasons[p.position_id]:
            exposure, limit = breach[p.position_id]
            cuts.append(Cut(p.position_id, p.symbol, p.side, 1.0 - keep[p.position_id],
                            tuple(reasons[p.position_id]), exposure, limit))
    return cuts
