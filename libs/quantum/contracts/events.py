"""Event contracts: one frozen payload model per event type, registered in ``EVENT_TYPES``.

Conventions: times are milliseconds since the Unix epoch (UTC); prices and quantities are
floats validated finite; ``side`` of a position is LONG or SHORT, of an order BUY or SELL.
``docs/streams.md`` is generated from these models and the fleet registry.

What the edge refuses, so that the runner dead-letters it with the reason: an empty or
blank id; a symbol that is not a well-formed USDⓈ-M symbol (``BTCUSDT``, ``ETHUSDC``,
``BTCUSDT_250328``; whether it is *tradable* is the risk-governor's universe check); and,
on the order path (intents, plans, orders, harvests), a time more than
:data:`FUTURE_SKEW_MS` ahead of the wall clock. Replays are historical, so the bound holds
there too: a plan dated in the year 2100 would otherwise stay "fresh" forever.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from quantum.bus.envelope import EventTypes, Payload, Record

EVENT_TYPES = EventTypes()
FUTURE_SKEW_MS = 5 * 60_000  # how far ahead of the wall clock an order-path time may be


def _not_beyond_clock_skew(value: int) -> int:
    limit = int(time.time() * 1000) + FUTURE_SKEW_MS
    if value > limit:
        raise ValueError(
            f"time {value} is in the future (more than {FUTURE_SKEW_MS // 1000} s ahead of "
            f"the wall clock)"
        )
    return value


# allow_inf_nan=False is checked in pydantic-core (Rust): NaN and ±inf are refused at the
# edge, without a Python call per value on the hot path.
Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(allow_inf_nan=False, gt=0)]
NonNegative = Annotated[float, Field(allow_inf_nan=False, ge=0)]
# A USD-margined perpetual (``BTCUSDT``, ``1000PEPEUSDT``, ``ETHUSDC``) or quarterly
# (``BTCUSDT_250328``) contract symbol, as Binance spells them.
Symbol = Annotated[str, Field(pattern=r"^[A-Z0-9]{1,16}(USDT|USDC)(_[0-9]{6})?$")]
# An identifier: non-empty printable ASCII without spaces.
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[!-~]+$")]
# A client order id as Binance accepts it (``newClientOrderId``).
ClientOrderId = Annotated[str, Field(pattern=r"^[.A-Z:/a-z0-9_-]{1,36}$")]
# A time on the order path: not further ahead of the wall clock than FUTURE_SKEW_MS.
OrderTime = Annotated[int, Field(ge=0), AfterValidator(_not_beyond_clock_skew)]
Direction = Literal["LONG", "SHORT"]
OrderSide = Literal["BUY", "SELL"]


# --- market -----------------------------------------------------------------------------


@EVENT_TYPES.register
class Kline(Payload):
    """A closed candlestick. ``ts`` of its envelope is ``close_time``."""

    event_type = "market.kline"

    symbol: Symbol
    interval: str
    open_time: int
    close_time: int
    open: Positive
    high: Positive
    low: Positive
    close: Positive
    volume: NonNegative
    source: Literal["replay", "binance"]


@EVENT_TYPES.register
class Tick(Payload):
    """A price update. In replay one closed bar (open/high/low/close); live the last price
    in all four. ``funding_rate`` is set when a funding settlement falls on this tick."""

    event_type = "market.tick"

    symbol: Symbol
    ts: int
    open: Positive
    high: Positive
    low: Positive
    close: Positive
    mark_price: Positive | None = None
    funding_rate: Finite | None = None
    source: Literal["replay", "binance"]


@EVENT_TYPES.register
class EndOfData(Payload):
    """The replay source has no more data: open positions are closed at the last price."""

    event_type = "market.end_of_data"

    symbols: tuple[Symbol, ...]
    last_ts: int


# --- other venues (the cross-exchange-aggregator) --------------------------------------------
# The fleet's kline and tick shapes, with the venue and its own instrument name added: a
# Coinbase ``BTC-USD`` spot price is filed under the fleet symbol it prices (``BTCUSDT``).
# They travel on ``exchange.normalized`` only, never on the Binance market streams.

Venue = Literal["bybit", "coinbase"]


@EVENT_TYPES.register
class VenueKline(Payload):
    """A closed candlestick of another venue. ``ts`` of its envelope is ``close_time``."""

    event_type = "exchange.kline"

    venue: Venue
    instrument: Annotated[str, Field(min_length=1, max_length=32)]
    symbol: Symbol
    interval: str
    open_time: int
    close_time: int
    open: Positive
    high: Positive
    low: Positive
    close: Positive
    volume: NonNegative


@EVENT_TYPES.register
class VenueTick(Payload):
    """A price update of another venue: the last trade price in all four prices (as the
    Binance live tick), the venue's mark and index price and its current (predicted)
    funding rate where the venue has them (perpetuals), else None."""

    event_type = "exchange.tick"

    venue: Venue
    instrument: Annotated[str, Field(min_length=1, max_length=32)]
    symbol: Symbol
    ts: int
    open: Positive
    high: Positive
    low: Positive
    close: Positive
    mark_price: Positive | None = None
    index_price: Positive | None = None
    funding_rate: Finite | None = None
    next_funding_time: int | None = None


@EVENT_TYPES.register
class VenueFunding(Payload):
    """A funding settlement of another venue's perpetual: the rate settled at
    ``funding_time``."""

    event_type = "exchange.funding"

    venue: Venue
    instrument: Annotated[str, Field(min_length=1, max_length=32)]
    symbol: Symbol
    funding_time: int
    funding_rate: Finite


# --- features and models ------------------------------------------------------------------


@EVENT_TYPES.register
class FeatureVector(Payload):
    """The unified features of one closed bar, named as in the feature schema."""

    event_type = "features.computed"

    symbol: Symbol
    interval: str
    open_time: int
    close_time: int
    close: Positive
    schema_hash: str
    values: dict[str, Finite]
    # Cross-exchange values outside the model schema (``quantum.features.crossvenue``):
    # only those available for this bar; each one absent is named with the reason.
    extras: dict[str, Finite] = Field(default_factory=dict)
    extras_missing: dict[str, str] = Field(default_factory=dict)


class MemberVote(Record):
    member: str
    direction: Literal["LONG", "SHORT", "FLAT"]
    confidence: Annotated[float, Field(ge=0, le=1)]


@EVENT_TYPES.register
class Signal(Payload):
    """Every prediction the ai-engine makes, acted on or not."""

    event_type = "ai.signal"

    symbol: Symbol
    bar_time: int
    model: str
    model_version: str
    direction: Literal["LONG", "SHORT", "FLAT"]
    confidence: Annotated[float, Field(ge=0, le=1)]
    prob_long: Annotated[float, Field(ge=0, le=1)]
    prob_short: Annotated[float, Field(ge=0, le=1)]
    votes: tuple[MemberVote, ...]
    price: Positive
    atr: NonNegative
    blocked_reason: str | None = None
    # a model that predicts the move (the edge model): its calibrated expected log return
    # over ``horizon_bars``, the full cost of the trade on the predicted side, and the rest
    expected_return: Finite | None = None
    cost: Finite | None = None
    horizon_bars: Annotated[int, Field(ge=1)] | None = None


@EVENT_TYPES.register
class Decision(Payload):
    """A signal the ai-engine acts on: it becomes a trade intent."""

    event_type = "ai.decision"

    symbol: Symbol
    bar_time: OrderTime
    direction: Direction
    confidence: Annotated[float, Field(ge=0, le=1)]
    intent_id: Id
    model_version: str


@EVENT_TYPES.register
class TradeIntent(Payload):
    """A wish to open a position, before sizing and risk."""

    event_type = "trade.intent"

    intent_id: Id
    symbol: Symbol
    side: Direction
    confidence: Annotated[float, Field(ge=0, le=1)]
    price: Positive
    atr: NonNegative
    bar_time: OrderTime
    model_version: str
    # how long the model expects to hold (its label horizon); the HORIZON exit profile
    # closes the position then. None: the exit profile's own rules alone.
    horizon_seconds: Annotated[int, Field(ge=60)] | None = None
    expected_return: Finite | None = None


# --- plans, risk and orders ---------------------------------------------------------------


class TakeProfit(Record):
    price: Positive
    fraction: Annotated[float, Field(gt=0, le=1)]


class ExitPlan(Record):
    """Exit levels attached to a plan when it is sized; the exit-brain follows it."""

    profile: str
    stop_loss: Positive
    take_profits: tuple[TakeProfit, ...]
    break_even_after_first_tp: bool = True
    trailing_atr_multiple: NonNegative | None = None
    trailing_callback_pct: NonNegative | None = None
    time_stop_seconds: int | None = None
    liquidation_buffer_pct: NonNegative = 0.01
    atr: NonNegative = 0.0


@EVENT_TYPES.register
class Plan(Payload):
    """A sized plan to open a position, with leverage and exit plan."""

    event_type = "apply.plan"

    plan_id: Id
    intent_id: Id
    symbol: Symbol
    side: Direction
    quantity: Positive
    reference_price: Positive
    notional: Positive
    leverage: Annotated[int, Field(ge=1, le=125)]
    confidence: Annotated[float, Field(ge=0, le=1)]
    size_multiplier: Positive
    bar_time: OrderTime
    exit_plan: ExitPlan


@EVENT_TYPES.register
class RiskDecision(Payload):
    """The governor's answer to a plan: approve, or reject with reason codes."""

    event_type = "risk.decision"

    plan_id: Id
    approved: bool
    reasons: tuple[str, ...]
    plan: Plan
    policy_version: int


@EVENT_TYPES.register
class RiskEvent(Payload):
    """Emergency stop trips and resets, limit alerts."""

    event_type = "risk.event"

    kind: str
    severity: Literal["info", "warning", "critical"]
    detail: str
    data: dict[str, Finite | str | bool | None] = Field(default_factory=dict)


@EVENT_TYPES.register
class OrderRequest(Payload):
    """An order to place. ``client_order_id`` derives from the plan id (idempotency)."""

    event_type = "order.request"

    client_order_id: ClientOrderId
    plan_id: Id
    symbol: Symbol
    side: OrderSide
    position_side: Direction
    quantity: Positive
    reference_price: Positive
    leverage: Annotated[int, Field(ge=1, le=125)]
    reduce_only: bool
    reason: Annotated[str, Field(min_length=1)]
    bar_time: OrderTime
    exit_plan: ExitPlan | None = None
    # How the order is placed. ``MARKET`` (the default, so older events still parse) takes
    # liquidity; ``LIMIT`` rests at ``limit_price``, with ``time_in_force`` ``GTX`` (post-only:
    # refused if it would take liquidity when placed) and ``expires_at`` (event time, ms):
    # not filled by then, it is cancelled. Maker entries only: exits stay market orders.
    order_type: Literal["MARKET", "LIMIT"] = "MARKET"
    limit_price: Positive | None = None
    time_in_force: Literal["GTC", "GTX"] | None = None
    expires_at: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _limit_fields_match_the_type(self) -> OrderRequest:
        if self.order_type == "LIMIT" and self.limit_price is None:
            raise ValueError("a LIMIT order needs a limit_price")
        if self.order_type == "MARKET" and (self.limit_price is not None
                                            or self.time_in_force is not None
                                            or self.expires_at is not None):
            raise ValueError("a MARKET order takes no limit_price, time_in_force or expires_at")
        if self.order_type == "LIMIT" and self.reduce_only:
            raise ValueError("exits are market orders: a LIMIT order cannot be reduce-only")
        return self


POST_ONLY_REJECTED = -5022  # Binance: a post-only (GTX) order that would take liquidity


@EVENT_TYPES.register
class HarvestIntent(Payload):
    """A reduce-only exit: a share of a position, at a level price, for a reason."""

    event_type = "harvest.intent"

    harvest_id: Id
    position_id: Id
    symbol: Symbol
    side: Direction
    fraction: Annotated[float, Field(gt=0, le=1)]
    price: Positive
    reason: Annotated[str, Field(min_length=1)]
    ts: OrderTime


BookSource = Literal["rebuilt_from_venue", "rebuilt_from_local_record", "fresh", "state_lost"]
BOOK_ORDER_ID = "book"  # client_order_id (and plan_id) of a ``book`` report


class BookSummary(Record):
    """The book execution starts from when its state key was missing (``kind`` = ``book``):
    where it came from, and what it holds."""

    source: BookSource
    balance: Finite
    positions: tuple[Symbol, ...]
    open_orders: int = Field(ge=0)
    detail: str = ""


@EVENT_TYPES.register
class ExecutionReport(Payload):
    """What happened to an order: ack, fill (possibly partial), reject or cancel; or, with
    ``kind`` = ``book``, which book execution rebuilt after its state was lost (``book``
    set, ``reason`` its source; the order fields are placeholders: consumers that follow
    orders skip this kind). Execution's own refusals of an entry (its last gate before the
    exchange) are rejects with ``code`` None and the refusal in ``reason``."""

    event_type = "execution.report"

    kind: Literal["ack", "fill", "reject", "cancel", "book"]
    client_order_id: str
    plan_id: str
    symbol: Symbol
    side: OrderSide
    position_side: Direction
    position_id: str | None
    quantity: NonNegative
    price: NonNegative
    fee: NonNegative
    reduce_only: bool
    reason: str
    code: int | None = None
    message: str | None = None
    ts: int
    exit_plan: ExitPlan | None = None
    position_quantity: NonNegative = 0.0  # open quantity of the position after this report
    liquidation_price: NonNegative = 0.0  # of the position after this report (0: none)
    book: BookSummary | None = None

    @classmethod
    def book_report(cls, summary: BookSummary, ts: int) -> ExecutionReport:
        """The ``book`` report of a rebuilt (or fresh) book."""
        return cls(
            kind="book", client_order_id=BOOK_ORDER_ID, plan_id=BOOK_ORDER_ID,
            symbol=summary.positions[0] if summary.positions else "BTCUSDT", side="BUY",
            position_side="LONG", position_id=None, quantity=0.0, price=0.0, fee=0.0,
            reduce_only=True, reason=summary.source, message=summary.detail or None, ts=ts,
            book=summary,
        )


@EVENT_TYPES.register
class TradeClosed(Payload):
    """A position fully closed: prices, size, PnL net of fees and funding, R multiple."""

    event_type = "trade.closed"

    trade_id: str
    symbol: Symbol
    side: Direction
    quantity: Positive
    entry_price: Positive
    exit_price: Positive
    entry_ts: int
    exit_ts: int
    gross_pnl: Finite
    fees: NonNegative
    funding: Finite
    net_pnl: Finite
    r_multiple: Finite | None
    exit_reason: str
    holding_seconds: NonNegative
    leverage: Annotated[int, Field(ge=1, le=125)]


class PositionView(Record):
    position_id: str
    symbol: Symbol
    side: Direction
    quantity: Positive
    entry_price: Positive
    mark_price: Positive
    leverage: int
    margin: NonNegative
    liquidation_price: NonNegative
    unrealised_pnl: Finite
    opened_ts: int


@EVENT_TYPES.register
class PortfolioState(Payload):
    """Balance, equity, exposure and open positions after a change."""

    event_type = "portfolio.state"

    ts: int
    balance: Finite
    equity: Finite
    unrealised_pnl: Finite
    realised_pnl: Finite
    fees_paid: NonNegative
    funding_paid: Finite
    gross_exposure: NonNegative
    net_exposure: Finite
    positions: tuple[PositionView, ...]
    pending_orders: int
    # Plan ids of the entry orders on the book not yet filled (a maker entry resting until
    # its price trades through or it expires): the governor keeps counting them as exposure.
    pending_plans: tuple[str, ...] = ()


# --- exits on the exchange and reconciliation ---------------------------------------------


@EVENT_TYPES.register
class ExitLevels(Payload):
    """The exit-brain's current protective levels of a position, sent when they change, so
    execution keeps the reduce-only stop and take-profit resting on the exchange in step
    (a position stays protected while the fleet is down)."""

    event_type = "exit.levels"

    position_id: str
    symbol: Symbol
    side: Direction
    stop: Positive
    stop_reason: str
    take_profit: Positive | None
    remaining_quantity: NonNegative
    ts: int


@EVENT_TYPES.register
class ReconcileEvent(Payload):
    """A difference between the exchange and the fleet's book, and what was done about it."""

    event_type = "reconcile.event"

    kind: Literal["unknown_position", "missing_position", "quantity_mismatch",
                  "orphan_order", "unprotected_position", "exchange_unreachable", "resolved"]
    symbol: str
    position_id: str | None
    exchange_quantity: Finite
    internal_quantity: Finite
    action: str
    detail: str
    ts: int


@EVENT_TYPES.register
class LedgerDifference(Payload):
    """The venue's income history and the journal disagree beyond the tolerance, or the
    ledger cannot compare them (``unavailable``), or an earlier difference is gone
    (``resolved``). Amounts are in the settlement asset (USDT), each side's own total of
    ``component``: fees and funding as paid (positive = paid), PnL as realised."""

    event_type = "ledger.difference"

    kind: Literal["trade", "day", "unattributed", "unavailable", "resolved"]
    scope: str  # the trade id, the UTC day (YYYY-MM-DD), or the source that failed
    symbol: str  # "" for a day or the whole account
    component: Literal["realised_pnl", "fees", "funding", "net", ""]
    venue_amount: Finite
    journal_amount: Finite
    difference: Finite  # venue_amount - journal_amount
    tolerance: NonNegative
    detail: str
    ts: int


# --- model supervision and continuous learning (issue 3) ----------------------------------


@EVENT_TYPES.register
class SupervisorEvent(Payload):
    """The ai-engine's model supervisor speaking up: direction bias blocking intents,
    feature drift against the training distribution, a model swapped or refused, members
    missing (below the quorum no intent is made)."""

    event_type = "ai.supervisor"

    kind: Literal["direction_bias", "feature_drift", "model_swapped", "model_refused",
                  "members_missing"]
    severity: Literal["info", "warning", "critical"]
    detail: str
    model_version: str
    data: dict[str, Finite | str | bool | None] = Field(default_factory=dict)


@EVENT_TYPES.register
class PolicyUpdated(Payload):
    """A new policy is in force: ``kind`` = ``model`` names the model version the ai-engine
    must now serve (promotion or rollback by the CLM or an operator)."""

    event_type = "policy.updated"

    kind: Literal["model", "sizing"]
    version: str
    previous: str | None
    reason: str
    ts: int


@EVENT_TYPES.register
class RetrainingStarted(Payload):
    """The CLM started a retraining run: on its schedule, by hand, or because the live
    features drifted from the active model's training distribution (``detail`` says how)."""

    event_type = "learning.retraining.started"

    run_id: str
    trigger: Literal["schedule", "manual", "drift"]
    data_dir: str
    symbols: tuple[Symbol, ...]
    ts: int
    detail: str = ""


@EVENT_TYPES.register
class RetrainingCompleted(Payload):
    """A retraining run ended: its candidate version, or why it failed."""

    event_type = "learning.retraining.completed"

    run_id: str
    succeeded: bool
    candidate: str | None
    detail: str
    seconds: NonNegative
    ts: int


@EVENT_TYPES.register
class ShadowCompleted(Payload):
    """A shadow test decided: the candidate against the active model on live features,
    scored by the metric declared before the test started, and both backtested through the
    in-process engine over the shadow window (``backtest``: each model's net return, max
    drawdown, trades, fees and funding, the window and the policy brake); ``reason`` says
    why the candidate was or was not promoted."""

    event_type = "learning.shadow.completed"

    candidate: str
    active: str
    metric: str
    candidate_score: Finite
    active_score: Finite
    predictions: int
    promoted: bool
    ts: int
    backtest: dict[str, Finite | str | bool | None] = Field(default_factory=dict)
    reason: str = ""


# --- RL position sizing (issue 7) -----------------------------------------------------------


@EVENT_TYPES.register
class RlReward(Payload):
    """A closed trade as the RL sizer learns from it: the observation current at entry (as
    the intent-bridge recorded it), the multiplier applied and the one suggested, the real
    net PnL, the PnL the suggestion would have made, and the reward (``quantum.rl.reward``)."""

    event_type = "rl.reward"

    plan_id: str
    symbol: Symbol
    side: Direction
    entry_ts: int
    exit_ts: int
    observation: tuple[Finite, ...]
    observation_schema: str
    mode: Literal["shadow", "active"]
    confidence: Annotated[float, Field(ge=0, le=1)]
    reference_price: Positive
    stop_distance: Positive
    equity_at_entry: Positive
    entry_notional: Positive
    applied_multiplier: Positive
    suggested_multiplier: Positive | None
    policy_version: str | None
    net_pnl: Finite
    counterfactual_pnl: Finite | None
    reward: Finite


@EVENT_TYPES.register
class SizingPolicyPromoted(Payload):
    """The rl-trainer promoted a sizing policy (the intent-bridge reloads it). Its own stream:
    ``policy.updated`` has one producer (the CLM), and the registry allows only one."""

    event_type = "rl.policy.promoted"

    version: str
    previous: str | None
    reason: str
    return_difference: Finite | None
    sharpe_difference: Finite | None
    ts: int


# --- market regime ----------------------------------------------------------------------


@EVENT_TYPES.register
class MetaRegime(Payload):
    """A symbol's or the market's regime when it changed (:mod:`quantum.regime.rules`):
    ``scope`` is a symbol or ``MARKET``; ``bar_time`` the close time of the bar classified;
    ``trend_score`` and ``vol_ratio`` the rules' inputs; ``previous_*`` what it was before
    (None at the first call); ``members`` the symbols the market's call is made of."""

    event_type = "meta.regime"

    scope: Annotated[str, Field(pattern=r"^(MARKET|[A-Z0-9]{1,16}(USDT|USDC)(_[0-9]{6})?)$")]
    bar_time: Annotated[int, Field(ge=0)]
    trend: Literal["trend_up", "trend_down", "range"]
    volatility: Literal["low_vol", "normal_vol", "high_vol"]
    previous_trend: Literal["trend_up", "trend_down", "range"] | None
    previous_volatility: Literal["low_vol", "normal_vol", "high_vol"] | None
    trend_score: Finite
    vol_ratio: NonNegative
    baseline_vol: NonNegative
    members: Annotated[int, Field(ge=1)]
    rules_version: Annotated[int, Field(ge=1)]


# --- universe ---------------------------------------------------------------------------


class UniverseMember(Record):
    """One ranked symbol: what it was measured at, and why it is in or out.

    ``reasons`` are codes with their figures (``quote_volume_24h_below_min: 4.1e5 < 1e6``);
    a selected symbol's first reason is ``selected: rank 2 of 40``.
    """

    symbol: Symbol
    rank: Annotated[int, Field(ge=1)]
    selected: bool
    score: Finite
    quote_volume_24h: NonNegative
    spread_bps: NonNegative | None
    spread_source: Literal["book", "bars", "none"]
    volatility_24h: NonNegative | None
    listing_age_days: NonNegative | None
    history_bars: Annotated[int, Field(ge=0)]
    completeness: Annotated[float, Field(ge=0, le=1)] | None
    realised_pnl: Finite
    trades: Annotated[int, Field(ge=0)]
    reasons: tuple[str, ...]


@EVENT_TYPES.register
class UniverseUpdated(Payload):
    """The universe service's ranking when the selection changed: every candidate ranked,
    the selected symbols in rank order, and what entered and left since the last one."""

    event_type = "universe.updated"

    ts: int
    policy_version: Annotated[int, Field(ge=0)]
    source: Literal["bars", "binance"]
    symbols: tuple[Symbol, ...]
    entered: tuple[Symbol, ...]
    left: tuple[Symbol, ...]
    members: tuple[UniverseMember, ...]
