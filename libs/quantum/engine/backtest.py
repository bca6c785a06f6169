"""``quantumctl backtest``: the replay's services, in one process, at backtester speed.

The same handlers as ``quantumctl replay`` (built by each service's registry factory), the
same settings (the replay's event-clock environment plus ``--set``), the same seeded policy
and the same data source; the :class:`~quantum.engine.engine.Engine` delivers in the order
the replay barrier and settlement enforce on the bus. The report has the replay's shape, so
the two can be compared trade for trade (``tests/integration/test_parity.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from quantum.bus.ports import Ports
from quantum.bus.runner import Service
from quantum.config import ConfigError
from quantum.contracts.streams import CATALOGUE, PORTFOLIO_STATE, TRADE_CLOSED, UNIVERSE_UPDATED
from quantum.engine.engine import Engine, EngineError
from quantum.engine.memory import MemoryBus
from quantum.features import stream_tables
from quantum.market.replay import ReplaySource
from quantum.registry.fleet import (
    ESS_KEY,
    FLEET_KEY,
    POLICY_HISTORY_KEY,
    POLICY_KEY,
    PORTFOLIO_KEY,
    SERVICES,
    all_setting_keys,
    factory,
    settings_class,
)
from quantum.replay import report as reporting
from quantum.replay.data import SymbolData
from quantum.replay.orchestrator import (
    INITIAL_BALANCE,
    PUBLISHER,
    ReplayError,
    check_inputs,
    event_clock_settings,
)
from quantum.risk import ess, fleetstate, policy

MODELS = ("baseline", "ensemble", "edge", "momentum")


@dataclass(frozen=True)
class BacktestRequest:
    data_dir: Path
    symbols: tuple[str, ...]
    start: datetime | None
    end: datetime | None
    report_path: Path | None
    model: str = "baseline"  # baseline | momentum | ensemble | edge[:version] | a version
    initial_balance: float = INITIAL_BALANCE
    settings: tuple[tuple[str, str], ...] = ()  # QT_* settings for every service
    policy: tuple[tuple[str, Any], ...] = ()  # policy store overrides


class BacktestError(RuntimeError):
    """The backtest could not run; the message says why in one line."""


def service_settings(request: BacktestRequest) -> dict[str, str]:
    """The settings every service gets: the replay's (event clock, replay source, the data
    and range, the wallet), the model, then the caller's ``--set`` keys."""
    env = event_clock_settings(request.data_dir, request.symbols, request.start, request.end,
                               request.initial_balance)
    kind, _, version = request.model.partition(":")
    if kind in MODELS:  # "edge", "edge:<version>", "ensemble:<version>", "baseline"...
        env["QT_MODEL"] = kind
        if version:
            env["QT_MODEL_VERSION"] = version
    else:  # a bare version is an ensemble's (the registry's original kind)
        env["QT_MODEL"], env["QT_MODEL_VERSION"] = "ensemble", request.model
    env.update(dict(request.settings))
    known = all_setting_keys()
    unknown = sorted(k for k in env if k not in known)
    if unknown:
        raise BacktestError(f"unknown setting {unknown[0]} (no service declares it)")
    return env


def _settings(spec: Any, env: dict[str, str]) -> Any:
    cls = settings_class(spec)
    fields = set(cls.model_fields)
    values = {k.removeprefix("QT_").lower(): v for k, v in env.items()}
    try:
        return cls(**{k: v for k, v in values.items() if k in fields})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "?"
        raise BacktestError(
            f"bad setting QT_{where.upper()}: {first['msg']} (got {first.get('input')!r})"
        ) from None


def seed(bus: MemoryBus, request: BacktestRequest) -> None:
    """What ``quantumctl init`` and the replay's policy write leave in a new Redis."""
    bus.set(FLEET_KEY, fleetstate.Epoch("backtest", 0, "backtest").document())
    bus.set(ESS_KEY, ess.CLEAR.model_dump_json().encode())
    changes = {"universe.symbols": list(request.symbols), **dict(request.policy)}
    try:
        new, entry = policy.compose(policy.Policy(), changes, by="backtest",
                                    reason="backtest universe and overrides")
    except policy.PolicyError as e:
        raise BacktestError(f"bad policy override: {e}") from None
    bus.set(POLICY_KEY, new.model_dump_json().encode())
    bus.lists[POLICY_HISTORY_KEY] = [orjson.dumps(entry)]


def build_engine(request: BacktestRequest, names: Callable[[str], bool] = lambda _: True
                 ) -> Engine:
    """The replay services of the registry that ``names`` accepts (the publisher is the
    engine's own loop)."""
    env = service_settings(request)
    bus = MemoryBus()
    bus.record(TRADE_CLOSED)
    bus.record(PORTFOLIO_STATE)
    bus.record(UNIVERSE_UPDATED)
    seed(bus, request)
    engine = Engine(bus)
    for spec in SERVICES:
        if not spec.replay or spec.name == PUBLISHER or not names(spec.name):
            continue
        engine.add(spec, partial(_construct, factory(spec), _settings(spec, env)))
    return engine


def check_model(engine: Engine) -> None:
    """A backtest whose model did not load has nothing to test: say why, do not run. (The
    fleet's ai-engine keeps running without intents and reports it; a backtest of that would
    be an empty result that looks like an answer.)"""
    ai = engine.get("ai-engine")
    if ai.load_error is not None or ai.predictor is None:
        raise BacktestError(f"the model cannot be served: {ai.load_error or 'none loaded'}")


def _construct(build: Callable[[Any, Ports], Service], settings: Any, ports: Ports) -> Service:
    return build(settings, ports)


def run_backtest(
    request: BacktestRequest, progress: Callable[[int, int], None] | None = None,
    *, processes: int | None = None,
) -> dict[str, Any]:
    """Run the backtest and return (and write, when a path is given) its report.

    With two cores or more the run is a two-stage pipeline (:mod:`quantum.engine.pipeline`):
    the signal stage (features and the model) in a child process, everything that trades in
    this one; with one, every service runs here. Both give the same trades (tested).
    """
    from quantum.engine import pipeline

    loaded: dict[str, SymbolData] = {}
    try:
        total = check_inputs(request.data_dir, request.symbols, request.start, request.end,
                             loaded)
    except ReplayError as e:
        raise BacktestError(str(e)) from None
    started = time.perf_counter()
    source = ReplaySource(request.data_dir, request.symbols, loaded=loaded)
    split = (processes if processes is not None else os.cpu_count() or 1) >= 2
    stage: Any = None
    try:
        if split:
            stage = pipeline.SignalStage.start(request, source)
            engine = build_engine(request, lambda name: name not in pipeline.SIGNAL_SERVICES)
        else:
            engine = build_engine(request)
            check_model(engine)
            publisher = engine.get("feature-publisher")
            for symbol, table in stream_tables(source.data).items():
                publisher.prime(symbol, table)
        if stage is not None:
            stage.wait_ready()
        setup = time.perf_counter() - started
        wall_start = time.perf_counter()
        done = 0
        engine.idle()
        engine.drain()
        clock = time.perf_counter
        for open_time in source.times.tolist():
            began = clock()
            step = source.step(open_time)
            built = clock()
            signals = stage.outputs(open_time) if stage is not None else []
            waited = clock()
            engine.stats.seconds["bars to tick and kline events"] += built - began
            engine.stats.seconds["waiting for the signal stage"] += waited - built
            engine.publish(step.ticks + step.klines + signals)
            engine.drain()
            done += len(step.klines)
            engine.stats.steps += 1
            if progress is not None and engine.stats.steps % 288 == 0:
                progress(done, total)
        engine.publish([(CATALOGUE["market.tick"], source.end_event())])
        engine.drain()
        engine.idle()
        engine.drain()
        finished = stage.finish() if stage is not None else None
    except ConfigError as e:
        raise BacktestError(str(e)) from None
    except (EngineError, pipeline.StageError) as e:
        raise BacktestError(" ".join(str(e).split())) from None
    finally:
        if stage is not None:
            stage.close()
    wall_seconds = time.perf_counter() - wall_start
    if progress is not None:
        progress(done, total)
    result = report(engine, request, total, wall_seconds, int(source.times[0]),
                    int(source.end_event().ts), finished)
    result["setup_seconds"] = setup
    if request.report_path is not None:
        request.report_path.parent.mkdir(parents=True, exist_ok=True)
        request.report_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result


def report(engine: Engine, request: BacktestRequest, klines: int, wall_seconds: float,
           first_ms: int, last_ms: int, stage: Any = None) -> dict[str, Any]:
    bus = engine.bus
    raw = bus.get(PORTFOLIO_KEY)
    counts = {name: (bus.streams[spec.key].added if spec.key in bus.streams else 0)
              for name, spec in CATALOGUE.items()}
    profile = engine.profile()
    if stage is not None:  # the signal stage's streams were counted where they were produced
        counts.update(stage["counts"])
        profile.update(stage["profile"])
    result = reporting.assemble(
        trades=[e.payload.model_dump(mode="json") for e in bus.recorded[TRADE_CLOSED.key]],
        states=[{"ts": e.payload.ts, "equity": e.payload.equity}
                for e in bus.recorded[PORTFOLIO_STATE.key]],
        final=orjson.loads(raw) if raw else None,
        events=counts,
        latency=None,  # one process: no bus between the stages to measure
        initial_balance=request.initial_balance,
        klines=klines,
        wall_seconds=wall_seconds,
        run={"engine": "in-process", "steps": engine.stats.steps,
             "batches": engine.stats.batches, "events_delivered": engine.stats.events,
             "commits": bus.commits, "profile": profile,
             "loop_seconds": {k: round(v, 4) for k, v in engine.stats.seconds.items()},
             "processes": 2 if stage is not None else 1},
        universe=[e.payload.model_dump(mode="json")
                  for e in bus.recorded[UNIVERSE_UPDATED.key]],
    )
    result.update(engine="backtest", symbols=list(request.symbols), model=request.model,
                  data_dir=str(request.data_dir), start_ms=first_ms, end_ms=last_ms)
    return result
