"""The consumer-group runner against a real Redis: exactly-once effects, DLQ, isolation."""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Any

import orjson
import pytest
import redis

from quantum.bus.envelope import Envelope, EventTypes, Payload, decode, new_envelope
from quantum.bus.redisports import RedisState
from quantum.bus.runner import (
    Outbox,
    Runner,
    RunnerConfig,
    ServiceBase,
    Subscription,
    UndeclaredStream,
    publish,
)
from quantum.bus.streams import DLQ, StreamSpec

IN = StreamSpec("test.in", 10_000, "input")
OUT = StreamSpec("test.out", 10_000, "output")
OTHER = StreamSpec("test.other", 10_000, "not declared")
COUNTER_KEY = "quantum:state:test-counter"
TYPES = EventTypes()


@TYPES.register
class Number(Payload):
    event_type = "test.number"
    value: int


class Doubler(ServiceBase):
    """Emits 2×value and keeps a running sum in a state key: two effects to count."""

    name = "doubler"

    def __init__(self, fail_on: int | None = None, rogue: bool = False) -> None:
        self.total = 0
        self.fail_on = fail_on
        self.rogue = rogue

    state: RedisState  # its state port, given by make_runner

    def restore(self) -> None:
        raw = self.state.get(COUNTER_KEY)
        self.total = int(raw) if raw else 0

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        value = event.payload.value
        if value == self.fail_on:
            raise ValueError(f"cannot handle {value}")
        self.total += value
        target = OTHER if self.rogue else OUT
        out.emit(
            target,
            new_envelope(Number(value=2 * value), ts=event.ts, source=self.name, cause=event),
        )
        out.put_state(COUNTER_KEY, self.total)


def subscription() -> Subscription:
    return Subscription("doubler", "doubler", (IN,), frozenset({OUT.name}))


def bind(service: Any, client: redis.Redis) -> Any:
    """Give a test service its state port, as a service's factory does."""
    service.state = RedisState(client)
    return service


def make_runner(client: redis.Redis, service: Doubler, **config: Any) -> Runner:
    bind(service, client)
    defaults = {"block_ms": 50, "claim_idle_ms": 50, "claim_interval_s": 0.01, "max_deliveries": 3}
    defaults.update(config)
    return Runner(client, service, subscription(), TYPES, RunnerConfig(**defaults))


def send(client: redis.Redis, *values: int) -> None:
    publish(
        client, [(IN, new_envelope(Number(value=v), ts=v, source="test", key=v)) for v in values]
    )


def outputs(client: redis.Redis) -> list[int]:
    return [decode(f, TYPES).payload.value for _, f in client.xrange(OUT.key)]


class CrashBeforeCommit(Runner):
    """Dies (like ``kill -9``) after the handler ran and before outputs and acks commit."""

    def commit(self, out: Outbox, acks: dict[str, list[str]], dead: list[Any]) -> None:
        if acks:
            os._exit(137)
        super().commit(out, acks, dead)


def _crashing_child(url: str, consumer_instance: str) -> None:
    client = redis.Redis.from_url(url)
    runner = CrashBeforeCommit(
        client,
        bind(Doubler(), client),
        subscription(),
        TYPES,
        RunnerConfig(block_ms=50, instance=consumer_instance),
    )
    runner.run(max_idle_turns=20)


def _crash_once(url: str, instance: str) -> None:
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_crashing_child, args=(url, instance))
    child.start()
    child.join(30)
    assert child.exitcode == 137


@pytest.mark.parametrize("successor", ["same-consumer", "peer"])
def test_killed_before_ack_is_reclaimed_and_takes_effect_once(
    r: redis.Redis, redis_url: str, successor: str
) -> None:
    send(r, 1, 2, 3)
    _crash_once(redis_url, "0")
    assert outputs(r) == []  # the crash committed nothing
    pending = r.xpending(IN.key, "doubler")
    assert pending["pending"] == 3
    # The same consumer restarting recovers its own pending entries at start; a peer
    # reclaims them with XAUTOCLAIM once they have been idle for claim_idle_ms.
    instance = "0" if successor == "same-consumer" else "1"
    runner = make_runner(r, Doubler(), instance=instance)
    runner.run(max_idle_turns=5)
    assert sorted(outputs(r)) == [2, 4, 6]
    assert int(r.get(COUNTER_KEY)) == 6
    assert r.xpending(IN.key, "doubler")["pending"] == 0
    runner.run(max_idle_turns=3)  # nothing is handled twice on a further run
    assert sorted(outputs(r)) == [2, 4, 6]


def test_malformed_event_goes_to_dlq_with_reason_and_consumer_carries_on(r: redis.Redis) -> None:
    send(r, 1)
    r.xadd(
        IN.key,
        {
            "type": "test.number",
            "version": "1",
            "id": "x",
            "ts": "5",
            "source": "t",
            "trace_id": "x",
            "causation_id": "",
            "payload": b'{"value": "not a number"}',
        },
    )
    r.xadd(IN.key, {"garbage": "yes"})
    send(r, 2)
    runner = make_runner(r, Doubler())
    runner.run(max_idle_turns=3)
    assert outputs(r) == [2, 4]
    dead = [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(DLQ.key)]
    assert len(dead) == 2
    assert "payload invalid at value" in dead[0]["reason"]
    assert "missing envelope fields" in dead[1]["reason"]
    assert orjson.loads(dead[1]["original"]) == {"garbage": "yes"}
    assert all(d["stream"] == IN.key and d["group"] == "doubler" for d in dead)
    assert r.xpending(IN.key, "doubler")["pending"] == 0


def test_poison_event_is_retried_then_dead_lettered_without_blocking_others(r: redis.Redis) -> None:
    send(r, 1, 13, 2)
    runner = make_runner(r, Doubler(fail_on=13))
    runner.run(max_idle_turns=40)
    assert outputs(r) == [2, 4]
    assert int(r.get(COUNTER_KEY)) == 3  # the failed batch's partial state was rolled back
    dead = [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(DLQ.key)]
    assert len(dead) == 1
    assert "delivery limit 3 exceeded" in dead[0]["reason"]
    assert "cannot handle 13" in dead[0]["reason"]
    assert r.xpending(IN.key, "doubler")["pending"] == 0


def test_publishing_to_an_undeclared_stream_is_refused(r: redis.Redis) -> None:
    out = Outbox(frozenset({OUT.name}))
    with pytest.raises(UndeclaredStream, match=r"test\.other"):
        out.emit(OTHER, new_envelope(Number(value=1), ts=1, source="t"))
    send(r, 5)
    runner = make_runner(r, Doubler(rogue=True))
    runner.run(max_idle_turns=3)
    assert not r.exists(OTHER.key)  # nothing reached the undeclared stream


def test_entries_stay_readable_for_operators(r: redis.Redis) -> None:
    send(r, 7)
    ((_, fields),) = r.xrange(IN.key)
    text = {k.decode(): v.decode() for k, v in fields.items()}
    assert text["type"] == "test.number"
    assert orjson.loads(text["payload"]) == {"value": 7}
    assert set(text) == {
        "type",
        "version",
        "id",
        "ts",
        "source",
        "trace_id",
        "causation_id",
        "payload",
    }


def test_heartbeat_key_has_a_ttl(r: redis.Redis) -> None:
    runner = make_runner(r, Doubler(), heartbeat_ttl_s=7)
    runner.run(max_idle_turns=1)
    beat = orjson.loads(r.get("quantum:heartbeat:doubler"))
    assert beat["service"] == "doubler" and beat["pid"] == os.getpid()
    assert 0 < r.ttl("quantum:heartbeat:doubler") <= 7


def test_commit_transaction_is_all_or_nothing_and_errors_raise(r: redis.Redis) -> None:
    from quantum.bus.runner import transaction

    assert transaction(r, [("SET", "a", "1"), ("XADD", "s", "*", "f", "v")])[0] in (b"OK", "OK")
    # A command Redis refuses while queueing (wrong arity) aborts the whole transaction.
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        transaction(r, [("SET", "b", "1"), ("SET", "c")])
    assert not r.exists("b")
    # An error at EXEC time (INCR on text) raises too; the connection stays usable.
    with pytest.raises(redis.ResponseError, match="not an integer"):
        transaction(r, [("SET", "d", "x"), ("INCR", "d")])
    assert r.ping()
    assert transaction(r, [("INCR", "n"), ("INCR", "n")]) == [1, 2]


class StopsWhileIdle(Doubler):
    """Asks its runner to stop from inside the idle hook, as a SIGTERM landing there does."""

    runner: Runner | None = None

    def on_idle(self, out: Outbox, now: float) -> None:
        if self.runner is not None:
            self.runner.request_stop()


def test_a_stop_requested_during_a_turn_does_not_wait_on_the_read(
    r: redis.Redis, redis_url: str,
) -> None:
    """The read after a stop request must not block: with ``BLOCK 0`` it waited forever (until
    the socket timed out), so a SIGTERM that landed in a turn's idle work outlived systemd's
    TimeoutStopSec and the unit ended SIGKILLed and failed."""
    client = redis.Redis.from_url(redis_url)  # no socket timeout: a blocked read never ends
    service = StopsWhileIdle()
    runner = make_runner(client, service, block_ms=60_000)
    service.runner = runner
    done = threading.Event()
    thread = threading.Thread(target=lambda: (runner.run(), done.set()), daemon=True)
    thread.start()
    # a hang is what is tested, not a speed: with BLOCK 0 the read waited until the socket
    # timed out, which the runner then took for an outage of the bus
    assert done.wait(120), "the runner still waits on its read after the stop request"
    assert runner.outages == 0, "the read after the stop request blocked until a timeout"
