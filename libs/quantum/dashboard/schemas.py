"""Response and request bodies of the dashboard API: the OpenAPI schema clients (and the
schemathesis run in the tests) check every response against."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Trade(Model):
    trade_id: str
    symbol: str
    side: str
    quantity: float
    entry_price: float
    exit_price: float
    entry_ts: int
    exit_ts: int
    gross_pnl: float
    fees: float
    funding: float
    net_pnl: float
    r_multiple: float | None
    exit_reason: str
    holding_seconds: float
    leverage: int


class TradePage(Model):
    items: list[Trade]
    total: int
    limit: int
    offset: int


class Vote(Model):
    member: str
    direction: str
    confidence: float


class SignalItem(Model):
    event_id: str
    ts: int
    symbol: str
    bar_time: int
    model: str
    model_version: str
    direction: str
    confidence: float
    prob_long: float
    prob_short: float
    price: float
    atr: float
    blocked_reason: str | None
    votes: list[Vote]


class SignalPage(Model):
    items: list[SignalItem]
    total: int
    limit: int
    offset: int


class TakeProfitLevel(Model):
    price: float
    fraction: float


class Position(Model):
    position_id: str
    symbol: str
    side: str
    quantity: float
    entry_price: float
    mark_price: float
    leverage: int
    margin: float
    liquidation_price: float
    unrealised_pnl: float
    opened_ts: int
    stop_loss: float | None
    take_profits: list[TakeProfitLevel]


class PositionPage(Model):
    source: Literal["live", "journal", "none"]
    as_of: int | None
    items: list[Position]
    total: int
    limit: int
    offset: int


class Price(Model):
    symbol: str
    ts: int
    price: float
    mark_price: float | None


class Candle(Model):
    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class EssView(Model):
    tripped: bool
    reason: str
    evaluator: str
    tripped_at: int
    by: str
    paused: bool
    paused_by: str
    trips: int


class RiskEventItem(Model):
    ts: int
    kind: str
    severity: str
    detail: str


class Risk(Model):
    ess: EssView
    equity: float | None
    balance: float | None
    peak_equity: float | None
    drawdown: float | None
    max_drawdown: float | None
    gross_exposure: float | None
    net_exposure: float | None
    exposure_ratio: float | None
    open_positions: int
    recent_events: list[RiskEventItem]


class SymbolStats(Model):
    symbol: str
    trades: int
    wins: int
    losses: int
    win_rate: float
    net_pnl: float
    fees: float
    funding: float
    profit_factor: float | None
    average_r: float | None
    best: float | None
    worst: float | None


class Stats(Model):
    trades: int
    wins: int
    losses: int
    win_rate: float
    net_pnl: float
    fees: float
    funding: float
    profit_factor: float | None
    average_r: float | None
    best: float | None
    worst: float | None
    max_drawdown: float
    by_symbol: list[SymbolStats]


class EquityPoint(Model):
    ts: int
    equity: float
    balance: float | None  # None in a report (it records equity only)
    drawdown: float
    low: float


class Health(Model):
    """The truth map (``quantumctl status --json``) with an overall status. Open to fields
    the truth map gains (it is owned by ``quantum.ctl.truth``, not by this API)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    status: Literal["ok", "degraded", "down"]
    generated_at: str
    services: list[dict[str, Any]]
    streams: list[dict[str, Any]]
    flags: list[dict[str, str]]


class Dependency(Model):
    status: Literal["ok", "degraded", "down"]
    detail: str
    data: dict[str, Any] = Field(default_factory=dict)


class HealthV2(Model):
    """Each dependency's state: Redis, the journal database and service, the emergency stop,
    every registered service and every stream."""

    status: Literal["ok", "degraded", "down"]
    generated_at: str
    dependencies: dict[str, Dependency]


class Problem(Model):
    detail: str


class ControlReason(Model):
    reason: str = Field(min_length=1, max_length=500)
    operator: str = Field("dashboard", min_length=1, max_length=64, pattern=r"^[\w.@:-]+$")


class PauseRequest(Model):
    reason: str = Field("operator pause from the dashboard", min_length=1, max_length=500)
    operator: str = Field("dashboard", min_length=1, max_length=64, pattern=r"^[\w.@:-]+$")


class ExitBody(Model):
    position_id: str = Field(min_length=1, max_length=64, pattern=r"^[\w.:-]+$")
    reason: str = Field(min_length=1, max_length=500)
    operator: str = Field("dashboard", min_length=1, max_length=64, pattern=r"^[\w.@:-]+$")


class ExitRequested(Model):
    request_id: str
    position_id: str
    symbol: str
    side: str
    mark_price: float
    reason: str
    by: str
    at: int


class ChartTrade(Model):
    trade_id: str
    side: str
    entry_ts: int
    entry_price: float
    exit_ts: int
    exit_price: float
    exit_reason: str
    net_pnl: float
    stop_loss: float | None


class ChartPosition(Model):
    position_id: str
    side: str
    entry_price: float
    opened_ts: int
    stop_loss: float | None
    take_profits: list[TakeProfitLevel]


class Chart(Model):
    """Candles of one symbol with the trades over them: entries, exits and stops."""

    symbol: str
    source: Literal["live", "report"]
    interval: str
    candles: list[Candle]
    trades: list[ChartTrade]
    open: list[ChartPosition]
    note: str | None


class SourceState(Model):
    status: Literal["ok", "empty", "stale", "down"]
    detail: str
    data: dict[str, Any] = Field(default_factory=dict)


class Sources(Model):
    """Whether Redis and the journal answer and hold anything."""

    redis: SourceState
    journal: SourceState


class ModelHealth(Model):
    """What the ai-engine serves, bias, drift, the CLM's shadow test, the RL sizer."""

    model_config = ConfigDict(frozen=True, extra="allow")

    ai_engine: dict[str, Any]
    bias: dict[str, Any]
    drift: dict[str, Any] | None
    notices: list[dict[str, Any]]
    shadow: dict[str, Any] | None
    clm: dict[str, Any] | None
    rl_sizing: dict[str, Any] | None
    rl_trainer: dict[str, Any] | None


class ReportRow(Model):
    name: str
    kind: Literal["replay", "backtest"]
    modified_ms: int
    trades: int
    net_pnl: float
    symbols: list[str]


class ReportSummary(Model):
    name: str
    kind: Literal["replay", "backtest"]
    initial_balance: float
    final_balance: float
    trades: int
    net_pnl: float
    max_drawdown: float
    start_ms: int | None
    end_ms: int | None
    symbols: list[str]
    open_positions_at_end: int
