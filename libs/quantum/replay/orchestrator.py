"""``quantumctl replay``: run the real fleet over historical data and report.

A backtest here is a fleet run: the same service processes as live, on a Redis of their
own, with the market-publisher reading files instead of Binance, the paper exchange in
execution, and every service on the event clock. Steps:

1. start (or take) an empty Redis — by default a private ``redis-server`` on a free port;
2. start every consuming service under the supervisor and wait until each has its
   heartbeat, its consumer groups and (execution) the initial portfolio;
3. start the market-publisher in replay mode; it steps through the data behind the
   barrier (see :mod:`quantum.market.replay`) and marks the replay done;
4. build the report from the streams, stop everything, write the report.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import redis

from quantum import localredis
from quantum.bus import connection
from quantum.observability.heartbeat import heartbeat_key
from quantum.process.supervisor import Supervisor
from quantum.registry.fleet import PORTFOLIO_KEY, REPLAY_KEY, SERVICES, replay_barrier_pairs
from quantum.replay import report as reporting
from quantum.replay.barrier import Barrier
from quantum.replay.data import (
    DataError,
    SymbolData,
    available_symbols,
    kline_path,
    load_symbol,
)
from quantum.risk import fleetstate, policy

PUBLISHER = "market-publisher"
INITIAL_BALANCE = 10_000.0


@dataclass(frozen=True)
class ReplayRequest:
    data_dir: Path
    symbols: tuple[str, ...]
    start: datetime | None
    end: datetime | None
    speed: float | None  # None = as fast as the fleet drains
    report_path: Path
    redis_url: str | None = None
    initial_balance: float = INITIAL_BALANCE
    log_dir: Path | None = None
    settings: tuple[tuple[str, str], ...] = ()  # extra QT_* settings for every service
    policy: tuple[
        tuple[str, Any], ...
    ] = ()  # policy store overrides, e.g. ("risk.max_leverage", 5)


class ReplayError(RuntimeError):
    """The replay could not run or did not finish; the message says why."""


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


def validate(request: ReplayRequest) -> int:
    """Check the inputs before anything starts; returns the number of klines to replay."""
    return check_inputs(request.data_dir, request.symbols, request.start, request.end)


def check_inputs(
    data_dir: Path, symbols: tuple[str, ...], start: datetime | None, end: datetime | None,
    loaded: dict[str, SymbolData] | None = None,
) -> int:
    """The checks a replay and a backtest share: the directory, the symbols' files, every
    line readable, bars in the range. Returns the number of klines (and fills ``loaded``
    with the data read, when given); raises :class:`ReplayError` saying what is wrong in
    one line."""
    if not data_dir.is_dir():
        raise ReplayError(f"data directory {data_dir} does not exist")
    if not symbols:
        raise ReplayError("no symbols given")
    missing = [s for s in symbols if not kline_path(data_dir, s).exists()]
    if missing:
        have = ", ".join(available_symbols(data_dir)) or "none"
        raise ReplayError(f"no 5m klines for {', '.join(missing)} in {data_dir} (has: {have})")
    start_ms = int(start.timestamp() * 1000) if start else None
    end_ms = int(end.timestamp() * 1000) if end else None
    total = 0
    for symbol in symbols:
        try:
            data = load_symbol(data_dir, symbol, start_ms=start_ms, end_ms=end_ms)
        except DataError as e:
            raise ReplayError(str(e)) from None
        if data.open_time.size == 0:
            raise ReplayError(
                f"{symbol}: no bars between {_iso(start) or 'start'} and {_iso(end) or 'end'}"
            )
        total += int(data.open_time.size)
        if loaded is not None:
            loaded[symbol] = data
    return total


def event_clock_settings(data_dir: Path, symbols: tuple[str, ...], start: datetime | None,
                         end: datetime | None, initial_balance: float) -> dict[str, str]:
    """The settings every service of a replay runs with — the event clock, the replay
    source over these files and this range, the paper wallet — on the fleet and in the
    in-process backtest alike (the parity of the two starts here)."""
    return {
        "QT_CLOCK": "event",
        "QT_SOURCE": "replay",
        "QT_DATA_DIR": str(data_dir.resolve()),
        "QT_SYMBOLS": ",".join(symbols),
        "QT_REPLAY_START": _iso(start),
        "QT_REPLAY_END": _iso(end),
        "QT_INITIAL_BALANCE": repr(initial_balance),
    }


def _service_env(request: ReplayRequest, redis_url: str) -> dict[str, str]:
    env = {
        "QT_REDIS_URL": redis_url,
        "QT_METRICS_PORT": "0",
        "QT_LOG_LEVEL": "warning",
        "QT_CLAIM_IDLE_MS": "2000",
        "QT_REPLAY_SPEED": "max" if request.speed is None else repr(request.speed),
        **event_clock_settings(request.data_dir, request.symbols, request.start, request.end,
                               request.initial_balance),
    }
    env.update(dict(request.settings))
    return env


def _wait_ready(
    client: redis.Redis, supervisor: Supervisor, names: list[str], timeout: float
) -> None:
    barrier = Barrier(client, replay_barrier_pairs())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _raise_if_failed(supervisor)
        beats = all(client.exists(heartbeat_key(n)) for n in names)
        if beats and client.exists(PORTFOLIO_KEY) and not barrier.busy():
            return
        time.sleep(0.05)
    missing = [n for n in names if not client.exists(heartbeat_key(n))]
    raise ReplayError(f"services not ready within {timeout:.0f}s: {', '.join(missing) or 'groups'}")


def _raise_if_failed(supervisor: Supervisor) -> None:
    for status in supervisor.status():
        # A publisher that died is restarted by the supervisor and resumes after the last
        # step on the streams (each step is published in one transaction; see
        # quantum.market.replay); only a service the supervisor gave up on ends the replay.
        if status.gave_up:
            log = supervisor.log_dir / f"{status.name}.log" if supervisor.log_dir else None
            where = f"; its log: {log}" if log is not None else ""
            raise ReplayError(
                f"{status.name} failed (exit {status.last_exit}, {status.restarts} restarts)"
                f"{where}"
            )


def _range(state: dict[str, Any]) -> dict[str, int]:
    """The replayed range, for the report's tables and charts."""
    first, last = state.get("first_open_time"), state.get("last_open_time")
    out = {}
    if first is not None:
        out["start_ms"] = int(first)
    if last is not None:
        out["end_ms"] = int(last) + 300_000 - 1
    return out


def _finished_early(publisher: Supervisor) -> bool:
    """The publisher exited cleanly (asked to stop from outside): it will not be restarted."""
    (status,) = publisher.status()
    return not status.alive and status.last_exit == 0


def run_replay(
    request: ReplayRequest, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    total = validate(request)
    # The logs outlive a failed replay (the one-line error says where); a successful one
    # removes them unless the caller asked for them.
    log_dir = request.log_dir or Path(tempfile.mkdtemp(prefix="quantum-replay-logs-"))
    try:
        result = _run_in_workdir(request, total, progress, log_dir)
    except (RuntimeError, OSError, redis.RedisError) as e:  # ReplayError, BarrierTimeout, …
        message = " ".join(str(e).split()) or type(e).__name__
        if str(log_dir) not in message:
            message += f"; service logs kept in {log_dir}"
        raise ReplayError(message) from None
    except BaseException:  # Ctrl-C: the services were stopped; their logs stay
        print(f"replay interrupted; service logs kept in {log_dir}", file=sys.stderr)
        raise
    if request.log_dir is None:
        shutil.rmtree(log_dir, ignore_errors=True)
    return result


def _run_in_workdir(
    request: ReplayRequest, total: int, progress: Callable[[int, int], None] | None,
    log_dir: Path,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="quantum-replay-") as tmp:
        workdir = Path(tmp)
        server = None
        if request.redis_url is None:
            port = localredis.free_port()
            server = localredis.start(port, workdir / "redis")
            redis_url = f"redis://127.0.0.1:{port}/0"
        else:
            redis_url = request.redis_url
            if not localredis.reachable(redis_url):
                raise ReplayError(f"cannot reach Redis at {redis_url}")
        client = connection.connect(redis_url)
        try:
            if client.keys("quantum:*"):
                raise ReplayError(
                    f"Redis at {redis_url} already holds quantum:* keys; "
                    "replay needs an empty database"
                )
            return _run(request, client, redis_url, log_dir, total, progress)
        finally:
            client.close()
            if server is not None:
                server.terminate()
                server.wait(10)


def _run(
    request: ReplayRequest,
    client: redis.Redis,
    redis_url: str,
    log_dir: Path,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    consumers = [s.name for s in SERVICES if s.replay and s.name != PUBLISHER]
    log_dir.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[3]
    env = _service_env(request, redis_url)
    changes = {"universe.symbols": list(request.symbols), **dict(request.policy)}
    fleetstate.initialise(client, "replay")  # an empty Redis: a new fleet, by definition
    policy.write(client, changes, by="replay", reason="replay universe and overrides")
    fleet = Supervisor(consumers, env=env, workdir=root, log_dir=log_dir, max_restarts=3)
    publisher = Supervisor([PUBLISHER], env=env, workdir=root, log_dir=log_dir, max_restarts=3)
    started = time.perf_counter()
    fleet.start()
    try:
        _wait_ready(client, fleet, consumers, timeout=120)
        wall_start = time.perf_counter()
        publisher.start()
        state: dict[str, Any] = {}
        while True:
            _raise_if_failed(fleet)
            _raise_if_failed(publisher)
            stopped = _finished_early(publisher)  # before the read: it may finish between
            raw = client.get(REPLAY_KEY)
            state = orjson.loads(raw) if raw else {}
            if progress is not None and state:
                progress(int(state.get("klines_done", 0)), total)
            if state.get("status") == "done":
                break
            if stopped:
                raise ReplayError(
                    f"{PUBLISHER} stopped before the end of the data "
                    f"({state.get('klines_done', 0)}/{total} klines)"
                )
            time.sleep(0.1)
        wall_seconds = time.perf_counter() - wall_start
        result = reporting.build(
            client,
            initial_balance=request.initial_balance,
            klines=total,
            wall_seconds=wall_seconds,
            replay_state=state,
        )
        result["setup_seconds"] = wall_start - started
        result.update(engine="replay", symbols=list(request.symbols),
                      data_dir=str(request.data_dir), **_range(state))
    finally:
        publisher.stop()
        fleet.stop()
    request.report_path.parent.mkdir(parents=True, exist_ok=True)
    request.report_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result
