"""Filters, score and profile size: the universe policy applied to measured candidates.

A candidate passes every filter of :class:`~quantum.risk.policy.UniversePolicy` or is out
with a reason for each one it fails (``quote_volume_24h_below_min: 4.1e+05 < 1e+06``).
Candidates that pass are scored and the best ``size`` are selected; the rest carry
``outside_profile_size``. The score is a weighted sum of percentile ranks among the
candidates that passed, each in [0, 1]:

* 0.5 × 24 h quote volume (more is better: depth, lower impact);
* 0.2 × spread (narrower is better: cost);
* 0.2 × volatility (more is better: room for a move to pay its costs);
* 0.1 × the fleet's own realised net PnL per closed trade (better is better), counted
  once the symbol has ``results_min_trades`` trades; until then a neutral 0.5.

A symbol already selected gets ``incumbent_bonus`` on top, so near-equals do not swap
places at every ranking. Ties go to the higher quote volume, then the symbol's name, so a
ranking is a function of its inputs alone (replay and backtest give the same universe).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from quantum.contracts.events import UniverseMember
from quantum.risk.policy import UniversePolicy

DAY_MS = 86_400_000
WEIGHTS = {"volume": 0.5, "spread": 0.2, "volatility": 0.2, "results": 0.1}


@dataclass(frozen=True, slots=True)
class Candidate:
    """What is known of one symbol when the ranking is made.

    ``history_bars``: closed bars of history the filters can judge (replay: the fleet's
    own; live: the larger of the fleet's and the bars since the exchange listed it).
    ``completeness`` None: not observed yet (live, a symbol the fleet does not stream),
    which no filter holds against it.
    """

    symbol: str
    quote_volume_24h: float
    spread_bps: float | None
    spread_source: str  # book | bars | none
    volatility_24h: float | None
    listing_age_days: float | None
    history_bars: int
    completeness: float | None
    realised_pnl: float = 0.0
    trades: int = 0


@dataclass(frozen=True, slots=True)
class Ranking:
    """The selected symbols in rank order, and every candidate with its reasons."""

    symbols: tuple[str, ...]
    members: tuple[UniverseMember, ...]


def _failures(c: Candidate, policy: UniversePolicy) -> list[str]:
    out = []
    if policy.symbols and c.symbol not in policy.symbols:
        out.append("not_in_policy_symbols")
    if c.symbol in policy.blacklist:
        out.append("blacklisted")
    if c.history_bars < policy.min_history_bars:
        out.append(f"insufficient_history: {c.history_bars} < {policy.min_history_bars} bars")
    if c.completeness is not None and c.completeness < policy.min_completeness:
        out.append(f"incomplete_data: {c.completeness:.3f} < {policy.min_completeness:g}")
    if c.quote_volume_24h < policy.min_quote_volume_24h:
        out.append(f"quote_volume_24h_below_min: {c.quote_volume_24h:.3g} < "
                   f"{policy.min_quote_volume_24h:.3g}")
    if c.spread_bps is None:
        out.append("spread_unknown")
    elif c.spread_bps > policy.max_spread_bps:
        out.append(f"spread_above_max: {c.spread_bps:.2f} > {policy.max_spread_bps:g} bps")
    if c.listing_age_days is None and policy.min_listing_age_days > 0:
        out.append("listing_age_unknown")
    elif c.listing_age_days is not None and c.listing_age_days < policy.min_listing_age_days:
        out.append(f"listed_too_recently: {c.listing_age_days:.1f} < "
                   f"{policy.min_listing_age_days:g} days")
    if policy.min_realised_pnl_usd is not None and c.trades >= policy.results_min_trades \
            and c.realised_pnl < policy.min_realised_pnl_usd:
        out.append(f"realised_pnl_below_min: {c.realised_pnl:.2f} < "
                   f"{policy.min_realised_pnl_usd:g} over {c.trades} trades")
    return out


def _percentiles(values: Sequence[float]) -> list[float]:
    """Each value's share of the others it is above (ties share the mean position)."""
    n = len(values)
    if n == 1:
        return [1.0]
    order = sorted(range(n), key=lambda i: values[i])
    out = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and values[order[j + 1]] == values[order[i]]:
            j += 1
        share = (i + j) / 2 / (n - 1)
        for k in range(i, j + 1):
            out[order[k]] = share
        i = j + 1
    return out


def _scores(eligible: Sequence[Candidate], policy: UniversePolicy) -> list[float]:
    volume = _percentiles([c.quote_volume_24h for c in eligible])
    spread = _percentiles([-(c.spread_bps or 0.0) for c in eligible])
    volatility = _percentiles([c.volatility_24h or 0.0 for c in eligible])
    counted = [i for i, c in enumerate(eligible) if c.trades >= policy.results_min_trades]
    results = [0.5] * len(eligible)
    if counted:
        shares = _percentiles([eligible[i].realised_pnl / eligible[i].trades for i in counted])
        for i, share in zip(counted, shares, strict=True):
            results[i] = share
    return [WEIGHTS["volume"] * volume[i] + WEIGHTS["spread"] * spread[i]
            + WEIGHTS["volatility"] * volatility[i] + WEIGHTS["results"] * results[i]
            for i in range(len(eligible))]


def _member(c: Candidate, rank: int, selected: bool, score: float,
            reasons: list[str]) -> UniverseMember:
    return UniverseMember(
        symbol=c.symbol, rank=rank, selected=selected, score=round(score, 6),
        quote_volume_24h=c.quote_volume_24h, spread_bps=c.spread_bps,
        spread_source=c.spread_source,
        volatility_24h=c.volatility_24h, listing_age_days=c.listing_age_days,
        history_bars=c.history_bars, completeness=c.completeness,
        realised_pnl=c.realised_pnl, trades=c.trades, reasons=tuple(reasons),
    )


def rank(candidates: Mapping[str, Candidate], policy: UniversePolicy,
         incumbents: Collection[str] = ()) -> Ranking:
    """Apply ``policy`` to ``candidates``: the selection and each symbol's reasons.
    ``incumbents``: the symbols selected so far (they get the incumbent bonus)."""
    failures = {s: _failures(c, policy) for s, c in candidates.items()}
    eligible = sorted((c for s, c in candidates.items() if not failures[s]),
                      key=lambda c: c.symbol)
    scores = dict(zip((c.symbol for c in eligible), _scores(eligible, policy), strict=True)) \
        if eligible else {}
    for symbol in scores:
        if symbol in incumbents:
            scores[symbol] += policy.incumbent_bonus
    eligible.sort(key=lambda c: (-scores[c.symbol], -c.quote_volume_24h, c.symbol))
    members: list[UniverseMember] = []
    selected: list[str] = []
    for position, c in enumerate(eligible, start=1):
        chosen = position <= policy.size
        if chosen:
            selected.append(c.symbol)
            reason = f"selected: rank {position} of {len(eligible)} eligible"
        else:
            reason = f"outside_profile_size: rank {position} > size {policy.size}"
        members.append(_member(c, position, chosen, scores[c.symbol], [reason]))
    rest = sorted((c for s, c in candidates.items() if failures[s]),
                  key=lambda c: (-c.quote_volume_24h, c.symbol))
    for position, c in enumerate(rest, start=len(eligible) + 1):
        members.append(_member(c, position, False, 0.0, failures[c.symbol]))
    return Ranking(tuple(selected), tuple(members))


def from_bars(measures: Mapping[str, object], results: Mapping[str, tuple[float, int]],
              now_ms: int) -> dict[str, Candidate]:
    """Candidates from the fleet's bars alone (replay, backtest): the listing age is the
    time since the symbol's first bar in the data."""
    from quantum.universe.bars import BarMeasures

    out: dict[str, Candidate] = {}
    for symbol, m in measures.items():
        assert isinstance(m, BarMeasures)
        pnl, trades = results.get(symbol, (0.0, 0))
        out[symbol] = Candidate(
            symbol=symbol, quote_volume_24h=m.quote_volume_24h, spread_bps=m.spread_bps,
            spread_source="bars" if m.spread_bps is not None else "none",
            volatility_24h=m.volatility_24h,
            listing_age_days=max(0.0, (now_ms - m.first_open_time) / DAY_MS),
            history_bars=m.history_bars, completeness=m.completeness,
            realised_pnl=pnl, trades=trades,
        )
    return out
