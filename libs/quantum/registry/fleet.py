"""The fleet registry: the one declaration of every service.

Everything else is derived from this file: systemd units and the target
(``deploy/systemd/``), env file examples (``etc/quantum/``), the local launcher's table,
the stream docs (``docs/streams.md``), ``quantumctl verify`` and the replay barrier. A test
fails when a generated file differs from what the generator writes, and the runner refuses
to publish to a stream a service does not declare here.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from quantum.bus.streams import StreamSpec
from quantum.contracts import streams as s

STATE_PREFIX = "quantum:state:"


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the fleet.

    Attributes:
        name: the service's name; also its consumer group, unit name and env file name.
        module: what ``python -m`` runs.
        settings: ``module:Class`` of its settings (env file keys are generated from it).
        consumes: streams it reads, all with the consumer group ``name``.
        produces: streams it may publish to (the runner enforces this).
        inspects: streams it only looks at, without a consumer group (e.g. the age of the
            newest entry); it never consumes or publishes them.
        state_keys: Redis keys it owns (no other service writes them).
        port: its Prometheus metrics (or HTTP) port.
        required: trading stops (fail closed) when its heartbeat is missing.
        memory_max: systemd ``MemoryMax``.
        loopback_only: it talks to Redis on loopback only: ``IPAddressAllow=localhost``.
        replay: it runs in ``quantumctl replay``.
        placement: on two hosts, ``active-standby`` (the default): one instance works, the
            other waits for its lease (:mod:`quantum.bus.lease`) and takes over when the
            active one's lapses; ``both``: a stateless service that may run on both hosts
            at once (it has no consumer group or no order to keep).
    """

    name: str
    module: str
    settings: str
    description: str
    consumes: tuple[StreamSpec, ...] = ()
    produces: tuple[StreamSpec, ...] = ()
    inspects: tuple[StreamSpec, ...] = ()
    state_keys: tuple[str, ...] = ()
    port: int = 0
    required: bool = True
    memory_max: str = "512M"
    loopback_only: bool = True
    replay: bool = True
    after: tuple[str, ...] = field(default=())
    placement: Literal["active-standby", "both"] = "active-standby"

    @property
    def group(self) -> str:
        return self.name

    @property
    def env_file(self) -> str:
        return f"{self.name}.env"

    @property
    def unit(self) -> str:
        return f"quantum-{self.name}.service"


def state_key(name: str) -> str:
    return STATE_PREFIX + name


PORTFOLIO_KEY = state_key("portfolio")
EXECUTION_KEY = state_key("execution")
# The paper venue's income history, newest first (quantum.exchange.income; the ledger reads it)
EXECUTION_INCOME_KEY = state_key("execution:income")
GOVERNOR_KEY = state_key("risk-governor")
APPLY_KEY = state_key("apply-layer")  # sorted set of applied plan ids (duplicate guard)
APPLY_REFUSAL_KEY = state_key("apply-layer:last-refusal")  # why the last approval was refused
EXIT_BRAIN_KEY = state_key("exit-brain")
EXIT_REQUESTS_KEY = state_key("exit-brain:requests")  # operators' forced exits, pending
AI_ENGINE_KEY = state_key("ai-engine")
REPLAY_KEY = state_key("replay")
FLEET_KEY = state_key("fleet")  # quantum.risk.fleetstate: the fleet epoch (quantumctl init)
ESS_KEY = state_key("ess")  # quantum.risk.ess: written by evaluators and operators
ESS_AUDIT_KEY = state_key("ess:audit")
POLICY_KEY = state_key("policy")  # quantum.risk.policy: written by operators
JOURNAL_KEY = state_key("journal")  # the journal's health (database reachable, rows)
POLICY_HISTORY_KEY = state_key("policy:history")
RECONCILE_KEY = state_key("reconcile")  # open differences between exchange and book
CLM_KEY = state_key("clm")  # retraining schedule, running job, shadow test in progress
RL_SIZING_KEY = state_key("intent-bridge:rl")  # RL agent health; per-plan records under it
RL_FEEDBACK_KEY = state_key("rl-feedback")  # rolling returns of the reward, totals
RL_TRAINER_KEY = state_key("rl-trainer")  # rewards since the last run, schedule, last result
UNIVERSE_KEY = state_key("universe")  # the selection in force (governor, market-publisher)
UNIVERSE_RANKING_KEY = state_key("universe:ranking")  # every candidate, its figures, reasons
META_REGIME_KEY = state_key("meta-regime")  # current regimes and the calls' scorecards
LEDGER_KEY = state_key("ledger")  # the last comparison with the venue, open differences

SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        name="market-publisher",
        module="services.market_publisher",
        settings="services.market_publisher.config:Settings",
        description="Publishes klines and ticks from Binance futures (live) or data files (replay)",
        produces=(s.MARKET_KLINES, s.MARKET_TICK),
        state_keys=(REPLAY_KEY,),
        port=9101,
        loopback_only=False,
    ),
    ServiceSpec(
        name="feature-publisher",
        module="services.feature_publisher",
        settings="services.feature_publisher.config:Settings",
        description="Computes the unified feature vector for every closed bar",
        # other venues and ticks first: what a bar's extras and funding read comes before
        # its kline (quantum.features.crossvenue uses only what is at or before the close)
        consumes=(s.EXCHANGE_NORMALIZED, s.MARKET_TICK, s.MARKET_KLINES),
        produces=(s.FEATURES,),
        port=9102,
    ),
    ServiceSpec(
        name="ai-engine",
        module="services.ai_engine",
        settings="services.ai_engine.config:Settings",
        description="Predicts direction from features; emits signals, decisions and intents",
        consumes=(s.FEATURES, s.POLICY_UPDATED),
        produces=(s.AI_SIGNAL, s.AI_DECISION, s.TRADE_INTENT, s.AI_SUPERVISOR),
        state_keys=(AI_ENGINE_KEY,),
        port=9103,
        memory_max="2G",
    ),
    ServiceSpec(
        name="intent-bridge",
        module="services.intent_bridge",
        settings="services.intent_bridge.config:Settings",
        description="Sizes an intent into a plan with leverage and an exit plan",
        consumes=(s.TRADE_INTENT, s.SIZING_POLICY),
        produces=(s.APPLY_PLAN,),
        inspects=(s.FEATURES,),
        state_keys=(RL_SIZING_KEY,),
        port=9104,
    ),
    ServiceSpec(
        name="risk-governor",
        module="services.risk_governor",
        settings="services.risk_governor.config:Settings",
        description="Approves or rejects plans against the risk policy; runs the emergency stop",
        consumes=(s.MARKET_KLINES, s.APPLY_PLAN, s.EXECUTION_RESULT),
        produces=(s.RISK_DECISION, s.RISK_EVENTS),
        inspects=(s.MARKET_TICK,),
        state_keys=(GOVERNOR_KEY, ESS_KEY, ESS_AUDIT_KEY, POLICY_KEY, POLICY_HISTORY_KEY,
                    FLEET_KEY),
        port=9105,
    ),
    ServiceSpec(
        name="apply-layer",
        module="services.apply_layer",
        settings="services.apply_layer.config:Settings",
        description="The only path to entry orders: fresh approval, live governor, no duplicates",
        consumes=(s.RISK_DECISION,),
        produces=(s.APPLY_RESULT,),
        state_keys=(APPLY_KEY, APPLY_REFUSAL_KEY),
        port=9106,
    ),
    ServiceSpec(
        name="execution",
        module="services.execution",
        settings="services.execution.config:Settings",
        description="Places orders on the exchange (paper or Binance futures); owns positions",
        consumes=(s.APPLY_RESULT, s.HARVEST_INTENT, s.MARKET_TICK, s.RECONCILE_EVENTS),
        produces=(s.EXECUTION_RESULT, s.TRADE_CLOSED, s.PORTFOLIO_STATE),
        state_keys=(EXECUTION_KEY, PORTFOLIO_KEY, EXECUTION_INCOME_KEY),
        port=9107,
        loopback_only=False,
    ),
    ServiceSpec(
        name="exit-brain",
        module="services.exit_brain",
        settings="services.exit_brain.config:Settings",
        description="Follows open positions; emits reduce-only exits (SL, TP ladder, trailing)",
        consumes=(s.MARKET_TICK, s.EXECUTION_RESULT, s.RISK_EVENTS),
        produces=(s.HARVEST_INTENT,),
        state_keys=(EXIT_BRAIN_KEY, EXIT_REQUESTS_KEY),
        port=9108,
    ),
    ServiceSpec(
        name="journal",
        module="services.journal",
        settings="services.journal.config:Settings",
        description="Writes the SQL trade journal (signals, risk, orders, fills, trades, models)",
        consumes=(s.AI_SIGNAL, s.AI_DECISION, s.RISK_DECISION, s.RISK_EVENTS, s.APPLY_RESULT,
                  s.EXECUTION_RESULT, s.TRADE_CLOSED, s.PORTFOLIO_STATE, s.LEARNING_EVENTS,
                  s.AI_SUPERVISOR, s.UNIVERSE_UPDATED),
        state_keys=(JOURNAL_KEY,),
        port=9109,
        required=False,
        replay=False,
    ),
    ServiceSpec(
        name="dashboard-api",
        module="services.dashboard_api",
        settings="services.dashboard_api.config:Settings",
        description="REST, WebSocket and web dashboard over the journal and live state; /metrics",
        port=8080,
        required=False,
        replay=False,
        placement="both",  # reads state and serves it: both hosts may answer
    ),
    ServiceSpec(
        name="reconcile",
        module="services.reconcile",
        settings="services.reconcile.config:Settings",
        description="Compares exchange positions and orders with the book; fixes and reports drift",
        consumes=(s.EXECUTION_RESULT,),
        produces=(s.RECONCILE_EVENTS,),
        state_keys=(RECONCILE_KEY,),
        port=9110,
        required=False,
        loopback_only=False,
        replay=False,
    ),
    ServiceSpec(
        name="clm",
        module="services.clm",
        settings="services.clm.config:Settings",
        description="Retrains the ensemble on schedule, shadow-tests it, promotes or rolls back",
        consumes=(s.FEATURES,),
        produces=(s.POLICY_UPDATED, s.LEARNING_EVENTS),
        state_keys=(CLM_KEY,),
        port=9111,
        required=False,
        memory_max="3G",
        replay=False,
    ),
    ServiceSpec(
        name="rl-feedback",
        module="services.rl_feedback",
        settings="services.rl_feedback.config:Settings",
        description="Turns closed trades into RL rewards with the observation at entry",
        consumes=(s.TRADE_CLOSED,),
        produces=(s.RL_REWARDS,),
        state_keys=(RL_FEEDBACK_KEY,),
        port=9112,
        required=False,
    ),
    ServiceSpec(
        name="rl-trainer",
        module="services.rl_trainer",
        settings="services.rl_trainer.config:Settings",
        description="Retrains the PPO sizing policy; promotes it only when it beats fixed sizing",
        consumes=(s.RL_REWARDS,),
        produces=(s.SIZING_POLICY,),
        state_keys=(RL_TRAINER_KEY,),
        port=9113,
        required=False,
        memory_max="2G",
        replay=False,
    ),
    ServiceSpec(
        name="universe",
        module="services.universe",
        settings="services.universe.config:Settings",
        description="Ranks the tradable symbols and publishes the universe the fleet may trade",
        # closed bars (the fleet's own history) and its realised results per symbol
        consumes=(s.MARKET_KLINES, s.TRADE_CLOSED),
        produces=(s.UNIVERSE_UPDATED,),
        state_keys=(UNIVERSE_KEY, UNIVERSE_RANKING_KEY),
        port=9114,
        # the selection lives on in its key: a universe service that is down freezes the
        # universe (nothing is added), it does not open it, so trading need not stop
        required=False,
        loopback_only=False,  # the exchange's listing and 24 h statistics (live)
    ),
    ServiceSpec(
        name="meta-regime",
        module="services.meta_regime",
        settings="services.meta_regime.config:Settings",
        description="Classifies trend and volatility per symbol and market; scores its calls",
        consumes=(s.MARKET_KLINES,),
        produces=(s.META_REGIME,),
        state_keys=(META_REGIME_KEY,),
        port=9115,
        required=False,
    ),
    ServiceSpec(
        name="cross-exchange-aggregator",
        module="services.cross_exchange_aggregator",
        settings="services.cross_exchange_aggregator.config:Settings",
        description="Publishes Bybit and Coinbase public market data (off unless QT_VENUES is set)",
        # unusable venue frames go to the dead-letter stream (quantum.crossexchange.sink)
        produces=(s.EXCHANGE_NORMALIZED,),
        port=9116,
        required=False,
        loopback_only=False,
        replay=False,
    ),
    ServiceSpec(
        name="ledger",
        module="services.ledger",
        settings="services.ledger.config:Settings",
        description="Compares the venue's income history (PnL, fees, funding) with the journal",
        consumes=(s.TRADE_CLOSED,),
        produces=(s.LEDGER_EVENTS,),
        state_keys=(LEDGER_KEY,),
        port=9118,
        required=False,
        loopback_only=False,
        replay=False,
    ),
)

BY_NAME: dict[str, ServiceSpec] = {spec.name: spec for spec in SERVICES}


def service(name: str) -> ServiceSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        known = ", ".join(BY_NAME)
        raise KeyError(f"unknown service {name!r}; the registry has: {known}") from None


def producers(services: Sequence[ServiceSpec] = SERVICES) -> dict[str, str]:
    """Stream name → its one producer; ValueError when two services produce one stream."""
    out: dict[str, str] = {}
    for spec in services:
        for stream in spec.produces:
            if stream.name in out:
                raise ValueError(
                    f"stream {stream.name} has two producers: {out[stream.name]}, {spec.name}"
                )
            out[stream.name] = spec.name
    return out


def consumer_groups(services: Sequence[ServiceSpec] = SERVICES) -> dict[str, tuple[str, ...]]:
    """Stream name → the consumer groups declared on it, in registry order."""
    out: dict[str, list[str]] = {}
    for spec in services:
        for stream in spec.consumes:
            out.setdefault(stream.name, []).append(spec.group)
    return {k: tuple(v) for k, v in out.items()}


def replay_barrier_pairs() -> list[tuple[str, str]]:
    """Every (stream key, group) the replay barrier waits on: all groups of replay services."""
    return [
        (stream.key, spec.group)
        for spec in SERVICES
        if spec.replay
        for stream in spec.consumes
    ]


# meta-regime and universe settle too: sizing and risk read a bar's regime and selection
# from their state keys
SETTLEMENT_SERVICES = ("execution", "exit-brain", "meta-regime", "universe")


def settlement_pairs() -> list[tuple[str, str]]:
    """The groups that settle a bar (fills, funding, exits, its regime): in a replay, sizing
    and risk wait until these are quiescent before acting on that bar's intents."""
    return [
        (stream.key, spec.group)
        for spec in SERVICES
        if spec.name in SETTLEMENT_SERVICES
        for stream in spec.consumes
    ]


def version_key(spec: ServiceSpec) -> str | None:
    """The version counter of a service's state (under its first state key, so it is owned
    with it): its runner commits only against the version it restored."""
    return f"{spec.state_keys[0]}:version" if spec.state_keys else None


def factory(spec: ServiceSpec) -> Any:
    """The service's ``build(settings, ports)`` (``<module>.service:build``): how the bus
    and the in-process engine construct the same handlers."""
    return importlib.import_module(f"{spec.module}.service").build


def settings_class(spec: ServiceSpec) -> Any:
    """Import the service's settings class (``module:Class``)."""
    module, _, name = spec.settings.partition(":")
    return getattr(importlib.import_module(module), name)


def all_setting_keys() -> set[str]:
    """Every ``QT_*`` key any service reads: the allow-list for shared environments.

    A service whose settings cannot be imported contributes no keys (the registry tests
    fail on it); it must not stop every other service from starting.
    """
    from quantum.config import keys_of

    classes = []
    for spec in SERVICES:
        try:
            classes.append(settings_class(spec))
        except (ImportError, AttributeError):
            continue
    return keys_of(*classes)


TIMERS_KEY = state_key("timers")  # hash: timer name → its last result (quantum.ctl.timers)


@dataclass(frozen=True)
class TimerSpec:
    """One periodic job: a systemd timer and the oneshot service it starts.

    The service runs ``python -m quantum.ctl timer run <name>``, which does the job, logs one
    JSON result line and, on success, records the time under :data:`TIMERS_KEY`; the
    dashboard exports it as ``quantum_timer_last_success_timestamp_seconds{timer=…}`` and
    an alert fires when it is older than twice ``period_seconds``.

    Attributes:
        name: the job's name (``quantum-<name>.timer``, ``quantum-<name>.service``).
        description: what the job checks or does.
        on_calendar: systemd ``OnCalendar=``.
        period_seconds: the interval ``on_calendar`` means (the alert waits twice this).
        env_files: service env files read after ``common.env`` (optional ones).
    """

    name: str
    description: str
    on_calendar: str
    period_seconds: int
    env_files: tuple[str, ...] = ()

    @property
    def timer(self) -> str:
        return f"quantum-{self.name}.timer"

    @property
    def unit(self) -> str:
        return f"quantum-{self.name}.service"


# Reconcile has no periodic job: the reconcile service compares continuously.
TIMERS: tuple[TimerSpec, ...] = (
    TimerSpec(name="verify", description="quantumctl verify: Redis and systemd against the "
              "registry", on_calendar="*:0/15", period_seconds=900),
    TimerSpec(name="ensemble-health", description="the active ensemble loads and its files "
              "match their checksums", on_calendar="hourly", period_seconds=3600,
              env_files=("ai-engine.env",)),
    TimerSpec(name="rl-health", description="the active RL sizing policy loads",
              on_calendar="hourly", period_seconds=3600, env_files=("rl-trainer.env",)),
    TimerSpec(name="backup", description="scripts/backup.sh: journal, models and fleet state",
              on_calendar="*-*-* 03:15:00", period_seconds=86400,
              env_files=("journal.env",)),
)
