"""The emergency stop's evaluators: each watches one thing and names a trip reason.

Event-driven evaluators see the streams in order (drawdown from ``portfolio.state``,
execution errors from ``execution.result``) and so trip at the same bar in a replay at any
speed. Wall-clock evaluators (heartbeats, stale feed) only run on the wall clock; a replay
runs on the event clock, where neither has a meaning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from quantum.bus.ports import State
from quantum.contracts.events import POST_ONLY_REJECTED, ExecutionReport
from quantum.observability.heartbeat import heartbeat_key
from quantum.risk.policy import RiskPolicy

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS


@dataclass
class DrawdownEvaluator:
    """Daily and weekly drawdown from the period's first equity; the brake from the peak."""

    day: int = -1
    week: int = -1
    day_start: float = 0.0
    week_start: float = 0.0
    peak: float = 0.0

    def observe(self, equity: float, ts: int, policy: RiskPolicy) -> str | None:
        """Judge ``equity`` as of ``ts`` (the bar's event time, or now on the wall clock)."""
        day, week = ts // DAY_MS, (ts + 3 * DAY_MS) // WEEK_MS  # weeks start on Monday
        if day != self.day:
            self.day, self.day_start = day, equity
        if week != self.week:
            self.week, self.week_start = week, equity
        self.peak = max(self.peak, equity)
        limits = (
            ("daily drawdown", self.day_start, policy.ess_daily_drawdown),
            ("weekly drawdown", self.week_start, policy.ess_weekly_drawdown),
            ("drawdown from peak", self.peak, policy.ess_brake_drawdown),
        )
        for name, start, limit in limits:
            if start > 0 and 1 - equity / start >= limit:
                return f"{name} {1 - equity / start:.1%} ≥ {limit:.0%}"
        return None

    def daily_drawdown(self, equity: float) -> float:
        return 1 - equity / self.day_start if self.day_start > 0 else 0.0

    def weekly_drawdown(self, equity: float) -> float:
        return 1 - equity / self.week_start if self.week_start > 0 else 0.0


@dataclass
class ExecutionErrorsEvaluator:
    """Consecutive rejects from the exchange; any fill or ack resets the count. A refusal by
    execution's own gate (ESS, stale approval: a reject with no exchange code) is the fleet
    protecting itself, not an exchange error, and is not counted; nor is a post-only entry
    refused because the price was at its limit (-5022: the maker rule working)."""

    consecutive: int = 0

    def observe(self, report: ExecutionReport, policy: RiskPolicy) -> str | None:
        if report.kind == "reject" and report.code not in (None, POST_ONLY_REJECTED):
            self.consecutive += 1
        elif report.kind in ("fill", "ack"):
            self.consecutive = 0
        if self.consecutive > policy.ess_max_consecutive_errors:
            return (
                f"{self.consecutive} consecutive execution errors "
                f"(> {policy.ess_max_consecutive_errors}), last: {report.code} {report.message}"
            )
        return None


def missing_heartbeats(state: State, required: list[str]) -> list[str]:
    beats = state.get_many([heartbeat_key(name) for name in required])
    return [name for name, beat in zip(required, beats, strict=True) if beat is None]


def health_reason(state: State, required: list[str]) -> str | None:
    missing = missing_heartbeats(state, required)
    return f"required services without heartbeat: {', '.join(missing)}" if missing else None


def stale_feed_reason(last_arrival_ms: int | None, now_ms: int, policy: RiskPolicy) -> str | None:
    """Age of the newest ``market.tick`` entry (when it reached the bus, wall clock)."""
    if last_arrival_ms is None:
        return None  # no feed yet: nothing to call stale (system health covers a dead publisher)
    age_s = (now_ms - last_arrival_ms) / 1000
    if age_s > policy.ess_data_stale_seconds:
        return f"market data stale for {age_s:.0f}s (> {policy.ess_data_stale_seconds}s)"
    return None


def to_state(*evaluators: Any) -> dict[str, Any]:
    return {type(e).__name__: asdict(e) for e in evaluators}


def from_state(state: dict[str, Any], cls: type[Any]) -> Any:
    return cls(**state.get(cls.__name__, {}))
