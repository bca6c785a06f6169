"""The fleet-level fault harness of issue 10, shared by ``bench/faults.py`` and
``tests/integration/test_bus_faults.py``.

Unlike ``bench/_faultmatrix.py`` (one execution service on the runner, in a thread), this
runs the order path as the real fleet does: risk-governor, apply-layer, execution and
exit-brain as separate ``python -m services.…`` processes under
:class:`quantum.process.supervisor.Supervisor`, on a private ``redis-server`` that a scenario
stops, restarts (empty, or with the shipped AOF configuration), pauses with ``CLIENT
PAUSE`` or feeds bad bytes. Orders are driven by publishing what the upstream services
would: approved :class:`RiskDecision` events on ``risk.decision`` (the apply-layer turns
each into one entry order on ``apply.result``) and :class:`Tick` events on ``market.tick``
(the paper venue fills a queued order at the next tick of its symbol). The wall clock is
used (``QT_CLOCK=wall``): the paper book keeps its local durable record only there.

A scenario returns an :class:`Outcome`: whether every process survived (the same pids, no
supervisor restart, and a new order afterwards filled), orders lost (an order that should
have filled and did not), orders duplicated (a plan with more than one entry order on
``apply.result``, or a client order id acked or filled more than once on
``execution.result``), valid entries dead-lettered, entries that should have been refused
but filled, and the seconds from the fault's end (Redis answering again) until a new order
was filled.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import redis

from bench import _matrix
from bench._matrix import Outcome, Scenario
from quantum import localredis
from quantum.bus.envelope import new_envelope
from quantum.bus.lease import Holder, lease_key
from quantum.bus.runner import publish
from quantum.contracts.events import (
    ExitPlan,
    OrderRequest,
    Plan,
    RiskDecision,
    TakeProfit,
    Tick,
)
from quantum.contracts.streams import APPLY_RESULT, MARKET_TICK, RISK_DECISION
from quantum.observability.heartbeat import heartbeat_key, standby_key
from quantum.process.supervisor import Supervisor
from quantum.registry.fleet import PORTFOLIO_KEY, service
from quantum.risk import ess, fleetstate, policy
from services.apply_layer.service import client_order_id

CORE = ("risk-governor", "apply-layer", "execution", "exit-brain")
PRICE = 100.0
MARK = 101.0  # marked above the entry after the fill, so no position is "losing"
DLQ_KEY = "quantum:stream:dlq"
EXECUTION_RESULT_KEY = "quantum:stream:execution.result"
PATIENCE_S = 45.0
SOURCE = "fault-drill"


def now_ms() -> int:
    return int(time.time() * 1000)


def until(condition: Callable[[], Any], patience: float = PATIENCE_S,
          interval: float = 0.05) -> bool:
    """Poll ``condition`` until it is true or ``patience`` seconds passed; Redis errors
    (the server is down or paused) count as "not yet"."""
    deadline = time.monotonic() + patience
    while True:
        try:
            if condition():
                return True
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass
class Instance:
    """One supervised process of the fleet."""

    service: str
    index: str
    supervisor: Supervisor
    label: str  # the name under its supervisor

    @property
    def consumer(self) -> str:
        return f"{self.service}-{self.index}"


class Fleet:
    """A private Redis, the order path as real processes, and the orders sent through it.

    ``instances`` maps a service to how many instances of it run (``QT_INSTANCE`` 0, 1, …;
    each execution instance keeps its own book record directory): one holds the service's
    lease and works, the others stand by (:mod:`quantum.bus.lease`).
    """

    def __init__(self, work: Path, *, persist: bool, services: Sequence[str] = CORE,
                 instances: dict[str, int] | None = None, claim_idle_ms: int = 1000,
                 claim_interval_s: float = 0.3, batch_size: int = 100,
                 heartbeat_ttl_s: int = 60) -> None:
        self.work = work
        self.persist = persist
        self.port = localredis.free_port()
        self.redis_dir = work / "redis"
        self.server: Any = localredis.start(self.port, self.redis_dir, persist=persist)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url, socket_timeout=10,
                                           socket_connect_timeout=2)
        fleetstate.initialise(self.client, "fault-drill")
        policy.write(self.client, {
            # Only the order path runs: the other required services have no heartbeat,
            # which is not the fault under test.
            "risk.ess_heartbeat_grace_seconds": 86_400,
            "risk.ess_close_losing_positions": False,
        }, by="fault-drill", reason="the order path alone")
        self.services = tuple(services)
        counts = {name: 1 for name in self.services} | dict(instances or {})
        self.instances: list[Instance] = []
        self.supervisors: list[Supervisor] = []
        for index in range(max(counts.values())):
            names = [n for n in self.services if counts[n] > index]
            env = {
                "QT_REDIS_URL": self.url,
                "QT_CLOCK": "wall",
                "QT_METRICS_PORT": "0",
                "QT_LOG_LEVEL": "warning",
                "QT_INSTANCE": str(index),
                "QT_BLOCK_MS": "100",
                "QT_BATCH_SIZE": str(batch_size),
                "QT_CLAIM_IDLE_MS": str(claim_idle_ms),
                "QT_CLAIM_INTERVAL_S": str(claim_interval_s),
                # Longer than any outage here: heartbeats kept in the AOF are still alive
                # when Redis is back, so entries in flight are not refused governor_down.
                "QT_HEARTBEAT_TTL_S": str(heartbeat_ttl_s),
                "QT_BOOK_RECORD_DIR": str(work / f"book-{index}"),
            }
            sup = Supervisor(names, env=env, workdir=work / f"run-{index}",
                             log_dir=work / f"logs-{index}", max_restarts=5,
                             backoff_initial=0.2, backoff_max=1.0)
            self.supervisors.append(sup)
            for name in names:
                self.instances.append(Instance(name, str(index), sup, name))
        self.decision_count = 0
        self.sent: list[str] = []  # plan ids sent, in order
        self.started_pids: dict[str, int | None] = {}
        self._seen: dict[str, dict[str, dict[str, Any] | None]] = {}

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, patience: float = 90.0) -> None:
        for sup in self.supervisors:
            sup.start()
        if not until(self.ready, patience):
            raise RuntimeError(f"fleet not ready within {patience:.0f} s: {self.describe()}")
        self.started_pids = self.pids()

    def ready(self) -> bool:
        """Every process is alive, beating and reading its streams (the active instance of
        each service) or standing by (the others); the book is published."""
        if any(pid is None for pid in self.pids().values()):
            return False
        if not all(self.client.exists(heartbeat_key(n)) for n in self.services):
            return False
        if not self.client.exists(PORTFOLIO_KEY):
            return False
        standbys = sum(self.client.hlen(standby_key(n)) for n in self.services)
        return (self.readers() >= len(self.services)
                and standbys >= len(self.instances) - len(self.services))

    def active_index(self, service_name: str) -> int:
        """Which instance of ``service_name`` holds its lease now."""
        raw = self.client.get(lease_key(service_name))
        if raw is None:
            raise RuntimeError(f"no instance of {service_name} holds its lease")
        return int(Holder.parse(raw).consumer.rsplit("-", 1)[1])

    def readers(self) -> int:
        """Connections whose last command was ``XREADGROUP``: one per running runner (a
        consumer shows in ``XINFO CONSUMERS`` only once it was delivered something)."""
        return sum(1 for c in self.client.client_list() if c.get("cmd") == "xreadgroup")

    def pids(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for inst in self.instances:
            status = {s.name: s for s in inst.supervisor.status()}[inst.label]
            out[inst.consumer] = status.pid if status.alive else None
        return out

    def restarts(self) -> int:
        return sum(s.restarts for sup in self.supervisors for s in sup.status())

    def same_processes(self) -> bool:
        """The very processes started first: alive, same pid, never restarted."""
        return self.restarts() == 0 and self.pids() == self.started_pids

    def describe(self) -> str:
        parts = []
        for sup in self.supervisors:
            for s in sup.status():
                parts.append(f"{s.name}(pid={s.pid} alive={s.alive} restarts={s.restarts} "
                             f"exit={s.last_exit})")
        return ", ".join(parts)

    def instance(self, service_name: str, index: int = 0) -> Instance:
        return next(i for i in self.instances
                    if i.service == service_name and i.index == str(index))

    def signal(self, service_name: str, index: int, signum: int) -> None:
        pid = self.pids()[f"{service_name}-{index}"]
        if pid is None:
            raise RuntimeError(f"{service_name}-{index} is not running")
        os.kill(pid, signum)

    def settled(self, key: str) -> bool:
        """Every group on ``key`` has read and acked everything (nothing pending, no lag)."""
        groups = self.client.xinfo_groups(key)
        return bool(groups) and all(int(g.get("pending") or 0) == 0 and not g.get("lag")
                                    for g in groups)

    def refusals(self) -> dict[str, int]:
        """Commits refused (``NOTOWNER``, ``STALE``, ``DUPLICATE``) per consumer, from the
        services' logs."""
        found: dict[str, int] = {}
        for inst in self.instances:
            log = inst.supervisor.log_dir / f"{inst.label}.log" if inst.supervisor.log_dir \
                else None
            if log is None or not log.is_file():
                continue
            for line in log.read_text(errors="replace").splitlines():
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("event", "").startswith(
                        "commit refused"):
                    key = f"{inst.consumer}:{record.get('reason', '?')}"
                    found[key] = found.get(key, 0) + 1
        return found

    def close(self) -> None:
        for inst in self.instances:  # a stopped process cannot act on SIGTERM
            pid = self.pids().get(inst.consumer)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        for sup in self.supervisors:
            try:
                sup.stop(timeout=10)
            except Exception:  # noqa: BLE001  (close everything that can be closed)
                pass
        self.client.close()
        self.stop_redis()

    # --- the bus --------------------------------------------------------------------------

    def stop_redis(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()  # SIGTERM: a durable server writes its AOF first
            self.server.wait(30)
        self.server = None

    def start_redis(self, *, persist: bool | None = None) -> float:
        """Start the server again on the same port; returns the monotonic time it answered."""
        keep = self.persist if persist is None else persist
        self.server = localredis.start(self.port, self.redis_dir, persist=keep)
        self.client.connection_pool.disconnect()
        return time.monotonic()

    def pause_clients(self, millis: int) -> float:
        """``CLIENT PAUSE millis`` (all commands); returns the monotonic time it ended."""
        other = redis.Redis(port=self.port, socket_timeout=5)
        other.execute_command("CLIENT", "PAUSE", millis)
        other.close()
        began = time.monotonic()
        probe = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            # Wait for the pause to run out: a PING blocks until it does.
            until(lambda: time.monotonic() - began >= millis / 1000 - 0.5 and probe.ping(),
                  patience=millis / 1000 + 30, interval=0.1)
        finally:
            probe.close()
        return time.monotonic()

    # --- orders ---------------------------------------------------------------------------

    def new_plans(self, n: int, tag: str) -> list[tuple[str, str]]:
        plans = []
        for _ in range(n):
            i = self.decision_count
            self.decision_count += 1
            plans.append((f"fd{tag}{i:04d}", f"F{i:03d}USDT"))
        return plans

    @staticmethod
    def decision(plan_id: str, symbol: str, bar_time: int) -> RiskDecision:
        plan = Plan(
            plan_id=plan_id, intent_id=plan_id, symbol=symbol, side="LONG", quantity=1.0,
            reference_price=PRICE, notional=PRICE, leverage=5, confidence=0.8,
            size_multiplier=1.0, bar_time=bar_time,
            exit_plan=ExitPlan(profile="DEFAULT", stop_loss=PRICE * 0.9,
                               take_profits=(TakeProfit(price=PRICE * 1.1, fraction=1.0),),
                               atr=1.0),
        )
        return RiskDecision(plan_id=plan_id, approved=True, reasons=(), plan=plan,
                            policy_version=1)

    def decide(self, n: int, tag: str) -> list[str]:
        """Publish ``n`` approved decisions (one symbol each); returns their plan ids."""
        plans = self.new_plans(n, tag)
        ts = now_ms()
        publish(self.client, [
            (RISK_DECISION, new_envelope(self.decision(p, s, ts - 1000), ts=ts, source=SOURCE,
                                         key=p))
            for p, s in plans])
        ids = [p for p, _ in plans]
        self.sent += ids
        return ids

    def direct_order(self, tag: str) -> str:
        """An entry order straight onto ``apply.result`` (past the apply-layer): only
        execution's last gate stands between it and the venue. Returns its plan id."""
        (plan_id, symbol), = self.new_plans(1, tag)
        ts = now_ms()
        order = OrderRequest(
            client_order_id=client_order_id(plan_id), plan_id=plan_id, symbol=symbol,
            side="BUY", position_side="LONG", quantity=1.0, reference_price=PRICE,
            leverage=5, reduce_only=False, reason="entry", bar_time=ts - 1000,
            exit_plan=self.decision(plan_id, symbol, ts).plan.exit_plan,
        )
        publish(self.client, [(APPLY_RESULT, new_envelope(order, ts=ts, source=SOURCE,
                                                          key=plan_id))])
        return plan_id

    @staticmethod
    def symbol_of(plan_id: str) -> str:
        return f"F{int(plan_id[-4:]):03d}USDT"

    def tick(self, plan_ids: Iterable[str], price: float = PRICE) -> None:
        ts = now_ms()
        publish(self.client, [
            (MARKET_TICK, new_envelope(
                Tick(symbol=self.symbol_of(p), ts=ts, open=price, high=price, low=price,
                     close=price, source="binance"),
                ts=ts, source=SOURCE, key=f"{p}:{ts}:{price}"))
            for p in plan_ids])

    # --- what reached where ---------------------------------------------------------------

    def _payloads(self, key: str) -> list[dict[str, Any]]:
        """Every event payload ever seen on ``key``, in order, including entries a Redis
        restarted empty has lost since (they were read before: the harness remembers)."""
        seen = self._seen.setdefault(key, {})
        last = max(seen, key=_order) if seen else None
        for entry_id, fields in self.client.xrange(key):
            eid = _text(entry_id)
            if eid in seen:
                continue
            try:
                payload = orjson.loads(fields[b"payload"])
            except (KeyError, orjson.JSONDecodeError):
                payload = None  # a malformed entry of a poison drill
            # After an empty restart the ids start again: keep both lives apart.
            if last is not None and _order(eid) <= _order(last):
                eid = f"{eid}@{len(seen)}"
            seen[eid] = payload if isinstance(payload, dict) else None
        return [p for p in seen.values() if p is not None and "plan_id" in p
                and ("kind" in p or key == APPLY_RESULT.key)]

    def orders(self) -> Counter[str]:
        """Entry orders per plan id on ``apply.result`` (from the apply-layer)."""
        return Counter(p["plan_id"] for p in self._payloads(APPLY_RESULT.key)
                       if not p.get("reduce_only") and p.get("plan_id", "").startswith("fd"))

    def reports(self, kind: str) -> Counter[str]:
        """Entry reports of ``kind`` per plan id on ``execution.result``."""
        return Counter(p["plan_id"] for p in self._payloads(EXECUTION_RESULT_KEY)
                       if p["kind"] == kind and not p["reduce_only"])

    def rejects(self) -> dict[str, str]:
        return {p["plan_id"]: p["reason"] for p in self._payloads(EXECUTION_RESULT_KEY)
                if p["kind"] == "reject" and not p["reduce_only"]}

    def books(self) -> list[dict[str, Any]]:
        return [p for p in self._payloads(EXECUTION_RESULT_KEY) if p["kind"] == "book"]

    def positions(self) -> list[str]:
        raw = self.client.get(PORTFOLIO_KEY)
        if raw is None:
            return []
        return sorted(p["symbol"] for p in orjson.loads(raw).get("positions", []))

    def record_text(self, index: int = 0) -> str:
        """The paper book's local record(s) of execution instance ``index``, as text."""
        directory = self.work / f"book-{index}"
        if not directory.is_dir():
            return ""
        return "".join(p.read_text(errors="replace")
                       for p in directory.glob("execution-paper-*.json"))

    def acked(self, plans: Sequence[str]) -> bool:
        acks = self.reports("ack")
        return all(acks[p] >= 1 for p in plans)

    def filled(self, plans: Sequence[str]) -> bool:
        fills = self.reports("fill")
        return all(fills[p] >= 1 for p in plans)

    def fill(self, plans: Sequence[str], patience: float = PATIENCE_S) -> bool:
        """Wait for the plans' acks, tick their symbols, wait for their fills, then mark
        them above the entry price. True when all filled."""
        plans = list(plans)
        if not plans:
            return True
        if not until(lambda: self.acked(plans), patience):
            return False
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:  # a tick read before its order would not fill it
            try:
                self.tick([p for p in plans if not self.reports("fill")[p]])
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if until(lambda: self.filled(plans), 2.0):
                self.tick(plans, MARK)
                return True
        return False

    def dead_lettered(self, plans: Iterable[str]) -> int:
        """Dead letters holding one of ``plans`` (valid entries: wrongly dead-lettered)."""
        wanted = [p.encode() for p in plans]
        return sum(1 for _, f in self.client.xrange(DLQ_KEY)
                   if any(w in f.get(b"original", b"") for w in wanted))

    def score(self, out: Outcome, expected: Sequence[str], refused: Sequence[str] = ()) -> Outcome:
        """Fill in lost, duplicated, wrongly dead-lettered and refused-but-filled."""
        fills, acks, orders = self.reports("fill"), self.reports("ack"), self.orders()
        out.orders_lost = sum(1 for p in expected if fills[p] == 0)
        out.orders_duplicated = sum(
            1 for p in set(fills) | set(acks) | set(orders)
            if fills[p] > 1 or acks[p] > 1 or orders[p] > 1)
        out.entries_dead_lettered_wrongly = self.dead_lettered([*expected, *refused])
        out.refused_entries_filled = sum(1 for p in refused if fills[p])
        out.survived = out.survived and self.same_processes()
        if not self.same_processes():
            out.notes.append(f"processes: {self.describe()}")
        return out


def _recover(fleet: Fleet, out: Outcome, since: float, tag: str) -> list[str]:
    """After the fault: wait for the fleet, send new orders, time until they are filled.
    ``survived`` is true when they were (the processes are checked by :meth:`Fleet.score`)."""
    until(fleet.ready)
    plans = fleet.decide(2, tag)
    if fleet.fill(plans):
        out.seconds_to_recover = round(time.monotonic() - since, 2)
        out.survived = True
    out.facts["filled_after"] = fleet.filled(plans)
    return plans


def _unacked(fleet: Fleet, plans: Sequence[str]) -> int:
    acks = fleet.reports("ack")
    return sum(1 for p in plans if not acks[p])


# --- the scenarios ------------------------------------------------------------------------


def restart_empty(work: Path, quick: bool) -> Outcome:
    """Redis restarted without persistence while the ESS is tripped and positions are open:
    the ESS must read tripped, no entry may reach the venue, and execution's paper book
    must be rebuilt from its local record."""
    out = Outcome("redis restarted empty (no persistence), ESS tripped, positions open")
    fleet = Fleet(work, persist=False)
    try:
        fleet.start()
        before = fleet.decide(2, "a")
        if not fleet.fill(before):
            out.notes.append("the first orders did not fill")
            return out
        # The local record is written after the commit that changed the book.
        until(lambda: all(fleet.symbol_of(p) in fleet.record_text() for p in before))
        ess.trip(fleet.client, "fault drill", by=SOURCE)
        fleet.stop_redis()
        since = fleet.start_redis(persist=False)
        lost = until(lambda: ess.status(fleet.client).reason.startswith("state_lost"))
        until(lambda: any(b["book"]["source"] == "rebuilt_from_local_record"
                          for b in fleet.books()))
        until(fleet.ready)
        out.seconds_to_recover = round(time.monotonic() - since, 2)
        state = ess.status(fleet.client)
        books = fleet.books()
        book = books[-1]["book"] if books else None
        after = fleet.decide(1, "b")  # refused by the apply-layer (ESS tripped)
        direct = fleet.direct_order("c")  # past the apply-layer: execution's gate
        until(lambda: direct in fleet.rejects())
        fleet.tick([*after, direct])
        until(partial(fleet.settled, MARKET_TICK.key), 10)
        rejects = fleet.rejects()
        out.facts.update({
            "ess_tripped": state.tripped, "ess_reason": state.reason,
            "state_lost_declared": lost,
            "book_source": book["source"] if book else None,
            "book_positions": list(book["positions"]) if book else [],
            "positions_before": [fleet.symbol_of(p) for p in before],
            "new_approval_became_order": bool(fleet.orders()[after[0]]),
            "direct_order_reject": rejects.get(direct),
            "fills_after_restart": sum(fleet.reports("fill")[p] for p in (*after, direct)),
        })
        out.notes += [f"ESS after restart: tripped, {state.reason[:40]}…" if state.tripped
                      else "ESS after restart: CLEAR",
                      f"book {out.facts['book_source']} with "
                      f"{len(out.facts['book_positions'])} positions",
                      "fresh approval: " + ("ordered" if out.facts["new_approval_became_order"]
                                            else "refused") +
                      f"; direct entry order rejected {out.facts['direct_order_reject']}"]
        fleet.score(out, before, refused=[*after, direct])
        out.survived = (state.tripped and lost and fleet.same_processes() and book is not None
                        and set(out.facts["positions_before"]) <= set(book["positions"]))
    finally:
        fleet.close()
    return out


def restart_persistent(work: Path, quick: bool) -> Outcome:
    """Redis restarted with the shipped AOF configuration (deploy/redis/redis.conf): the
    tripped ESS and the positions are as before; after a reset, trading resumes."""
    out = Outcome("redis restarted with AOF (deploy/redis/redis.conf), ESS tripped")
    fleet = Fleet(work, persist=True)
    try:
        fleet.start()
        before = fleet.decide(2, "a")
        if not fleet.fill(before):
            out.notes.append("the first orders did not fill")
            return out
        ess.trip(fleet.client, "fault drill", by=SOURCE)
        held = fleet.positions()
        fleet.stop_redis()
        since = fleet.start_redis()
        until(fleet.ready)
        state = ess.status(fleet.client)
        out.facts.update({"ess_tripped": state.tripped, "ess_reason": state.reason,
                          "positions_before": held, "positions_after": fleet.positions(),
                          "books_not_fresh": [b["book"]["source"] for b in fleet.books()
                                              if b["book"]["source"] != "fresh"]})
        kept = state.tripped and state.reason == "fault drill" and fleet.positions() == held
        out.notes.append(f"ESS still tripped ({state.reason}), {len(held)} positions kept"
                         if kept else f"LOST: ESS {state} positions {fleet.positions()}")
        ess.reset(fleet.client, "drill over", by=SOURCE)
        after = _recover(fleet, out, since, "b")
        fleet.score(out, before + after)
        out.survived = out.survived and kept
    finally:
        fleet.close()
    return out


def redis_down(work: Path, quick: bool) -> Outcome:
    """Redis stopped (orders in flight) and started again on the same port with AOF."""
    seconds = 5.0 if quick else 20.0
    out = Outcome(f"redis down {seconds:.0f} s (AOF), orders in flight")
    fleet = Fleet(work, persist=True)
    try:
        fleet.start()
        before = fleet.decide(2, "a")
        fleet.fill(before)
        in_flight = fleet.decide(3, "b")  # published just before the server goes
        out.facts["unacked_at_fault"] = _unacked(fleet, in_flight)
        fleet.stop_redis()
        down_until = time.monotonic() + seconds
        until(lambda: time.monotonic() >= down_until, seconds + 1, 0.1)
        out.facts["alive_while_down"] = all(p is not None for p in fleet.pids().values())
        since = fleet.start_redis()
        fleet.fill(in_flight)
        after = _recover(fleet, out, since, "c")
        out.notes.append(f"{out.facts['unacked_at_fault']} of {len(in_flight)} orders not yet "
                         f"acked when Redis went; every process alive while it was down: "
                         f"{out.facts['alive_while_down']}")
        fleet.score(out, before + in_flight + after)
    finally:
        fleet.close()
    return out


def client_pause(work: Path, quick: bool) -> Outcome:
    """``CLIENT PAUSE`` (orders in flight): waited out, not fatal."""
    millis = 5_000 if quick else 20_000
    out = Outcome(f"CLIENT PAUSE {millis}, orders in flight")
    fleet = Fleet(work, persist=True)
    try:
        fleet.start()
        before = fleet.decide(2, "a")
        fleet.fill(before)
        in_flight = fleet.decide(3, "b")
        out.facts["unacked_at_fault"] = _unacked(fleet, in_flight)
        since = fleet.pause_clients(millis)
        fleet.fill(in_flight)
        after = _recover(fleet, out, since, "c")
        out.notes.append(f"{out.facts['unacked_at_fault']} of {len(in_flight)} orders not yet "
                         "acked when the pause began")
        fleet.score(out, before + in_flight + after)
    finally:
        fleet.close()
    return out


POISON = (
    {b"id": b"\xff\xfe", b"type": b"risk.decision", b"payload": b"{"},
    {b"source": b"\xc3\x28", b"ts": b"x", b"type": b"order.request"},
    {b"\x00": b"\xff"},
    {b"type": b"risk.decision", b"id": b"ok", b"ts": b"1", b"source": b"t",
     b"payload": b'{"plan_id": ""}'},
)
POISON_STREAMS = (RISK_DECISION.key, APPLY_RESULT.key, MARKET_TICK.key,
                  "quantum:stream:risk.events", EXECUTION_RESULT_KEY)


def poison(work: Path, quick: bool) -> Outcome:
    """Malformed entries between valid ones on every stream the order path consumes: each
    is dead-lettered by each group reading it; every valid order fills once."""
    out = Outcome("malformed entries between valid orders")
    fleet = Fleet(work, persist=False)
    try:
        fleet.start()
        since = time.monotonic()
        groups = {k: len(fleet.client.xinfo_groups(k)) for k in POISON_STREAMS}
        expected_dead = 0
        plans: list[str] = []
        for round_ in range(3):
            pipe = fleet.client.pipeline(transaction=False)
            for key in POISON_STREAMS:
                for fields in POISON:
                    pipe.xadd(key, fields)
                    expected_dead += groups[key]
            pipe.execute()
            plans += fleet.decide(3, f"p{round_}")
        fleet.fill(plans)
        until(lambda: fleet.client.xlen(DLQ_KEY) >= expected_dead, 15)
        out.facts.update({"dead_letters": fleet.client.xlen(DLQ_KEY),
                          "expected_dead_letters": expected_dead})
        out.notes.append(f"{out.facts['dead_letters']} dead letters for {expected_dead} "
                         f"(bad entry, group) pairs on {len(POISON_STREAMS)} streams")
        after = _recover(fleet, out, since, "q")
        fleet.score(out, plans + after)
    finally:
        fleet.close()
    return out


def _pending_on(fleet: Fleet, key: str, group: str, consumer: str) -> int:
    try:
        rows = fleet.client.xpending_range(key, group, min="-", max="+", count=1000,
                                           consumername=consumer)
    except redis.ResponseError:
        return 0
    return len(rows)


def _refused(fleet: Fleet, consumer: str) -> int:
    found = fleet.refusals()
    return found.get(f"{consumer}:NOTLEADER", 0) + found.get(f"{consumer}:NOTOWNER", 0)


def _none_pending(fleet: Fleet, key: str, group: str, consumer: str) -> bool:
    return _pending_on(fleet, key, group, consumer) == 0


def _stall_holding(fleet: Fleet, service_name: str, active: int, send: Callable[[], list[str]],
                   attempts: int = 4) -> tuple[list[str], int]:
    """Send work and SIGSTOP the active instance the moment it holds entries unacked (read,
    not yet committed); the standby reads nothing meanwhile. Returns the plans sent and how
    many entries the active instance held when it was stopped (0: never caught mid-batch)."""
    spec = service(service_name)
    key = spec.consumes[0].key
    holder = fleet.instance(service_name, active).consumer
    plans: list[str] = []
    for _ in range(attempts):
        held = 0
        plans += send()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            held = _pending_on(fleet, key, spec.group, holder)
            if held:
                fleet.signal(service_name, active, signal.SIGSTOP)
                break
        held = _pending_on(fleet, key, spec.group, holder) if held else 0
        if held:
            return plans, held
        # It committed between the look and the signal (or never read): try again.
        fleet.signal(service_name, active, signal.SIGCONT)
    return plans, 0


def two_instances(work: Path, quick: bool) -> Outcome:
    """Two apply-layers and two executions, one of each active (its lease) and one standing
    by; the active one SIGSTOPped while holding a batch it read, past the lease's TTL (the
    standby takes over, claims and handles the batch), then SIGCONTed: its commit must be
    refused, so each plan has one order and one fill."""
    out = Outcome("two instances of apply-layer and execution, the active one paused past "
                  "its lease")
    ttl_s = 3
    fleet = Fleet(work, persist=False, instances={"apply-layer": 2, "execution": 2},
                  claim_idle_ms=500, claim_interval_s=0.2, heartbeat_ttl_s=ttl_s)
    try:
        fleet.start()
        since = time.monotonic()
        plans: list[str] = []
        paused_consumers: list[str] = []
        for service_name, tag in (("apply-layer", "x"), ("execution", "y")):
            active = fleet.active_index(service_name)
            sent, held = _stall_holding(fleet, service_name, active,
                                        partial(fleet.decide, 60, tag))
            plans += sent
            spec = service(service_name)
            holder = fleet.instance(service_name, active).consumer
            paused_consumers.append(holder)
            paused = time.monotonic()
            # Past the lease's TTL, the standby takes over and claims what the paused holds.
            until(partial(_none_pending, fleet, spec.consumes[0].key, spec.group, holder),
                  ttl_s + 20)
            out.facts[f"{service_name}_held"] = held
            out.facts[f"{service_name}_paused_s"] = round(time.monotonic() - paused, 2)
            out.facts[f"{service_name}_active_after"] = fleet.active_index(service_name)
            fleet.signal(service_name, active, signal.SIGCONT)
        fleet.fill(plans, patience=60)
        after = _recover(fleet, out, since, "z")
        # The resumed instances' commits are refused within a few turns (the lease moved:
        # NOTLEADER; or their entries did: NOTOWNER); on a loaded machine a resumed process
        # may take a while to be scheduled and log it.
        until(lambda: all(_refused(fleet, c) for c in paused_consumers), PATIENCE_S)
        out.facts["paused"] = paused_consumers
        out.facts["refusals"] = fleet.refusals()
        out.facts["plans"] = len(plans)
        out.notes.append(
            f"{paused_consumers[0]} stopped holding {out.facts['apply-layer_held']} entries, "
            f"{paused_consumers[1]} {out.facts['execution_held']}; commits refused: "
            f"{out.facts['refusals']}")
        fleet.score(out, plans + after)
    finally:
        fleet.close()
    return out


def ess_trip_queued(work: Path, quick: bool) -> Outcome:
    """The ESS trips while approved entry orders wait on ``apply.result`` (execution
    SIGSTOPped): execution must reject every one of them."""
    out = Outcome("ESS trips while approved entry orders are queued for execution")
    fleet = Fleet(work, persist=False)
    try:
        fleet.start()
        fleet.signal("execution", 0, signal.SIGSTOP)
        queued = fleet.decide(3, "e")
        until(lambda: all(fleet.orders()[p] for p in queued))  # released by the apply-layer
        ess.trip(fleet.client, "fault drill", by=SOURCE)
        fleet.signal("execution", 0, signal.SIGCONT)
        since = time.monotonic()
        until(lambda: all(p in fleet.rejects() for p in queued))
        fleet.tick(queued)
        until(partial(fleet.settled, MARKET_TICK.key), 10)
        reasons = sorted({fleet.rejects().get(p, "none") for p in queued})
        out.facts["reject_reasons"] = reasons
        out.notes.append(f"all {len(queued)} queued orders rejected: {','.join(reasons)}")
        ess.reset(fleet.client, "drill over", by=SOURCE)
        after = _recover(fleet, out, since, "f")
        fleet.score(out, after, refused=queued)
        out.survived = out.survived and reasons == ["ess_tripped"]
    finally:
        fleet.close()
    return out


SCENARIOS: tuple[Scenario, ...] = (
    restart_empty, restart_persistent, redis_down, client_pause, poison, two_instances,
    ess_trip_queued,
)


def run_matrix(quick: bool) -> list[dict[str, Any]]:
    return _matrix.run_matrix(SCENARIOS, quick, "quantum-fleet-faults-")


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("@")[0].partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
