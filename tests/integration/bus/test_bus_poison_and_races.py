"""The runner against a hostile bus: arbitrary bytes, crashing entries, two instances of one
group, and Redis going away under it. Real Redis throughout (a private server per test where
the server itself is stopped)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantum import localredis
from quantum.bus.envelope import Envelope, EventTypes, InvalidEvent, Payload, decode, new_envelope
from quantum.bus.redisports import RedisState
from quantum.bus.runner import (
    CommitRefused,
    Outbox,
    Runner,
    RunnerConfig,
    ServiceBase,
    Subscription,
    commit_script,
    publish,
)
from quantum.bus.streams import DLQ, StreamSpec
from quantum.risk import ess, fleetstate

IN = StreamSpec("test.poison.in", 100_000, "input")
OUT = StreamSpec("test.poison.out", 100_000, "output")
GUARD_KEY = "quantum:state:test-guard"
TYPES = EventTypes()
ROOT = Path(__file__).resolve().parents[3]


@TYPES.register
class Item(Payload):
    event_type = "test.item"
    value: int


class Echo(ServiceBase):
    """Emits each value once, guarded durably by value: a double effect is visible."""

    name = "echo"

    def __init__(self) -> None:
        self.seen: set[int] = set()

    state: RedisState  # its state port, given by runner()

    def restore(self) -> None:
        self.seen = {int(m) for m in self.state.scores(GUARD_KEY)}

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        value = event.payload.value
        if value in self.seen:
            return
        self.seen.add(value)
        out.emit(OUT, new_envelope(Item(value=value), ts=event.ts, source=self.name, cause=event))
        out.guard(GUARD_KEY, str(value), event.ts, 10**12)


def sub(**extra: Any) -> Subscription:
    return Subscription("echo", "echo", (IN,), frozenset({OUT.name}), **extra)


def runner(client: redis.Redis, service: ServiceBase | None = None, **config: Any) -> Runner:
    defaults: dict[str, Any] = {"block_ms": 20, "claim_idle_ms": 100, "claim_interval_s": 0.05,
                                "max_deliveries": 3, "reconnect_initial_s": 0.05,
                                "reconnect_max_s": 0.2}
    defaults.update(config)
    return Runner(client, bind(service or Echo(), client), sub(), TYPES,
                  RunnerConfig(**defaults))


def bind(service: Any, client: redis.Redis) -> Any:
    """Give a test service its state port, as a service's factory does."""
    service.state = RedisState(client)
    return service


def valid(value: int) -> dict[str, str | bytes]:
    from quantum.bus.envelope import encode

    return encode(new_envelope(Item(value=value), ts=value, source="test", key=value))


def outputs(client: redis.Redis) -> list[int]:
    return [decode(f, TYPES).payload.value for _, f in client.xrange(OUT.key)]


def dead(client: redis.Redis) -> list[dict[bytes, bytes]]:
    return [f for _, f in client.xrange(DLQ.key)]


# --- poison entries ------------------------------------------------------------------------

field_names = st.sampled_from(
    [b"type", b"version", b"id", b"ts", b"source", b"trace_id", b"causation_id", b"payload"]
) | st.binary(min_size=1, max_size=8)
junk = st.dictionaries(field_names, st.binary(max_size=40), min_size=1, max_size=9)


def corrupt(value: int) -> st.SearchStrategy[dict[bytes, bytes]]:
    """A valid entry with one field replaced by arbitrary bytes (often invalid UTF-8)."""
    base = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in valid(value).items()}
    return st.tuples(st.sampled_from(sorted(base)), st.binary(max_size=20)).map(
        lambda change: {**base, change[0]: change[1]}
    )


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.lists(junk | corrupt(999_999), min_size=1, max_size=6), seed=st.integers(0, 10**6))
def test_arbitrary_bytes_go_to_the_dlq_alone_and_every_valid_entry_is_handled(
    r: redis.Redis, bad: list[dict[bytes, bytes]], seed: int
) -> None:
    r.flushdb()
    run = runner(r)
    run.start()
    values = list(range(seed, seed + 8))
    pipe = r.pipeline(transaction=False)
    bad_entries = []
    for i, value in enumerate(values):
        pipe.xadd(IN.key, valid(value))
        if i < len(bad):
            bad_entries.append(bad[i])
            pipe.xadd(IN.key, bad[i])  # type: ignore[arg-type]
    pipe.execute()
    decodable = []
    for fields in bad_entries:
        try:
            decodable.append(decode(fields, TYPES).payload.value)
        except InvalidEvent:
            pass
    for _ in range(20):
        if not run.turn():
            break
    assert sorted(set(outputs(r))) == sorted(set(values) | set(decodable))
    assert len(outputs(r)) == len(set(outputs(r)))  # once each
    assert len(dead(r)) == len(bad_entries) - len(decodable)
    assert all(b"reason" in d and d[b"reason"] for d in dead(r))
    assert r.xpending(IN.key, "echo")["pending"] == 0


# --- an entry that kills the process --------------------------------------------------------

CRASHER = """
import os, sys, redis
sys.path[:0] = [{tests!r}, {root!r}]
from integration.bus.test_bus_poison_and_races import Echo, runner
class Crasher(Echo):
    def handle(self, event, out):
        if event.payload.value == 13:
            os._exit(3)   # the process dies mid-batch, before anything is committed
        super().handle(event, out)
client = redis.Redis.from_url({url!r})
runner(client, Crasher(), batch_size=50).run(max_idle_turns=5)
"""


def test_an_entry_that_kills_the_process_is_dead_lettered_alone(
    r: redis.Redis, redis_url: str
) -> None:
    publish(r, [(IN, new_envelope(Item(value=v), ts=v, source="t", key=v)) for v in range(1, 30)])
    code = CRASHER.format(tests=str(ROOT / "tests"), root=str(ROOT), url=redis_url)
    exits = []
    for _ in range(8):  # the supervisor's part: restart what died
        exits.append(subprocess.run([sys.executable, "-c", code], timeout=60).returncode)
        if exits[-1] == 0:
            break
    assert exits[-1] == 0 and exits.count(3) <= 4
    assert sorted(outputs(r)) == [v for v in range(1, 30) if v != 13]
    letters = dead(r)
    assert len(letters) == 1 and b"delivery limit" in letters[0][b"reason"]


# --- two instances of one group ---------------------------------------------------------------

def test_a_consumer_whose_entries_were_reclaimed_cannot_commit_them(r: redis.Redis) -> None:
    first, second = runner(r, consumer_instance := Echo()), runner(r, Echo(), instance="1")
    del consumer_instance
    first.start()
    second.start()
    publish(r, [(IN, new_envelope(Item(value=7), ts=7, source="t", key=7))])
    # Instance 0 reads the entry and "pauses" before committing ...
    response = r.xreadgroup("echo", first.consumer, {IN.key: ">"}, count=10)
    (_, entries), = response
    from quantum.bus.runner import Delivered

    batch = [Delivered(IN.key, eid.decode(), f) for eid, f in entries]
    time.sleep(0.15)
    second.reclaim()  # ... instance 1 reclaims it and commits the effect
    assert outputs(r) == [7]
    first.process(batch)  # instance 0 wakes: its commit is refused, nothing is written
    assert outputs(r) == [7]
    assert first.refusals["NOTOWNER"] == 1


def test_a_durable_guard_refuses_a_second_effect(r: redis.Redis) -> None:
    a, b = runner(r), runner(r, instance="1")
    a.start()
    b.start()
    b.service.seen = set()  # b's memory predates a's effect: only the guard can stop it
    publish(r, [(IN, new_envelope(Item(value=5), ts=5, source="t", key="x"))])
    a.turn()
    b.service.seen = set()
    publish(r, [(IN, new_envelope(Item(value=5), ts=5, source="t", key="y"))])
    b.turn()
    assert outputs(r) == [5]
    assert b.refusals["DUPLICATE"] == 1
    assert r.xpending(IN.key, "echo")["pending"] == 0


def test_the_commit_script_writes_nothing_when_it_refuses(r: redis.Redis) -> None:
    r.set("quantum:state:v", "3")
    # version key, expected version, bump; no lease; no acks, guards or compare-and-sets; a SET
    argv: list[Any] = ["g", "c", "quantum:state:v", "2", "1", "", "", 0, 0, 0, 3, "SET", "k", "1"]
    with pytest.raises(CommitRefused) as refused:
        commit_script(r, argv)
    assert refused.value.reason == "STALE" and r.get("k") is None
    argv[3] = "3"
    assert commit_script(r, argv) == b"4" and r.get("k") == b"1"


def test_a_compare_and_set_refuses_the_whole_commit_when_its_key_moved(r: redis.Redis) -> None:
    """The governor's ESS trip: written only over the value it read, else nothing is."""
    r.set("quantum:state:ess-like", "clear")
    out = Outbox(frozenset({OUT.name}))
    out.compare_and_set("quantum:state:ess-like", b"clear", b"tripped")
    out.emit(OUT, new_envelope(Item(value=1), ts=1, source="t", key=1))
    r.set("quantum:state:ess-like", "reset-by-operator")  # someone else wrote it meanwhile
    run = runner(r)
    with pytest.raises(CommitRefused) as refused:
        run.commit(out, {}, [])
    assert refused.value.reason == "STALE"
    assert r.get("quantum:state:ess-like") == b"reset-by-operator" and not r.exists(OUT.key)
    r.set("quantum:state:ess-like", "clear")
    run.commit(out, {}, [])
    assert r.get("quantum:state:ess-like") == b"tripped" and r.xlen(OUT.key) == 1
    absent = Outbox(frozenset({OUT.name}))
    absent.compare_and_set("quantum:state:new", None, b"first")
    run.commit(absent, {}, [])
    assert r.get("quantum:state:new") == b"first"
    with pytest.raises(CommitRefused):
        run.commit(absent, {}, [])  # no longer absent


# --- Redis going away under a running service ----------------------------------------------

@pytest.fixture
def private_redis(tmp_path: Path) -> Any:
    port = localredis.free_port()
    holder = {"proc": localredis.start(port, tmp_path / "redis"), "port": port}

    def restart(persist: bool = False, down_s: float = 0.0) -> None:
        holder["proc"].terminate()
        holder["proc"].wait(10)
        time.sleep(down_s)
        holder["proc"] = localredis.start(port, tmp_path / "redis", persist=persist)

    holder["restart"] = restart
    yield holder
    holder["proc"].terminate()
    holder["proc"].wait(10)


def test_a_runner_survives_redis_restarting_empty_and_declares_the_state_lost(
    private_redis: dict[str, Any],
) -> None:
    client = redis.Redis(port=private_redis["port"], socket_timeout=5)
    fleetstate.initialise(client, "pytest")
    service = Echo()
    run = Runner(client, bind(service, client), sub(fleet_key=fleetstate.FLEET_KEY), TYPES,
                 RunnerConfig(block_ms=20, reconnect_initial_s=0.05, reconnect_max_s=0.2))
    thread = threading.Thread(target=run.run, daemon=True)
    thread.start()
    publish(client, [(IN, new_envelope(Item(value=1), ts=1, source="t", key=1))])
    _until(lambda: outputs(client) == [1])
    assert not ess.status(client).tripped
    private_redis["restart"](down_s=1.0)
    # Missing, the ESS reads tripped (unknown) at once; the runner then records why.
    assert ess.status(client).tripped
    _until(lambda: ess.status(client).reason.startswith("state_lost"))
    assert ess.status(client).tripped
    publish(client, [(IN, new_envelope(Item(value=2), ts=2, source="t", key=2))])
    _until(lambda: outputs(client) == [2])  # same runner, same thread: it resumed
    assert thread.is_alive()
    run.request_stop()
    thread.join(10)


def test_a_runner_waits_out_client_pause(private_redis: dict[str, Any]) -> None:
    client = redis.Redis(port=private_redis["port"], socket_timeout=1)
    fleetstate.initialise(client, "pytest")
    run = Runner(client, bind(Echo(), client), sub(fleet_key=fleetstate.FLEET_KEY), TYPES,
                 RunnerConfig(block_ms=20, reconnect_initial_s=0.05, reconnect_max_s=0.2))
    thread = threading.Thread(target=run.run, daemon=True)
    thread.start()
    _until(lambda: client.exists("quantum:heartbeat:echo"))
    redis.Redis(port=private_redis["port"]).execute_command("CLIENT", "PAUSE", 3000)
    time.sleep(3.5)
    publish(client, [(IN, new_envelope(Item(value=9), ts=9, source="t", key=9))])
    _until(lambda: outputs(client) == [9])
    assert thread.is_alive() and not ess.status(client).tripped
    run.request_stop()
    thread.join(10)


def test_a_service_process_started_while_redis_is_down_waits_for_it(
    private_redis: dict[str, Any], tmp_path: Path
) -> None:
    port = private_redis["port"]
    private_redis["proc"].terminate()
    private_redis["proc"].wait(10)
    env = {**os.environ, "QT_REDIS_URL": f"redis://127.0.0.1:{port}/0", "QT_METRICS_PORT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "services.apply_layer"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(2.0)
        assert proc.poll() is None  # not exit 78: an outage is not bad configuration
        private_redis["proc"] = localredis.start(port, tmp_path / "redis2")
        client = redis.Redis(port=port)
        _until(lambda: client.exists("quantum:heartbeat:apply-layer"), timeout=20)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def _until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.ConnectionError, redis.TimeoutError):
            pass
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
