"""A backtest on two cores: the signal stage in a child process, the rest in this one.

The feature-publisher and the ai-engine depend on the bars alone: nothing any other service
does reaches them during a backtest (their only other input, ``policy.updated``, comes from
the CLM, which does not run in replays). So their outputs can be computed ahead of the
trading services without changing a single trade. The child runs those two real services
on an engine of its own (features primed per symbol, model batches as large as the bus
would hand them) and streams, per bar time, what the trading side consumes: the trade
intents, and the feature vectors of the bars they were made on (the RL sizer looks them
up). The parent publishes them with that bar's ticks and klines, where the ai-engine's
commit would have put them, and the engine's delivery order does the rest.

Stream counts and the profile of the two services travel back at the end, so the report
reads exactly as a single-process run's (``tests/integration/test_parity.py`` and
``test_backtest.py`` hold both to the fleet's trades).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import traceback
from collections import defaultdict
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from quantum.contracts.streams import CATALOGUE, FEATURES, TRADE_INTENT
from quantum.features import stream_tables
from quantum.market.replay import ReplaySource
from quantum.replay.data import INTERVAL_MS

if TYPE_CHECKING:
    from quantum.engine.backtest import BacktestRequest

SIGNAL_SERVICES = ("feature-publisher", "ai-engine")
SIGNAL_STREAMS = ("features", "ai.signal_generated", "ai.decision.made", "trade.intent",
                  "ai.supervisor")
CURSOR = "pipeline"  # the stage's own cursor on its bus: what was shipped already
KLINES_PER_CHUNK = 1000


class StageError(RuntimeError):
    """The signal stage failed; names why."""


# libraries whose native thread pools (OpenMP) a forked child inherits locked: a research
# process that trained a LightGBM model in this process must spawn its signal stage
THREADED_NATIVE = ("torch", "lightgbm", "xgboost", "sklearn")


def start_method() -> str:
    """``fork`` (the child inherits the loaded data at no cost) unless this process already
    runs threads of its own — Python's, or torch's and OpenMP's, which a forked child would
    inherit locked — then ``spawn``."""
    if threading.active_count() > 1 or any(m in sys.modules for m in THREADED_NATIVE):
        return "spawn"
    return "fork"


class SignalStage:
    """The parent's handle on the child process."""

    def __init__(self, process: Any, connection: Connection) -> None:
        self.process = process
        self.connection = connection
        self.buffer: dict[int, list[tuple[Any, Any]]] = {}
        self.through = -1  # bar open times up to this one have arrived
        self.final: dict[str, Any] | None = None
        self.ready = False

    def wait_ready(self) -> None:
        """Until the stage has built its services (a model load can take seconds): the
        run's clock starts when both sides can work."""
        while not self.ready and self.final is None:
            self._receive()

    @classmethod
    def start(cls, request: BacktestRequest, source: ReplaySource) -> SignalStage:
        context = multiprocessing.get_context(start_method())
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_stage, args=(request, source, send),  # type: ignore[attr-defined]
                                  name="backtest-signal-stage", daemon=True)
        process.start()
        send.close()
        return cls(process, receive)

    def _receive(self) -> None:
        try:
            kind, body = self.connection.recv()
        except EOFError:
            raise StageError(f"the signal stage ended early (exit {self.process.exitcode})"
                             ) from None
        if kind == "error":
            raise StageError(f"signal stage: {body}")
        if kind == "ready":
            self.ready = True
            return
        if kind == "done":
            self.final = body
            self.through = 2**62
            return
        for open_time, items in body:
            self.buffer[open_time] = [(CATALOGUE[name], envelope) for name, envelope in items]
            self.through = max(self.through, open_time)

    def outputs(self, open_time: int) -> list[tuple[Any, Any]]:
        """What the signal stage published for the bar opening at ``open_time``."""
        while open_time > self.through:
            self._receive()
        return self.buffer.pop(open_time, [])

    def finish(self) -> dict[str, Any]:
        while self.final is None:
            self._receive()
        return self.final

    def close(self) -> None:
        self.connection.close()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def _stage(request: BacktestRequest, source: ReplaySource, connection: Connection) -> None:
    # One compute thread: the parent works on the other core, and OpenMP pools that spin
    # while the cores are taken cost several times what they save (measured: 5x slower).
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    # A spawned child starts with no logging set up: JSON to stderr, warnings and worse, so
    # stdout stays the caller's (a report, a benchmark's JSON document).
    from quantum.observability import logging as qlog

    qlog.configure("backtest-signal-stage", "warning")
    try:
        _run_stage(request, source, connection)
    except BaseException as e:  # noqa: BLE001  (everything goes back to the parent, in a line)
        detail = traceback.format_exception_only(type(e), e)[-1].strip()
        connection.send(("error", detail))
    finally:
        connection.close()


def _run_stage(request: BacktestRequest, source: ReplaySource, connection: Connection) -> None:
    from quantum.engine.backtest import build_engine, check_model

    engine = build_engine(request, lambda name: name in SIGNAL_SERVICES)
    check_model(engine)
    publisher = engine.get("feature-publisher")
    for symbol, table in stream_tables(source.data).items():
        publisher.prime(symbol, table)
    bus = engine.bus
    features, intents = bus.stream(FEATURES), bus.stream(TRADE_INTENT)
    offset = INTERVAL_MS[source.interval] - 1  # a bar's events carry its close time
    per_chunk = max(1, KLINES_PER_CHUNK // max(1, len(source.data)))
    times = source.times.tolist()
    connection.send(("ready", None))
    engine.idle()
    for first in range(0, len(times), per_chunk):
        chunk = times[first:first + per_chunk]
        for open_time in chunk:
            engine.publish(source.step(open_time).klines)
        engine.drain()
        made = intents.take(CURSOR, intents.added)
        wanted = {(e.payload.symbol, e.payload.bar_time) for e in made}
        out: dict[int, list[tuple[str, Any]]] = defaultdict(list)
        for vector in features.take(CURSOR, features.added):
            if (vector.payload.symbol, vector.payload.close_time) in wanted:
                out[vector.ts - offset].append((FEATURES.name, vector))
        for intent in made:
            out[intent.ts - offset].append((TRADE_INTENT.name, intent))
        connection.send(("chunk", sorted(out.items())))
    engine.idle()
    engine.drain()
    counts = {name: bus.streams[CATALOGUE[name].key].added
              if CATALOGUE[name].key in bus.streams else 0 for name in SIGNAL_STREAMS}
    connection.send(("done", {"counts": counts, "profile": engine.profile()}))
