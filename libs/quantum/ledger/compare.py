"""Compare the venue's income history with the journal, per trade and per UTC day.

**Attribution.** Each income record (realised PnL, commission, funding fee; in the
settlement asset) is given to one journal trade:

1. the trade it names (the paper venue records the fleet's position id as its trade);
2. else the trade on its symbol whose life — entry to exit, widened by ``slack_ms`` on both
   sides — holds its time (one-way mode: one position per symbol at a time; Binance's
   records name Binance's own trade ids, which the journal does not keep);
3. else, when its symbol has a position open now (the journal's newest portfolio snapshot)
   and it is not older than that position's opening, it waits for that trade to close;
4. else it is *unattributed*: income the journal has no trade for (a trade it missed, a
   position opened by hand). Unattributed income inside the window counts on its own day.

**Comparison.** Per trade, the venue's sums against the journal's row: ``realised_pnl``
(Σ ``REALIZED_PNL`` against ``gross_pnl``), ``fees`` (−Σ ``COMMISSION`` against ``fees``),
``funding`` (−Σ ``FUNDING_FEE`` against ``funding``; positive = paid, as the journal keeps
it). ``net`` is checked only when no component differs (small differences that add up).
A day is the UTC day a trade closed, as ``quantumctl profit --by day`` groups it, plus the
unattributed income booked that day. A difference is beyond tolerance when
``|venue − journal| > max(absolute, ratio × max(|venue|, |journal|))``.

Trades compared are those that closed inside ``[since_ms, until_ms]``; the caller keeps
``until_ms`` a settling time behind now, so a trade that has just closed (and its income) is
judged on a later pass, once the journal has written it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from quantum.exchange.income import COMMISSION, COMPARED_TYPES, FUNDING_FEE, IncomeRecord

COMPONENTS = ("realised_pnl", "fees", "funding")
JOURNAL_FIELDS = {"realised_pnl": "gross_pnl", "fees": "fees", "funding": "funding",
                  "net": "net_pnl"}
DAY_MS = 86_400_000


def day_of(ms: int) -> str:
    """The UTC day of an epoch-millisecond time, ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def day_start_ms(ms: int) -> int:
    return ms - ms % DAY_MS


@dataclass(frozen=True)
class Tolerance:
    """Attributes:
    absolute: a difference up to this many units of the asset is rounding.
    ratio: or up to this share of the larger of the two amounts.
    """

    absolute: float = 0.01
    ratio: float = 0.0005

    def bound(self, venue: float, journal: float) -> float:
        return max(self.absolute, self.ratio * max(abs(venue), abs(journal)))


@dataclass
class Totals:
    """One side's money for a trade or a day."""

    realised_pnl: float = 0.0
    fees: float = 0.0
    funding: float = 0.0

    @property
    def net(self) -> float:
        return self.realised_pnl - self.fees - self.funding

    def add_income(self, record: IncomeRecord) -> None:
        if record.income_type == COMMISSION:
            self.fees -= record.amount
        elif record.income_type == FUNDING_FEE:
            self.funding -= record.amount
        else:
            self.realised_pnl += record.amount

    def add(self, other: Totals) -> None:
        self.realised_pnl += other.realised_pnl
        self.fees += other.fees
        self.funding += other.funding

    def value(self, component: str) -> float:
        return self.net if component == "net" else float(getattr(self, component))

    def document(self) -> dict[str, float]:
        return {"realised_pnl": self.realised_pnl, "fees": self.fees, "funding": self.funding,
                "net": self.net}

    @classmethod
    def of_trade(cls, trade: dict[str, Any]) -> Totals:
        return cls(realised_pnl=float(trade["gross_pnl"]), fees=float(trade["fees"]),
                   funding=float(trade["funding"]))


@dataclass(frozen=True)
class Difference:
    """A component that differs beyond tolerance, for one trade or one day."""

    kind: str  # trade | day
    scope: str  # trade id or day
    symbol: str
    component: str
    venue_amount: float
    journal_amount: float
    tolerance: float
    detail: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.scope}:{self.component}"

    @property
    def difference(self) -> float:
        return self.venue_amount - self.journal_amount


@dataclass
class Comparison:
    """What one comparison found: rows for the tables and the differences."""

    since_ms: int
    until_ms: int
    trades: list[dict[str, Any]] = field(default_factory=list)
    days: list[dict[str, Any]] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    unattributed: list[dict[str, Any]] = field(default_factory=list)
    waiting: int = 0  # income records of positions still open
    ignored: dict[str, int] = field(default_factory=dict)  # why records were not compared

    @property
    def largest(self) -> float:
        return max((abs(d.difference) for d in self.differences), default=0.0)

    def summary(self) -> dict[str, Any]:
        return {"since_ms": self.since_ms, "until_ms": self.until_ms,
                "trades": len(self.trades),
                "trades_differing": sum(1 for t in self.trades if t["status"] != "match"),
                "days": len(self.days),
                "days_differing": sum(1 for d in self.days if d["status"] != "match"),
                "differences": len(self.differences), "largest_difference": self.largest,
                "unattributed_records": len(self.unattributed),
                "waiting_records": self.waiting, "ignored_records": dict(self.ignored)}

    def document(self) -> dict[str, Any]:
        return {"summary": self.summary(), "days": self.days, "trades": self.trades,
                "unattributed": self.unattributed,
                "differences": [difference_document(d) for d in self.differences]}


def difference_document(difference: Difference) -> dict[str, Any]:
    return {"key": difference.key, "kind": difference.kind, "scope": difference.scope,
            "symbol": difference.symbol, "component": difference.component,
            "venue_amount": difference.venue_amount,
            "journal_amount": difference.journal_amount,
            "difference": difference.difference, "tolerance": difference.tolerance,
            "detail": difference.detail}


class _Attribution:
    """Which trade an income record belongs to (see the module's rules)."""

    def __init__(self, trades: Sequence[dict[str, Any]], open_positions: Sequence[dict[str, Any]],
                 slack_ms: int) -> None:
        self.by_id = {str(t["trade_id"]): t for t in trades}
        self.by_symbol: dict[str, list[dict[str, Any]]] = {}
        for trade in sorted(trades, key=lambda t: int(t["entry_ts"])):
            self.by_symbol.setdefault(str(trade["symbol"]), []).append(trade)
        self.opened = {str(p["symbol"]): int(p["opened_ts"]) for p in open_positions}
        self.slack_ms = slack_ms

    def trade_of(self, record: IncomeRecord) -> dict[str, Any] | None:
        named = self.by_id.get(record.trade_id) if record.trade_id else None
        if named is not None:
            return named
        best: tuple[int, dict[str, Any]] | None = None
        for trade in self.by_symbol.get(record.symbol, ()):
            entry, exit_ = int(trade["entry_ts"]), int(trade["exit_ts"])
            if not entry - self.slack_ms <= record.time_ms <= exit_ + self.slack_ms:
                continue
            distance = max(0, entry - record.time_ms, record.time_ms - exit_)
            if best is None or distance < best[0]:
                best = (distance, trade)
        return best[1] if best is not None else None

    def waits(self, record: IncomeRecord) -> bool:
        opened = self.opened.get(record.symbol)
        return opened is not None and record.time_ms >= opened - self.slack_ms


def _check(kind: str, scope: str, symbol: str, venue: Totals, journal: Totals,
           tolerance: Tolerance, detail: str) -> list[Difference]:
    found = []
    for component in COMPONENTS:
        v, j = venue.value(component), journal.value(component)
        bound = tolerance.bound(v, j)
        if abs(v - j) > bound:
            found.append(Difference(kind, scope, symbol, component, v, j, bound, detail))
    if not found:
        bound = tolerance.bound(venue.net, journal.net)
        if abs(venue.net - journal.net) > bound:
            found.append(Difference(kind, scope, symbol, "net", venue.net, journal.net, bound,
                                    detail))
    return found


def compare(trades: Iterable[dict[str, Any]], open_positions: Sequence[dict[str, Any]],
            income: Iterable[IncomeRecord], *, since_ms: int, until_ms: int,
            tolerance: Tolerance, slack_ms: int = 5_000, asset: str = "USDT") -> Comparison:
    """Compare (see the module's docstring). ``trades`` may include trades that closed
    before ``since_ms`` or after ``until_ms``: they take their income, unreported."""
    rows = list(trades)
    attribution = _Attribution(rows, open_positions, slack_ms)
    compared = [t for t in rows if since_ms <= int(t["exit_ts"]) <= until_ms]
    venue_of: dict[str, Totals] = {str(t["trade_id"]): Totals() for t in compared}
    records_of: dict[str, int] = dict.fromkeys(venue_of, 0)
    result = Comparison(since_ms=since_ms, until_ms=until_ms)
    unattributed: dict[str, Totals] = {}
    for record in income:
        if record.income_type not in COMPARED_TYPES:
            result.ignored[f"type {record.income_type}"] = (
                result.ignored.get(f"type {record.income_type}", 0) + 1)
            continue
        if record.asset != asset:
            result.ignored[f"asset {record.asset}"] = (
                result.ignored.get(f"asset {record.asset}", 0) + 1)
            continue
        trade = attribution.trade_of(record)
        if trade is not None:
            trade_id = str(trade["trade_id"])
            if trade_id in venue_of:
                venue_of[trade_id].add_income(record)
                records_of[trade_id] += 1
            continue
        if attribution.waits(record):
            result.waiting += 1
        elif since_ms <= record.time_ms <= until_ms:
            unattributed.setdefault(day_of(record.time_ms), Totals()).add_income(record)
            result.unattributed.append(record.document())
    days: dict[str, tuple[Totals, Totals, int]] = {}
    for trade in sorted(compared, key=lambda t: (int(t["exit_ts"]), str(t["trade_id"]))):
        trade_id, symbol = str(trade["trade_id"]), str(trade["symbol"])
        venue, journal = venue_of[trade_id], Totals.of_trade(trade)
        detail = (f"{records_of[trade_id]} income records"
                  if records_of[trade_id] else "the venue booked no income for this trade")
        found = _check("trade", trade_id, symbol, venue, journal, tolerance, detail)
        result.differences.extend(found)
        result.trades.append({
            "trade_id": trade_id, "symbol": symbol, "side": trade.get("side", ""),
            "entry_ts": int(trade["entry_ts"]), "exit_ts": int(trade["exit_ts"]),
            "day": day_of(int(trade["exit_ts"])), "income_records": records_of[trade_id],
            "venue": venue.document(), "journal": journal.document(),
            "differing": [d.component for d in found],
            "status": "differs" if found else "match"})
        day_venue, day_journal, count = days.get(day_of(int(trade["exit_ts"])),
                                                 (Totals(), Totals(), 0))
        day_venue.add(venue)
        day_journal.add(journal)
        days[day_of(int(trade["exit_ts"]))] = (day_venue, day_journal, count + 1)
    for day, extra in unattributed.items():
        day_venue, day_journal, count = days.get(day, (Totals(), Totals(), 0))
        day_venue.add(extra)
        days[day] = (day_venue, day_journal, count)
    for day in sorted(days):
        venue, journal, count = days[day]
        extra_records = sum(1 for r in result.unattributed if day_of(int(r["time_ms"])) == day)
        detail = f"{count} trades" + (f", {extra_records} income records match no journal "
                                      "trade" if extra_records else "")
        found = _check("day", day, "", venue, journal, tolerance, detail)
        result.differences.extend(found)
        result.days.append({"day": day, "trades": count, "unattributed_records": extra_records,
                            "venue": venue.document(), "journal": journal.document(),
                            "differing": [d.component for d in found],
                            "status": "differs" if found else "match"})
    return result
