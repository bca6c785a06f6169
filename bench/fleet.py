"""Fleet throughput: a full replay through the real fleet, and the cost of its determinism.

**Ordered** (what ``quantumctl replay`` does): :func:`quantum.replay.orchestrator.run_replay`
over five symbols of ``data/sample`` at speed ``max``. Every step is published behind the
barrier (the fleet must drain before the next bar), which is what makes a replay give the
same trades at any speed. Reported: klines/s, kline→order latency from the report, the
barrier's own figures and where the wall time went.

**Unordered** (the reference): the same consuming services, started the way the
orchestrator starts them, fed every kline and tick of the same range in large pipelined
batches with no barrier at all, timed until every consumer group has drained. Its outcome
is not a valid backtest (execution sees ticks long before the orders of their bar exist); it
is only the most the fleet can chew through per second, so ordered/unordered is the price
paid for determinism.

Targets from the issue: ≥ 3,000 klines/s over 5 symbols and kline→order p99 < 50 ms.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench._redis import private_redis
from quantum.bus.runner import publish
from quantum.contracts.streams import CATALOGUE, MARKET_TICK
from quantum.market.replay import ReplaySource
from quantum.process.supervisor import Supervisor
from quantum.registry.fleet import SERVICES, replay_barrier_pairs
from quantum.replay.barrier import Barrier
from quantum.replay.orchestrator import (
    PUBLISHER,
    ReplayRequest,
    _raise_if_failed,
    _service_env,
    _wait_ready,
    run_replay,
)
from quantum.replay.report import entries, stream_counts

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SYMBOLS = ("BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
START = datetime(2025, 9, 1, tzinfo=UTC)
PUBLISH_BATCH = 2_000  # events per pipelined call in the unordered run
DRAIN_TIMEOUT_S = 600.0
TARGET_KLINES_PER_SECOND = 3_000
TARGET_P99_MS = 50.0


def request_for(days: int, workdir: Path) -> ReplayRequest:
    """The replay both runs share: five symbols of the bundled sample from 2025-09-01."""
    return ReplayRequest(
        data_dir=SAMPLE, symbols=SYMBOLS, start=START, end=START + timedelta(days=days),
        speed=None, report_path=workdir / "report.json", log_dir=workdir / "logs-ordered",
    )


def hop_latency(client: redis.Redis) -> dict[str, dict[str, float]]:
    """Milliseconds from an event's entry to the entries it caused, per pair of streams.

    Says which hop of the chain a step waits on. Entry ids carry the Redis server's time
    in whole milliseconds, so a hop under 1 ms reads as 0 or 1: read the mean, not only
    the percentiles.
    """
    located: dict[bytes, tuple[str, int]] = {}
    caused: list[tuple[str, int, bytes]] = []
    for name, spec in CATALOGUE.items():
        for entry_id, fields in entries(client, spec.key):
            event_id = fields.get(b"id")
            if event_id is None:  # a dead letter: no envelope of its own
                continue
            moment = int(entry_id.split("-")[0])
            located[event_id] = (name, moment)
            cause = fields.get(b"causation_id")
            if cause:
                caused.append((name, moment, cause))
    samples: dict[str, list[int]] = {}
    for name, moment, cause in caused:
        origin = located.get(cause)
        if origin is not None:
            samples.setdefault(f"{origin[0]} -> {name}", []).append(moment - origin[1])
    figures = {}
    for hop, values in sorted(samples.items()):
        array = np.asarray(values, dtype=float)
        figures[hop] = {"count": int(array.size), "mean_ms": round(float(array.mean()), 3),
                        "p50_ms": float(np.percentile(array, 50)),
                        "p99_ms": float(np.percentile(array, 99))}
    return figures


def ordered(request: ReplayRequest) -> dict[str, Any]:
    """The real ``run_replay`` (every service a process, barrier per step) on a private Redis
    that outlives it, so the streams can be read afterwards for the per-hop latencies."""
    with private_redis() as url:
        started = time.perf_counter()
        report = run_replay(replace(request, redis_url=url))
        total = time.perf_counter() - started
        client = redis.Redis.from_url(url)
        try:
            hops = hop_latency(client)
        finally:
            client.close()
    setup = float(report["setup_seconds"])
    replay = float(report["wall_seconds"])
    barrier = report.get("replay", {})
    inside = float(barrier.get("barrier_seconds", 0.0)) + float(barrier.get("publish_seconds", 0.0))
    latency = report["kline_to_order_latency"]
    steps = int(barrier.get("steps", 0))
    return {
        "klines": report["klines"],
        "klines_per_second": round(report["klines_per_second"], 1),
        "kline_to_order_latency_ms": latency,
        "replay": barrier,
        # Per bar, however many waits the publisher makes in a step: what determinism costs.
        "barrier_ms_per_step": round(float(barrier.get("barrier_seconds", 0.0)) / steps * 1000, 3)
        if steps else 0.0,
        "wall_seconds": {
            "total": round(total, 3),
            "setup (fleet start until every service is ready)": round(setup, 3),
            "replay (publisher start until done)": round(replay, 3),
            "of which barrier waits": round(float(barrier.get("barrier_seconds", 0.0)), 3),
            "of which publishing": round(float(barrier.get("publish_seconds", 0.0)), 3),
            "of which publisher start-up and stepping": round(max(replay - inside, 0.0), 3),
            "other (validate, report, stop)": round(total - setup - replay, 3),
        },
        "hop_latency_ms": hops,
        "trades": report["trades"],
        "events_total": sum(report["events"].values()),
        "events": report["events"],
    }


def unordered(request: ReplayRequest, log_dir: Path) -> dict[str, Any]:
    """The same consumers fed every event at once; timed until every group has drained."""
    start_ms = int(request.start.timestamp() * 1000) if request.start else None
    end_ms = int(request.end.timestamp() * 1000) if request.end else None
    source = ReplaySource(request.data_dir, request.symbols, start_ms=start_ms, end_ms=end_ms,
                          source_name=PUBLISHER)
    consumers = [spec.name for spec in SERVICES if spec.replay and spec.name != PUBLISHER]
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        fleet = Supervisor(consumers, env=_service_env(request, url), workdir=ROOT,
                           log_dir=log_dir, max_restarts=3)
        setup_started = time.perf_counter()
        fleet.start()
        try:
            _wait_ready(client, fleet, consumers, timeout=120)
            setup = time.perf_counter() - setup_started
            barrier = Barrier(client, replay_barrier_pairs())
            started = time.perf_counter()
            pending: list[Any] = []
            for open_time in source.times.tolist():
                step = source.step(open_time)
                pending += step.ticks + step.klines  # in the order the replay publishes a step
                if len(pending) >= PUBLISH_BATCH:
                    publish(client, pending)
                    pending = []
            publish(client, [*pending, (MARKET_TICK, source.end_event())])
            published = time.perf_counter() - started
            checks = 0
            while barrier.first_busy() is not None:
                checks += 1
                _raise_if_failed(fleet)
                if time.perf_counter() - started > DRAIN_TIMEOUT_S:
                    raise TimeoutError(f"fleet did not drain within {DRAIN_TIMEOUT_S:.0f} s")
                time.sleep(0.01)
            drained = time.perf_counter() - started
            events = stream_counts(client)
        finally:
            fleet.stop()
            client.close()
    return {
        "klines": source.total_klines,
        "klines_per_second": round(source.total_klines / drained, 1),
        "wall_seconds": {
            "setup (fleet start until every service is ready)": round(setup, 3),
            "publish (build + pipelined XADD of every event)": round(published, 3),
            "drain (first publish until every group is idle)": round(drained, 3),
        },
        "drain_checks": checks,
        "events_total": sum(events.values()),
        "events": events,
    }


def log_tails(directory: Path, lines: int = 8) -> str:
    """The last lines of the service logs under ``directory``, for an error entry.

    Services that failed the same way share one excerpt, so the reason is read once.
    """
    by_tail: dict[str, list[str]] = {}
    for path in sorted(directory.glob("logs-*/*.log")):
        text = path.read_text(errors="replace").splitlines()
        if text:
            by_tail.setdefault("\n".join(text[-lines:]), []).append(
                f"{path.parent.name}/{path.name}")
    return "\n".join(f"--- {', '.join(names)}\n{tail}" for tail, names in by_tail.items())


def run(quick: bool) -> dict[str, Any]:
    """Ordered replay, then the unordered reference over the same range (3 or 10 days)."""
    days = 3 if quick else 10
    with tempfile.TemporaryDirectory(prefix="quantum-bench-fleet-") as directory:
        workdir = Path(directory)
        request = request_for(days, workdir)
        try:
            with_barrier = ordered(request)
            without_barrier = unordered(request, workdir / "logs-unordered")
        except Exception as e:
            # The logs die with the temporary directory: keep their ends in the error entry.
            raise RuntimeError(f"{type(e).__name__}: {e}\n{log_tails(workdir)}") from e
    ordered_rate = with_barrier["klines_per_second"]
    p99 = float(with_barrier["kline_to_order_latency_ms"].get("p99_ms", 0.0))
    samples = int(with_barrier["kline_to_order_latency_ms"].get("count", 0))
    return {
        "range": {"symbols": list(SYMBOLS), "start": START.isoformat(), "days": days,
                  "data": "data/sample"},
        "ordered": with_barrier,
        "unordered": without_barrier,
        "ordered_to_unordered_ratio": round(ordered_rate / without_barrier["klines_per_second"], 3),
        "targets": {
            "klines_per_second": TARGET_KLINES_PER_SECOND,
            "klines_per_second_met": ordered_rate >= TARGET_KLINES_PER_SECOND,
            "p99_ms": TARGET_P99_MS,
            # No order in the range means no latency sample: unknown, not met.
            "p99_met": samples > 0 and p99 < TARGET_P99_MS,
        },
    }
