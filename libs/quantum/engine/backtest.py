"""``quantumctl backtest``: the replay's services, in one process, at backtester speed.

The same handlers as ``quantumctl replay`` (built by each service's registry factory), the
same settings (the replay's event-clock environment plus ``--set``), the same seeded policy
and the same data source; the :class:`~quantum.engine.engine.Engine` delivers in the order
the replay barrier and settlement enforce on the bus. The report has the replay's shape, so
the two can be compared trade for trade (``tests/integration/test_parity.py``).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
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
from quantum.contracts.streams import CATALOGUE, PORTFOLIO_STATE, TRADE_CLOSED
from quantum.engine.engine import Engine, EngineError
from quantum.engine.memory import MemoryBus
from quantum.features import stream_table
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
from quantum.replay.orchestrator import INITIAL_BALANCE, PUBLISHER, ReplayError, check_inputs
from quantum.risk import ess, policy

MODELS = ("baseline", "ensemble")


@dataclass(frozen=True)
class BacktestRequest:
    data_dir: Path
    symbols: tuple[str, ...]
    start: datetime | None
    end: datetime | None
    report_path: Path | None
    model: str = "baseline"  # baseline | ensemble | an ensemble version
    initial_balance: float = INITIAL_BALANCE
    settings: tuple[tuple[str, str], ...] = ()  # QT_* settings for every service
    policy: tuple[tuple[str, Any], ...] = ()  # policy store overrides


class BacktestError(RuntimeError):
    """The backtest could not run; the message says why in one line."""


def service_settings(request: BacktestRequest) -> dict[str, str]:
    """The environment every service gets: the replay's (event clock, replay source, the
    data and range), the model, then the caller's ``--set`` keys."""
    env = {
        "QT_CLOCK": "event",
        "QT_SOURCE": "replay",
        "QT_DATA_DIR": str(request.data_dir.resolve()),
        "QT_SYMBOLS": ",".join(request.symbols),
        "QT_INITIAL_BALANCE": repr(request.initial_balance),
        "QT_CLAIM_IDLE_MS": "2000",
    }
    if request.model in MODELS:
        env["QT_MODEL"] = request.model
    else:
        env["QT_MODEL"], env["QT_MODEL_VERSION"] = "ensemble", request.model
    env.update(dict(request.settings))
    known = all_setting_keys()
    unknown = sorted(k for k in env if k not in known)
    if unknown:
        raise BacktestError(f"unknown setting {unknown[0]} (no service declares it)")
    return env


def _settings(spec: Any, env: dict[str, str]) -> Any:
    cls = settings_class(spec)
    fields = {name for name in cls.model_fields}
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
    bus.set(FLEET_KEY, {"epoch": "backtest", "created_at": 0, "by": "backtest",
                        "after_loss": False})
    bus.set(ESS_KEY, ess.CLEAR.model_dump_json().encode())
    changes = {"universe.symbols": list(request.symbols), **dict(request.policy)}
    try:
        new, entry = policy.compose(policy.Policy(), changes, by="backtest",
                                    reason="backtest universe and overrides")
    except policy.PolicyError as e:
        raise BacktestError(f"bad policy override: {e}") from None
    bus.set(POLICY_KEY, new.model_dump_json().encode())
    bus.lists[POLICY_HISTORY_KEY] = [orjson.dumps(entry)]


def build_engine(request: BacktestRequest) -> Engine:
    """Every replay service of the registry (the publisher is the engine's own loop)."""
    env = service_settings(request)
    bus = MemoryBus()
    bus.record(TRADE_CLOSED)
    bus.record(PORTFOLIO_STATE)
    seed(bus, request)
    engine = Engine(bus)
    for spec in SERVICES:
        if not spec.replay or spec.name == PUBLISHER:
            continue
        engine.add(spec, partial(_construct, factory(spec), _settings(spec, env)))
    return engine


def _construct(build: Callable[[Any, Ports], Service], settings: Any, ports: Ports) -> Service:
    return build(settings, ports)


def run_backtest(
    request: BacktestRequest, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Run the backtest and return (and write, when a path is given) its report."""
    loaded: dict[str, SymbolData] = {}
    try:
        total = check_inputs(request.data_dir, request.symbols, request.start, request.end,
                             loaded)
    except ReplayError as e:
        raise BacktestError(str(e)) from None
    started = time.perf_counter()
    source = ReplaySource(request.data_dir, request.symbols, loaded=loaded)
    with feature_tables(source) as tables:  # computed in parallel while the fleet is built
        try:
            engine = build_engine(request)
        except ConfigError as e:
            raise BacktestError(str(e)) from None
        publisher = engine.get("feature-publisher")
        for symbol, table in tables():
            publisher.prime(symbol, table)
    setup = time.perf_counter() - started
    wall_start = time.perf_counter()
    done = 0
    try:
        engine.idle()
        engine.drain()
        for open_time in source.times.tolist():
            step = source.step(open_time)
            engine.publish(step.ticks + step.klines)
            engine.drain()
            done += len(step.klines)
            engine.stats.steps += 1
            if progress is not None and engine.stats.steps % 288 == 0:
                progress(done, total)
        engine.publish([(CATALOGUE["market.tick"], source.end_event())])
        engine.drain()
        engine.idle()
        engine.drain()
    except EngineError as e:
        raise BacktestError(" ".join(str(e).split())) from None
    wall_seconds = time.perf_counter() - wall_start
    if progress is not None:
        progress(done, total)
    result = report(engine, request, total, wall_seconds, int(source.times[0]),
                    int(source.end_event().ts))
    result["setup_seconds"] = setup
    if request.report_path is not None:
        request.report_path.parent.mkdir(parents=True, exist_ok=True)
        request.report_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result


@contextmanager
def feature_tables(source: ReplaySource) -> Iterator[Callable[[], Iterator[tuple[str, Any]]]]:
    """Each symbol's features through :func:`quantum.features.stream_table`, one symbol per
    worker process (as many as there are cores, up to the symbols), started before the
    services are built so both overlap. With one core or one symbol: in this process."""
    workers = min(len(source.data), os.cpu_count() or 1)
    if workers <= 1:
        yield lambda: ((s, stream_table(d.open_time, d.ohlcv)) for s, d in source.data.items())
        return
    context = multiprocessing.get_context("fork")  # before torch or any thread exists here
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {s: pool.submit(stream_table, d.open_time, d.ohlcv)
                   for s, d in source.data.items()}
        yield lambda: ((s, f.result()) for s, f in futures.items())


def report(engine: Engine, request: BacktestRequest, klines: int, wall_seconds: float,
           first_ms: int, last_ms: int) -> dict[str, Any]:
    bus = engine.bus
    raw = bus.get(PORTFOLIO_KEY)
    counts = {name: (bus.streams[spec.key].added if spec.key in bus.streams else 0)
              for name, spec in CATALOGUE.items()}
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
             "commits": bus.commits, "profile": engine.profile()},
    )
    result.update(engine="backtest", symbols=list(request.symbols), model=request.model,
                  data_dir=str(request.data_dir), start_ms=first_ms, end_ms=last_ms)
    return result
