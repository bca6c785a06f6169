"""Active and standby instances of one group (:mod:`quantum.bus.lease`): one works, the
other takes over when the active one's lease lapses, with every entry handled exactly once.
Real Redis; the two instances are two runners of the same service."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import redis
from tests.integration.bus.test_bus_poison_and_races import IN, Item, outputs, runner

from quantum.bus.envelope import new_envelope
from quantum.bus.lease import Holder, Lease, lease_key
from quantum.bus.runner import Runner, publish
from quantum.observability.heartbeat import heartbeat_key, standby_key

TTL_S = 2


def pair(r: redis.Redis) -> tuple[Runner, Runner]:
    a = runner(r, lease=True, heartbeat_ttl_s=TTL_S, instance="a")
    b = runner(r, lease=True, heartbeat_ttl_s=TTL_S, instance="b")
    a.start()
    b.start()
    return a, b


def send(r: redis.Redis, values: range) -> None:
    publish(r, [(IN, new_envelope(Item(value=v), ts=v, source="t", key=v)) for v in values])


def turns_until(runners: list[Runner], done: Any, limit_s: float = 20.0) -> float:
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < limit_s, "condition not reached"
        for run in runners:
            run.turn()
    return time.monotonic() - started


def test_one_instance_works_and_the_other_stands_by(r: redis.Redis) -> None:
    a, b = pair(r)
    assert a.active and not b.active
    send(r, range(10))
    turns_until([a, b], lambda: len(outputs(r)) == 10)
    assert sorted(outputs(r)) == list(range(10))
    assert r.xpending(IN.key, "echo")["pending"] == 0
    # Only the active instance writes the heartbeat; the standby is listed beside it.
    assert b"echo-a" in r.get(heartbeat_key("echo"))
    assert set(r.hkeys(standby_key("echo"))) == {b"echo-b"}
    assert Holder.parse(r.get(lease_key("echo"))).consumer == "echo-a"


def test_the_standby_takes_over_a_lost_active_and_its_pending_entries_once(
    r: redis.Redis,
) -> None:
    a, b = pair(r)
    send(r, range(5))
    # The active instance reads a batch and dies before committing it (no release).
    r.xreadgroup("echo", a.consumer, {IN.key: ">"}, count=5)
    assert r.xpending(IN.key, "echo")["pending"] == 5
    died = time.monotonic()
    b.config.claim_idle_ms = 10**9  # the takeover claims at once, not by the idle rule
    took = turns_until([b], lambda: b.active)
    assert took <= TTL_S + 1.5
    turns_until([b], lambda: len(outputs(r)) == 5)
    assert sorted(outputs(r)) == list(range(5))
    assert b.takeovers == 1 and time.monotonic() - died <= TTL_S + 3
    assert r.xpending(IN.key, "echo")["pending"] == 0


def test_a_clean_stop_hands_over_within_a_second(r: redis.Redis) -> None:
    a, b = pair(r)
    a.request_stop()
    a.run()  # stops at once and releases the lease
    assert r.get(lease_key("echo")) is None
    took = turns_until([b], lambda: b.active)
    assert took < 1.5
    send(r, range(3))
    turns_until([b], lambda: len(outputs(r)) == 3)


def test_an_active_instance_that_lost_its_lease_cannot_commit(r: redis.Redis) -> None:
    a, b = pair(r)
    # A pause longer than the TTL: the lease moves to b while a still believes it holds it.
    r.delete(lease_key("echo"))
    turns_until([b], lambda: b.active)
    send(r, range(4))
    a.turn()  # reads (its local lease check is recent) and handles; the commit is refused
    assert a.refusals["NOTLEADER"] == 1 and not a.active
    assert outputs(r) == []
    turns_until([b], lambda: len(outputs(r)) == 4)
    assert sorted(outputs(r)) == list(range(4))
    a.turn()
    assert not a.active and r.xpending(IN.key, "echo")["pending"] == 0


def test_a_crashed_instance_restarted_on_its_host_takes_its_own_lease_at_once(
    r: redis.Redis,
) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    me = Lease(r, "echo", "echo-a", 60)
    r.set(lease_key("echo"), f"echo-a|{me.host}|{pid}|old", px=60_000)
    assert me.renew() == (False, False)  # first sight of the holder
    assert me.renew() == (True, True)  # it was this instance, in a process that is gone
    # Another consumer's lease, or one on another host, is waited out.
    other = Lease(r, "echo", "echo-b", 60)
    r.set(lease_key("echo"), f"echo-a|elsewhere|{pid}|old", px=60_000)
    assert other.renew() == (False, False) and other.renew() == (False, False)


def test_a_single_instance_acquires_at_start(r: redis.Redis) -> None:
    a = runner(r, lease=True, heartbeat_ttl_s=TTL_S, instance="a")
    a.start()
    assert a.active and a.takeovers == 0
