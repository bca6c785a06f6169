"""The policy store: risk, sizing and universe policy in Redis, versioned and audited.

One JSON document under ``quantum:state:policy`` holds the active policy and its version;
every write appends the previous and new document to ``quantum:state:policy:history`` with
who, when and why. A write is validated as a whole (wrong type, out-of-range limit, unknown
key) and applied atomically with ``WATCH``/``MULTI``, so nothing is ever half-applied.
Services read the document when its version changes; no restart is needed.

Without a stored document, services run on the defaults below (version 0), which mirror
the parameters of the architecture brief.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import orjson
import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quantum.bus.ports import State
from quantum.registry.fleet import POLICY_HISTORY_KEY, POLICY_KEY

HISTORY_LIMIT = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RiskPolicy(_Strict):
    """Pre-trade limits and emergency-stop thresholds (fractions are of equity)."""

    max_position_margin_usd: float = Field(2000.0, gt=0, allow_inf_nan=False)
    max_leverage: int = Field(10, ge=1, le=125)
    min_notional_usd: float = Field(5.0, ge=0, allow_inf_nan=False)
    max_concurrent_positions: int = Field(20, ge=1, le=500)
    max_gross_exposure: float = Field(2.0, gt=0, le=50, allow_inf_nan=False)
    max_net_exposure: float = Field(2.0, gt=0, le=50, allow_inf_nan=False)
    max_correlation: float = Field(0.7, gt=0, le=1)
    correlation_window: int = Field(288, ge=20, le=10_000)
    min_confidence: float = Field(0.65, ge=0, le=1)
    cooldown_seconds: int = Field(120, ge=0)
    max_data_age_seconds: int = Field(300, ge=1)
    daily_drawdown_limit: float = Field(0.15, gt=0, le=1)
    weekly_drawdown_limit: float = Field(0.25, gt=0, le=1)
    ess_daily_drawdown: float = Field(0.15, gt=0, le=1)
    ess_weekly_drawdown: float = Field(0.25, gt=0, le=1)
    ess_brake_drawdown: float = Field(0.20, gt=0, le=1)
    ess_max_consecutive_errors: int = Field(5, ge=1)
    ess_data_stale_seconds: int = Field(300, ge=10)
    ess_heartbeat_grace_seconds: int = Field(30, ge=5)
    ess_close_losing_positions: bool = True
    # On a trip the exit-brain closes the losers and cuts what remains by this share
    # (docs/RUNBOOK.md, "The exposure cut"): half, not nothing and not everything.
    ess_cut_exposure_share: float = Field(0.5, ge=0, le=1)
    # Concentration (issue 15 item 4), fractions of equity: the absolute notional of one
    # symbol, and the absolute net notional of a cluster of symbols whose bar returns
    # correlate above cluster_correlation (single linkage over the correlation window).
    # New plans are refused past them; when the book drifts past a limit by more than
    # rebalance_tolerance (a market move, not an order), the governor proposes reduce-only
    # cuts back to the limit, which the exit-brain carries out. None (the default) is the
    # gross limit for a symbol and the net limit for a cluster: no new pre-trade bound, but
    # a book that drifted past what the governor would approve is rebalanced.
    max_symbol_exposure: float | None = Field(None, gt=0, le=50, allow_inf_nan=False)
    max_cluster_exposure: float | None = Field(None, gt=0, le=50, allow_inf_nan=False)
    cluster_correlation: float = Field(0.7, gt=0, le=1)
    rebalance_tolerance: float = Field(0.1, ge=0, le=10, allow_inf_nan=False)

    @property
    def symbol_limit(self) -> float:
        """The concentration limit of one symbol in force (fraction of equity)."""
        if self.max_symbol_exposure is None:
            return self.max_gross_exposure
        return self.max_symbol_exposure

    @property
    def cluster_limit(self) -> float:
        """The net exposure limit of one correlated cluster in force (fraction of equity)."""
        if self.max_cluster_exposure is None:
            return self.max_net_exposure
        return self.max_cluster_exposure

    @model_validator(mode="after")
    def _pre_trade_limits_inside_emergency_limits(self) -> RiskPolicy:
        if self.daily_drawdown_limit > self.ess_daily_drawdown:
            raise ValueError("daily_drawdown_limit must not exceed ess_daily_drawdown")
        if self.weekly_drawdown_limit > self.ess_weekly_drawdown:
            raise ValueError("weekly_drawdown_limit must not exceed ess_weekly_drawdown")
        return self


class SizingPolicy(_Strict):
    """How the intent-bridge sizes a plan, and how the apply-layer places its entry.

    Attributes (entries):
        entry_order: ``taker`` (a market order, filled at the next bar's open) or ``maker``
            (a post-only limit order resting on the passive side of the signal price).
        maker_offset_bps: a maker entry's distance from the signal price, in basis points:
            a buy rests at ``price × (1 − offset)``, a sell at ``price × (1 + offset)``. At 0
            it sits at the last price, which a post-only order may not take: refused.
        maker_ttl_bars: bars a maker entry rests before it is cancelled unfilled.
    """

    # small by default: nothing has beaten flat net of costs yet (docs/MODELS.md)
    risk_per_trade: float = Field(0.002, gt=0, le=0.1)
    min_notional_usd: float = Field(10.0, gt=0)
    max_notional_usd: float = Field(10_000.0, gt=0)
    leverage: int = Field(5, ge=1, le=125)
    exit_profile: Literal["DEFAULT", "CHALLENGE_100", "HORIZON"] = "DEFAULT"
    take_profit_r: float = Field(3.0, gt=0, le=50, allow_inf_nan=False)  # HORIZON profile
    stop_atr_multiple: float = Field(1.5, gt=0, le=20)
    min_confidence: float = Field(0.65, ge=0, lt=1)
    rl_sizing: Literal["off", "shadow", "active"] = "shadow"
    entry_order: Literal["taker", "maker"] = "taker"
    maker_offset_bps: float = Field(0.0, ge=0, le=1000, allow_inf_nan=False)
    maker_ttl_bars: int = Field(3, ge=1, le=10_000)

    @model_validator(mode="after")
    def _bounds_ordered(self) -> SizingPolicy:
        if self.min_notional_usd > self.max_notional_usd:
            raise ValueError("min_notional_usd must not exceed max_notional_usd")
        return self


class StrategyPolicy(_Strict):
    """How the ai-engine turns a model that predicts the size of the move into trades.

    Attributes:
        cost_margin: a trade is taken only when its expected log return over the model's
            horizon exceeds its full cost (fees at the entry's order type, slippage, expected
            funding; :mod:`quantum.risk.costs`) by at least this much.
    """

    cost_margin: float = Field(0.001, ge=0, le=0.2, allow_inf_nan=False)


class UniversePolicy(_Strict):
    """Which symbols may be traded: the universe service's filters and profile size
    (:mod:`quantum.universe.ranking`), changed with ``quantumctl universe apply``.

    Attributes:
        symbols: the allowed candidates; empty means every tradable symbol (live: the
            exchange's listing; replay: the data's symbols). The governor also requires
            a symbol to be here when it is not empty.
        blacklist: never selected, whatever their figures.
        size: the profile size: at most this many symbols are selected, best score first.
        min_quote_volume_24h: the least 24 h quote volume (USD) a symbol needs.
        max_spread_bps: the widest spread (live: the book's; on bars: the high-low
            estimate) a symbol may have, in basis points of its price.
        min_history_bars: closed bars of the fleet's own history a symbol needs before it
            can enter (a day of 5-minute bars by default): no symbol enters a replay
            before the data could have judged it.
        min_completeness: the least share of the last 24 h of bars that must be present.
        min_listing_age_days: the least time since listing (live: the exchange's
            ``onboardDate``; replay: the first bar of the data).
        min_realised_pnl_usd: a symbol whose realised net PnL over at least
            ``results_min_trades`` closed trades is below this is dropped (None: off).
        results_min_trades: closed trades before the fleet's own results count.
        rank_interval_minutes: how often the ranking is redone (on the event clock in a
            replay, on the wall clock live).
        incumbent_bonus: added to the score of a symbol already selected, so that two
            symbols of nearly equal score do not swap places at every ranking.
    """

    symbols: tuple[str, ...] = ()
    blacklist: tuple[str, ...] = ()
    size: int = Field(100, ge=1, le=1000)
    min_quote_volume_24h: float = Field(1_000_000.0, ge=0, allow_inf_nan=False)
    max_spread_bps: float = Field(50.0, gt=0, allow_inf_nan=False)
    min_history_bars: int = Field(288, ge=1, le=100_000)
    min_completeness: float = Field(0.95, ge=0, le=1)
    min_listing_age_days: float = Field(0.0, ge=0, allow_inf_nan=False)
    min_realised_pnl_usd: float | None = Field(None, allow_inf_nan=False)
    results_min_trades: int = Field(10, ge=1)
    rank_interval_minutes: int = Field(60, ge=5, le=10_080)
    incumbent_bonus: float = Field(0.1, ge=0, le=1, allow_inf_nan=False)


RegimeLabel = Literal["trend_up", "trend_down", "range", "low_vol", "normal_vol", "high_vol"]


class RegimePolicy(_Strict):
    """How sizing and risk use the meta-regime's calls (:mod:`quantum.regime`). The
    defaults leave both as they were without a regime.

    Attributes:
        high_vol_size_factor: the intent-bridge multiplies a plan's size by this when its
            symbol is in ``high_vol`` (1.0: no change).
        block_entries_in: regimes (of the symbol or of the market) in which the governor
            refuses new entries (``regime_blocked``); exits are never blocked.
        gross_budget: the most gross exposure, a fraction of equity, while the market is in
            a regime, e.g. ``{"high_vol": 1.0}`` (``regime_budget``); unlisted regimes have
            only ``risk.max_gross_exposure``.
        max_age_seconds: a regime older than this (its bar's close before the plan's bar) is
            no regime; when the policy acts on regimes and has none for a plan, the governor
            refuses it (``regime_unavailable``: fail closed).
    """

    high_vol_size_factor: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    block_entries_in: tuple[RegimeLabel, ...] = ()
    gross_budget: dict[RegimeLabel, Annotated[float, Field(gt=0, le=50, allow_inf_nan=False)]] \
        = Field(default_factory=dict)
    max_age_seconds: int = Field(900, ge=60)

    @property
    def governs(self) -> bool:
        """Whether the governor acts on regimes at all."""
        return bool(self.block_entries_in or self.gross_budget)


class Policy(_Strict):
    version: int = Field(0, ge=0)
    risk: RiskPolicy = RiskPolicy()
    sizing: SizingPolicy = SizingPolicy()
    strategy: StrategyPolicy = StrategyPolicy()
    universe: UniversePolicy = UniversePolicy()
    regime: RegimePolicy = RegimePolicy()
    updated_at: int = 0
    updated_by: str = "defaults"
    reason: str = "built-in defaults"

    @model_validator(mode="after")
    def _leverage_within_cap(self) -> Policy:
        if self.sizing.leverage > self.risk.max_leverage:
            raise ValueError("sizing.leverage must not exceed risk.max_leverage")
        return self


class PolicyError(ValueError):
    """A policy write that was refused; the message names the key and why."""


def _explain(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "policy"
    return f"{where}: {first['msg']}"


def parse(raw: bytes | None) -> Policy:
    """The stored document; no document is the default policy (version 0)."""
    return Policy.model_validate_json(raw) if raw is not None else Policy()


def load(client: redis.Redis) -> Policy:
    return parse(client.get(POLICY_KEY))


def version(client: redis.Redis) -> int:
    raw = client.get(POLICY_KEY)
    return int(orjson.loads(raw)["version"]) if raw is not None else 0


def _set_path(document: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = document
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise PolicyError(f"unknown policy section {part!r} in {dotted!r}")
        node = node[part]
    if parts[-1] not in node:
        raise PolicyError(f"unknown policy key {dotted!r}")
    node[parts[-1]] = value


def compose(
    current: Policy,
    changes: dict[str, Any],
    *,
    by: str,
    reason: str,
    base: Policy | None = None,
    at: int | None = None,
) -> tuple[Policy, dict[str, Any]]:
    """The next version of ``current`` with ``changes`` (dotted keys → values) applied to
    ``base`` (default: ``current``), and its history entry. Raises :class:`PolicyError`
    naming the first bad key."""
    if not reason.strip():
        raise PolicyError("a reason is required")
    document = (base or current).model_dump(mode="json")
    for key, value in changes.items():
        _set_path(document, key, value)
    document.update(
        version=current.version + 1,
        updated_at=int(time.time() * 1000) if at is None else at,
        updated_by=by,
        reason=reason,
    )
    try:
        new = Policy.model_validate(document)
    except ValidationError as e:
        raise PolicyError(_explain(e)) from None
    entry = {
        "version": new.version,
        "at": new.updated_at,
        "by": by,
        "reason": reason,
        "changes": changes,
        "policy": new.model_dump(mode="json"),
    }
    return new, entry


def write(
    client: redis.Redis,
    changes: dict[str, Any],
    *,
    by: str,
    reason: str,
    base: Policy | None = None,
) -> Policy:
    """Apply ``changes`` (dotted keys → values) as a new version; all or nothing."""
    if not reason.strip():
        raise PolicyError("a reason is required")
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(POLICY_KEY)
                current = parse(pipe.get(POLICY_KEY))
                new, entry = compose(current, changes, by=by, reason=reason, base=base)
                pipe.multi()
                pipe.set(POLICY_KEY, new.model_dump_json())
                pipe.lpush(POLICY_HISTORY_KEY, orjson.dumps(entry))
                pipe.ltrim(POLICY_HISTORY_KEY, 0, HISTORY_LIMIT - 1)
                pipe.execute()
                return new
            except redis.WatchError:
                continue


def history(client: redis.Redis, count: int = 20) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in client.lrange(POLICY_HISTORY_KEY, 0, count - 1)]


def rollback(client: redis.Redis, to_version: int, *, by: str, reason: str) -> Policy:
    """Re-apply the document of an earlier version as a new version."""
    for entry in client.lrange(POLICY_HISTORY_KEY, 0, -1):
        record = orjson.loads(entry)
        if record["version"] == to_version:
            old = Policy.model_validate(record["policy"])
            return write(client, {}, by=by, reason=f"rollback to v{to_version}: {reason}", base=old)
    if to_version == 0:
        return write(client, {}, by=by, reason=f"rollback to defaults: {reason}", base=Policy())
    raise PolicyError(f"no policy version {to_version} in the history")


class PolicyCache:
    """A service's view of the policy, re-read only when the version changes."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.policy = parse(state.get(POLICY_KEY))

    def refresh(self) -> Policy:
        return self.update(self.state.get(POLICY_KEY))

    def update(self, raw: bytes | None) -> Policy:
        """Take the stored document (already read, e.g. in a pipeline) if its version moved."""
        if raw is None:
            if self.policy.version != 0:
                self.policy = Policy()
            return self.policy
        if orjson.loads(raw)["version"] != self.policy.version:
            self.policy = Policy.model_validate_json(raw)
        return self.policy
