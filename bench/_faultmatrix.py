"""The fault matrix of issue 10, shared by ``bench/faults.py`` and its test.

Each scenario runs the real execution service (paper venue) on the real runner, in a thread,
against a private ``redis-server`` that the scenario restarts, stops, pauses or feeds bad
bytes; orders are the real entry orders on ``apply.result`` and "reaches the venue" means a
fill on ``execution.result``. A scenario returns: whether the service survived (the same
runner thread still handling), orders lost (an order that should have filled and did not),
orders duplicated (a client order id filled twice), valid entries dead-lettered, entries
that should have been refused but filled, and the seconds from the fault's end until the
service handled again.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench import _matrix
from bench._matrix import Outcome, Scenario
from quantum import localredis
from quantum.app import build_runner, build_service
from quantum.bus.envelope import new_envelope
from quantum.bus.runner import Delivered, Runner, publish
from quantum.contracts.events import ExitPlan, OrderRequest, TakeProfit, Tick
from quantum.contracts.streams import APPLY_RESULT, MARKET_TICK
from quantum.registry.fleet import EXECUTION_KEY
from quantum.replay.report import payloads
from quantum.risk import ess, fleetstate
from services.execution.config import Settings

PRICE = 100.0
PATIENCE_S = 60.0


def _symbol(i: int) -> str:
    return f"F{i:03d}USDT"


def _now() -> int:
    return int(time.time() * 1000)


def _order(plan: str, i: int) -> OrderRequest:
    return OrderRequest(
        client_order_id="qt-" + plan, plan_id=plan, symbol=_symbol(i), side="BUY",
        position_side="LONG", quantity=5.0, reference_price=PRICE, leverage=5,
        reduce_only=False, reason="entry", bar_time=_now() - 1_000,
        exit_plan=ExitPlan(profile="DEFAULT", stop_loss=PRICE * 0.9,
                           take_profits=(TakeProfit(price=PRICE * 1.1, fraction=1.0),),
                           atr=1.0),
    )


def _tick(i: int) -> Tick:
    return Tick(symbol=_symbol(i), ts=_now(), open=PRICE, high=PRICE, low=PRICE, close=PRICE,
                source="binance")


class Bench:
    """A private Redis, the execution service on the runner in a thread, and the orders."""

    def __init__(self, work: Path, *, persist: bool) -> None:
        self.work = work
        self.persist = persist
        self.port = localredis.free_port()
        self.server = localredis.start(self.port, work / "redis", persist=persist)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url, socket_timeout=10)
        fleetstate.initialise(self.client, "bench")
        self.sent: list[str] = []
        self.next = 0
        self.runners: list[Runner] = []
        self.threads: list[threading.Thread] = []

    def start_execution(self, instance: str = "0", heartbeat_ttl_s: int = 15) -> Runner:
        settings = Settings(redis_url=self.url, book_record_dir=str(self.work / "book"),
                            block_ms=20, metrics_port=0, instance=instance,
                            claim_idle_ms=300, claim_interval_s=0.1,
                            heartbeat_ttl_s=heartbeat_ttl_s)
        client = redis.Redis.from_url(self.url, socket_timeout=10)
        runner = build_runner("execution", settings, client,
                              build_service("execution", settings, client))
        runner.config.reconnect_initial_s = 0.05
        runner.config.reconnect_max_s = 0.5
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        self.runners.append(runner)
        self.threads.append(thread)
        return runner

    def send_orders(self, n: int) -> list[str]:
        plans = []
        items = []
        for _ in range(n):
            i = self.next
            self.next += 1
            plan = f"bench-{i}"
            plans.append(plan)
            items.append((APPLY_RESULT, new_envelope(_order(plan, i), ts=_now(), source="bench",
                                                     key=plan)))
        publish(self.client, items)
        time.sleep(0.05)  # the orders are queued before their symbols' next tick
        publish(self.client, [(MARKET_TICK, new_envelope(_tick(int(p.split("-")[1])),
                                                         ts=_now(), source="bench", key=p))
                              for p in plans])
        self.sent += plans
        return plans

    def fills(self) -> Counter[str]:
        return Counter(r["plan_id"] for r in payloads(self.client,
                                                      "quantum:stream:execution.result")
                       if r["kind"] == "fill" and not r["reduce_only"])

    def rejects(self, plans: list[str]) -> int:
        return sum(1 for r in payloads(self.client, "quantum:stream:execution.result")
                   if r["kind"] == "reject" and r["plan_id"] in plans)

    def until(self, condition: Callable[[], bool], patience: float = PATIENCE_S) -> bool:
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                if condition():
                    return True
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            time.sleep(0.05)
        return False

    def filled(self, plans: list[str]) -> bool:
        fills = self.fills()
        return all(fills[p] >= 1 for p in plans)

    def restart(self, *, down_s: float = 0.0, persist: bool | None = None) -> None:
        self.server.terminate()
        self.server.wait(20)
        time.sleep(down_s)
        keep = self.persist if persist is None else persist
        self.server = localredis.start(self.port, self.work / "redis", persist=keep)

    def alive(self) -> bool:
        return all(t.is_alive() for t in self.threads)

    def score(self, outcome: Outcome, expected: list[str]) -> Outcome:
        fills = self.fills()
        outcome.orders_lost = sum(1 for p in expected if fills[p] == 0)
        outcome.orders_duplicated = sum(1 for n in fills.values() if n > 1)
        dlq = [fields for _, fields in self.client.xrange("quantum:stream:dlq")]
        outcome.entries_dead_lettered_wrongly = sum(  # a valid order or tick of ours
            1 for d in dlq if b"bench-" in d.get(b"original", b""))
        outcome.survived = self.alive()
        return outcome

    def close(self) -> None:
        for runner in self.runners:
            runner.request_stop()
        for thread in self.threads:
            thread.join(10)
        self.server.terminate()
        self.server.wait(20)


def _recovered(bench: Bench, since: float, plans: list[str]) -> float | None:
    return round(time.monotonic() - since, 2) if bench.until(lambda: bench.filled(plans)) \
        else None


def restart_empty(work: Path, quick: bool) -> Outcome:
    """Redis restarted without persistence while a position is open and the ESS tripped."""
    out = Outcome("redis restarted empty (no persistence)")
    bench = Bench(work, persist=False)
    try:
        bench.start_execution()
        before = bench.send_orders(3)
        bench.until(lambda: bench.filled(before))
        bench.until(lambda: bench.client.exists(EXECUTION_KEY) == 1)
        ess.trip(bench.client, "bench drill", by="bench")
        bench.restart(down_s=0.5)
        started = time.monotonic()
        bench.until(lambda: ess.status(bench.client).reason.startswith("state_lost"))
        out.seconds_to_recover = round(time.monotonic() - started, 2)
        after = bench.send_orders(2)
        bench.until(lambda: bench.rejects(after) == len(after))
        out.refused_entries_filled = sum(1 for p in after if bench.fills()[p])
        state = ess.status(bench.client)
        books = [r for r in payloads(bench.client, "quantum:stream:execution.result")
                 if r["kind"] == "book"]
        out.notes.append(f"ESS after restart: tripped={state.tripped} ({state.reason[:40]})")
        out.notes.append("book: " + (books[-1]["reason"] if books else "no report"))
        rebuilt = bench.client.get(EXECUTION_KEY)
        has_positions = rebuilt is not None and b"F000" in rebuilt
        out.notes.append(f"book rebuilt with positions: {has_positions}")
        out.survived = bench.alive()
        fills = bench.fills()
        out.orders_duplicated = sum(1 for n in fills.values() if n > 1)
    finally:
        bench.close()
    return out


def _outage(work: Path, name: str, fault: Callable[[Bench], None]) -> Outcome:
    """Orders before a fault of the bus and after it: each must fill exactly once."""
    out = Outcome(name)
    bench = Bench(work, persist=True)
    try:
        bench.start_execution()
        before = bench.send_orders(3)
        bench.until(lambda: bench.filled(before))
        time.sleep(1.2)  # appendfsync everysec: what a restart may keep is on disk
        fault(bench)
        started = time.monotonic()
        after = bench.send_orders(3)
        out.seconds_to_recover = _recovered(bench, started, after)
        state = ess.status(bench.client)
        out.notes.append(f"ESS afterwards: tripped={state.tripped}")
        bench.score(out, before + after)
    finally:
        bench.close()
    return out


def restart_persistent(work: Path, quick: bool) -> Outcome:
    """Redis restarted with the shipped AOF configuration: nothing may be lost."""
    return _outage(work, "redis restarted with AOF (deploy/redis/redis.conf)",
                   lambda bench: bench.restart(down_s=0.5))


def redis_down(work: Path, quick: bool) -> Outcome:
    seconds = 5.0 if quick else 20.0
    return _outage(work, f"redis down {seconds:.0f} s (AOF)",
                   lambda bench: bench.restart(down_s=seconds))


def client_pause(work: Path, quick: bool) -> Outcome:
    millis = 5_000 if quick else 20_000

    def pause(bench: Bench) -> None:
        redis.Redis(port=bench.port).execute_command("CLIENT", "PAUSE", millis)
        time.sleep(millis / 1000)

    return _outage(work, f"CLIENT PAUSE {millis}", pause)


def poison(work: Path, quick: bool) -> Outcome:
    out = Outcome("malformed entries between orders")
    bench = Bench(work, persist=False)
    try:
        bench.start_execution()
        pipe = bench.client.pipeline(transaction=False)
        junk = [{b"id": b"\xff\xfe", b"type": b"order.request", b"payload": b"{"},
                {b"source": b"\xc3\x28", b"ts": b"x"}, {b"\x00": b"\xff"}]
        for fields in junk * 5:
            pipe.xadd(APPLY_RESULT.key, fields)
        pipe.execute()
        started = time.monotonic()
        plans = bench.send_orders(10)
        bench.client.xadd(APPLY_RESULT.key, junk[0])
        out.seconds_to_recover = _recovered(bench, started, plans)
        bench.score(out, plans)
        out.notes.append(f"dead-lettered: {bench.client.xlen('quantum:stream:dlq')} of 16 bad")
    finally:
        bench.close()
    return out


def two_instances(work: Path, quick: bool) -> Outcome:
    """Instance 0 (active: it holds the lease) reads an order and stalls past its lease's
    TTL; instance 1 takes the lease over, claims the order and fills it; instance 0's
    commit is then refused."""
    out = Outcome("two instances, the active one paused past its lease")
    ttl_s = 3
    bench = Bench(work, persist=False)
    try:
        stalled = redis.Redis.from_url(bench.url)
        from quantum.app import build_runner as _build

        settings = Settings(redis_url=bench.url, book_record_dir=str(work / "book0"),
                            block_ms=20, metrics_port=0, instance="0", heartbeat_ttl_s=ttl_s)
        first = _build("execution", settings, stalled,
                       build_service("execution", settings, stalled))
        first.start()
        plans = bench.send_orders(1)
        response = stalled.xreadgroup("execution", first.consumer,
                                      {APPLY_RESULT.key: ">", MARKET_TICK.key: ">"}, count=10)
        batch = [Delivered(s.decode(), e.decode(), f) for s, entries in response
                 for e, f in entries]
        started = time.monotonic()
        bench.start_execution("1", ttl_s)  # takes the lease over, claims and fills
        out.seconds_to_recover = _recovered(bench, started, plans)
        first.process(batch)  # the paused instance wakes and tries to commit the same order
        time.sleep(0.3)
        out.notes.append(f"instance 0 commits refused: {dict(first.refusals)}")
        bench.score(out, plans)
    finally:
        bench.close()
    return out


def ess_trip_queued(work: Path, quick: bool) -> Outcome:
    out = Outcome("ESS trips while an approved entry is queued")
    bench = Bench(work, persist=False)
    try:
        ess.trip(bench.client, "bench drill", by="bench")  # before execution reads the queue
        plans = bench.send_orders(3)
        bench.start_execution()
        started = time.monotonic()
        bench.until(lambda: bench.rejects(plans) == len(plans))
        out.seconds_to_recover = round(time.monotonic() - started, 2)
        out.refused_entries_filled = sum(1 for p in plans if bench.fills()[p])
        out.survived = bench.alive()
    finally:
        bench.close()
    return out


SCENARIOS: tuple[Scenario, ...] = (
    restart_empty, restart_persistent, redis_down, client_pause, poison, two_instances,
    ess_trip_queued,
)


def run_matrix(quick: bool) -> list[dict[str, Any]]:
    return _matrix.run_matrix(SCENARIOS, quick, "quantum-faults-")
