"""The consumer-group runner: the loop every service runs.

One turn of the loop:

1. ping the systemd watchdog, refresh the heartbeat key (once a second);
2. every ``claim_interval_s``, reclaim entries other consumers left pending longer than
   ``claim_idle_ms`` (``XAUTOCLAIM``);
3. read a batch from every consumed stream (``XREADGROUP … BLOCK``);
4. decode each entry; an invalid one is routed to the dead-letter stream with its reason;
5. hand the events, in order, to the service, which records its outputs and state writes
   in an :class:`Outbox`;
6. commit outputs, state and ``XACK`` in one ``MULTI/EXEC``.

Effects are therefore exactly-once even though delivery is at-least-once: a process that
dies after handling but before step 6 committed nothing, and the entries are handled again
by its successor (its own pending entries at start, or ``XAUTOCLAIM`` by a peer). A
handler that raises has its batch's outputs discarded, its state restored from Redis, and
the batch retried one event at a time; the failing event stays pending and, after
``max_deliveries``, goes to the dead-letter stream. A poison event never crash-loops a
service.
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import hiredis
import orjson
import redis
import structlog

from quantum.bus.envelope import Envelope, EventTypes, InvalidEvent, decode, encode
from quantum.bus.streams import DLQ, StreamSpec
from quantum.observability import metrics
from quantum.observability.heartbeat import Beacon


class UndeclaredStream(RuntimeError):
    """A service tried to publish to a stream its registry entry does not declare."""


@dataclass(slots=True)
class Delivered:
    """A stream entry as read: where it came from and its raw fields."""

    stream: str  # full key
    entry_id: str
    fields: dict[bytes, bytes]


@dataclass
class Outbox:
    """What a handler wants committed with its acks: events, state keys, dead letters."""

    produces: frozenset[str]
    events: list[tuple[StreamSpec, Envelope[Any]]] = field(default_factory=list)
    state: dict[str, bytes] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    commands: list[tuple[str | bytes | int | float, ...]] = field(default_factory=list)

    def emit(self, stream: StreamSpec, envelope: Envelope[Any]) -> None:
        if stream.name not in self.produces:
            raise UndeclaredStream(
                f"publishing {envelope.type} to {stream.name}, which the registry does not "
                f"declare for this service (declared: {', '.join(sorted(self.produces))})"
            )
        self.events.append((stream, envelope))

    def put_state(self, key: str, value: object) -> None:
        """Write ``key`` (JSON) in the same transaction as the acks."""
        self.deletes.discard(key)
        self.state[key] = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)

    def delete_state(self, key: str) -> None:
        self.state.pop(key, None)
        self.deletes.add(key)

    def command(self, *command: str | bytes | int | float) -> None:
        """Any other write for the same transaction, as Redis spells it:
        ``out.command("ZADD", key, score, member)``."""
        self.commands.append(command)

    @property
    def empty(self) -> bool:
        return not (self.events or self.state or self.deletes or self.commands)


class Service(Protocol):
    """What the runner needs from a service."""

    name: str

    def restore(self, client: redis.Redis) -> None:
        """Load committed state (at start, and after a handler failure)."""

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        """Handle one event; record outputs and state writes in ``out``."""

    def on_batch_end(self, out: Outbox) -> None:
        """Called once per batch after its events (flush aggregated state)."""

    def on_idle(self, out: Outbox, now: float) -> None:
        """Called each loop turn, with wall time, for timers."""


class ServiceBase:
    """No-op defaults for the optional hooks of :class:`Service`."""

    name: str

    def restore(self, client: redis.Redis) -> None:
        return None

    def on_batch_end(self, out: Outbox) -> None:
        return None

    def on_idle(self, out: Outbox, now: float) -> None:
        return None


@dataclass(frozen=True)
class Subscription:
    service: str
    group: str
    consumes: tuple[StreamSpec, ...]
    produces: frozenset[str]


@dataclass
class RunnerConfig:
    batch_size: int = 100
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    claim_interval_s: float = 5.0
    max_deliveries: int = 5
    heartbeat_ttl_s: int = 15
    instance: str = "0"
    commit_channel: str | None = None  # PUBLISH here after each commit (replay barrier)


def publish(
    client: redis.Redis, items: Iterable[tuple[StreamSpec, Envelope[Any]]], pipe: Any = None
) -> int:
    """Pipelined ``XADD … MAXLEN ~`` of envelopes; returns how many were queued."""
    own = pipe is None
    p = client.pipeline(transaction=False) if own else pipe
    n = 0
    for spec, envelope in items:
        p.xadd(spec.key, encode(envelope), maxlen=spec.maxlen, approximate=True)
        n += 1
    if own:
        p.execute()
    return n


def xadd_command(
    key: str, fields: dict[str, str | bytes], maxlen: int
) -> tuple[str | bytes | int | float, ...]:
    command: list[str | bytes | int | float] = ["XADD", key, "MAXLEN", "~", maxlen, "*"]
    for name, value in fields.items():
        command += (name, value)
    return tuple(command)


def transaction(
    client: redis.Redis, commands: list[tuple[str | bytes | int | float, ...]]
) -> list[Any]:
    """``MULTI``, the commands, ``EXEC``: packed by hiredis and written in one send.

    The runner's commit is the bus's hot path; redis-py's pipeline spends most of the commit's
    time preparing each command in Python. Here the bytes are packed in C and the replies read
    in order. Any error (a command refused when queued, EXECABORT, an error inside EXEC, an I/O
    error) raises, and a connection that failed mid-exchange is dropped rather than reused.
    """
    # hiredis' stub types the argument as a 1-tuple; any length is accepted.
    parts = (("MULTI",), *commands, ("EXEC",))
    packed = b"".join(hiredis.pack_command(c) for c in parts)  # type: ignore[arg-type]
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command([packed], check_health=False)
        queued_error: redis.ResponseError | None = None
        connection.read_response()  # +OK to MULTI
        for _ in commands:
            try:
                connection.read_response()  # +QUEUED
            except redis.ResponseError as e:
                queued_error = queued_error or e
        try:
            replies = connection.read_response()  # EXEC: every command's reply
        except redis.ResponseError as e:
            raise queued_error or e from None
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)
    for reply in replies or ():
        if isinstance(reply, redis.ResponseError):
            raise reply
    return list(replies or ())


def ensure_group(client: redis.Redis, stream_key: str, group: str) -> None:
    """Create the consumer group (and stream) if it does not exist; idempotent."""
    try:
        client.xgroup_create(stream_key, group, id="0", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


def dead_letter_fields(item: Delivered, group: str, reason: str) -> dict[str, bytes | str]:
    """A DLQ entry: where the entry came from, why, and its original fields as JSON."""
    original = {
        k.decode(errors="replace"): v.decode(errors="replace") for k, v in item.fields.items()
    }
    return {
        "type": "bus.dead_letter",
        "stream": item.stream,
        "entry_id": item.entry_id,
        "group": group,
        "reason": reason,
        "ts": str(int(time.time() * 1000)),
        "original": orjson.dumps(original),
    }


class Runner:
    """Runs one service on its consumer group until SIGTERM/SIGINT, then drains."""

    def __init__(
        self,
        client: redis.Redis,
        service: Service,
        subscription: Subscription,
        types: EventTypes,
        config: RunnerConfig | None = None,
    ) -> None:
        self.client = client
        self.service = service
        self.sub = subscription
        self.types = types
        self.config = config or RunnerConfig()
        self.consumer = f"{subscription.service}-{self.config.instance}"
        self.log = structlog.get_logger(service=subscription.service, consumer=self.consumer)
        self.beacon = Beacon(
            client, subscription.service, self.consumer, self.config.heartbeat_ttl_s
        )
        self.notifier = self.beacon.notifier
        self._stopping = False
        self._last_claim = 0.0
        self._last_lag = 0.0
        self.failures: dict[str, str] = {}  # entry id -> last handler error
        self._keys = [spec.key for spec in subscription.consumes]
        self._name = subscription.service

    # --- lifecycle ------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def start(self) -> None:
        for key in self._keys:
            ensure_group(self.client, key, self.sub.group)
        self.service.restore(self.client)
        self.beacon.beat(force=True)
        self.recover_own_pending()
        self.notifier.ready()
        metrics.UP.labels(self._name).set(1)
        self.log.info("started", group=self.sub.group, streams=self._keys)

    def run(self, max_idle_turns: int | None = None) -> None:
        """Loop until stopped. ``max_idle_turns`` ends it after that many empty reads (tests)."""
        self.start()
        idle = 0
        try:
            while not self._stopping:
                if self.turn():
                    idle = 0
                else:
                    idle += 1
                    if max_idle_turns is not None and idle >= max_idle_turns:
                        break
        finally:
            self.notifier.stopping()
            metrics.UP.labels(self._name).set(0)
            self.log.info("stopped")

    def turn(self) -> bool:
        """One loop turn; returns whether any entry was handled."""
        now = time.time()
        self.beacon.beat()
        out = Outbox(self.sub.produces)
        self.service.on_idle(out, now)
        self.service.on_batch_end(out)  # timers may change state: persist it with their events
        if not out.empty:
            self.commit(out, {}, [])
        if now - self._last_claim >= self.config.claim_interval_s:
            self._last_claim = now
            self.reclaim()
        if now - self._last_lag >= 5.0:
            self._last_lag = now
            self.update_lag_metrics()
        block = 0 if self._stopping else self.config.block_ms
        response = self.client.xreadgroup(
            self.sub.group,
            self.consumer,
            {key: ">" for key in self._keys},
            count=self.config.batch_size,
            block=block,
        )
        batch = [
            Delivered(stream.decode() if isinstance(stream, bytes) else stream, _id(eid), fields)
            for stream, entries in (response or [])
            for eid, fields in entries
            if fields is not None
        ]
        if not batch:
            return False
        self.process(batch)
        return True

    # --- handling -------------------------------------------------------------------------

    def process(
        self, batch: Sequence[Delivered], delivery_counts: dict[str, int] | None = None
    ) -> None:
        started = time.perf_counter()
        out = Outbox(self.sub.produces)
        acks: dict[str, list[str]] = defaultdict(list)
        dead: list[tuple[Delivered, str]] = []
        events: list[tuple[Delivered, Envelope[Any]]] = []
        for item in batch:
            count = (delivery_counts or {}).get(item.entry_id, 1)
            if count > self.config.max_deliveries:
                reason = self.failures.pop(item.entry_id, "handler kept failing")
                dead.append(
                    (item, f"delivery limit {self.config.max_deliveries} exceeded: {reason}")
                )
                continue
            try:
                events.append((item, decode(item.fields, self.types)))
            except InvalidEvent as e:
                dead.append((item, str(e)))
        try:
            for item, event in events:
                self._handle_one(event, out)
                acks[item.stream].append(item.entry_id)
            self.service.on_batch_end(out)
        except Exception as e:  # noqa: BLE001  (any handler failure is isolated below)
            metrics.HANDLER_ERRORS.labels(self._name).inc()
            self.log.warning("batch failed, retrying one by one", error=repr(e))
            self.service.restore(self.client)
            self.commit(Outbox(self.sub.produces), {}, dead)
            self._process_one_by_one(events)
            return
        self.commit(out, acks, dead)
        metrics.HANDLE_SECONDS.labels(self._name).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels(self._name).observe(len(batch))

    def _handle_one(self, event: Envelope[Any], out: Outbox) -> None:
        structlog.contextvars.bind_contextvars(trace_id=event.trace_id, event_id=event.id)
        try:
            self.service.handle(event, out)
        finally:
            structlog.contextvars.unbind_contextvars("trace_id", "event_id")

    def _process_one_by_one(self, events: list[tuple[Delivered, Envelope[Any]]]) -> None:
        for item, event in events:
            out = Outbox(self.sub.produces)
            try:
                self._handle_one(event, out)
                self.service.on_batch_end(out)
            except Exception as e:  # noqa: BLE001
                self.failures[item.entry_id] = repr(e)
                self.log.error(
                    "handler failed; entry left pending",
                    entry_id=item.entry_id,
                    stream=item.stream,
                    error=repr(e),
                    event_type=event.type,
                )
                self.service.restore(self.client)
                continue
            self.commit(out, {item.stream: [item.entry_id]}, [])

    def commit(
        self, out: Outbox, acks: dict[str, list[str]], dead: list[tuple[Delivered, str]]
    ) -> None:
        """Outputs, state, dead letters and acks in one ``MULTI/EXEC``."""
        commands: list[tuple[str | bytes | int | float, ...]] = []
        produced: dict[str, int] = defaultdict(int)
        for spec, envelope in out.events:
            commands.append(xadd_command(spec.key, encode(envelope), spec.maxlen))
            produced[spec.name] += 1
        for key, value in out.state.items():
            commands.append(("SET", key, value))
        for key in out.deletes:
            commands.append(("DEL", key))
        commands.extend(out.commands)
        for item, reason in dead:
            fields = dead_letter_fields(item, self.sub.group, reason)
            commands.append(xadd_command(DLQ.key, fields, DLQ.maxlen))
            acks.setdefault(item.stream, []).append(item.entry_id)
        for stream, ids in acks.items():
            if ids:
                commands.append(("XACK", stream, self.sub.group, *ids))
        if self.config.commit_channel is not None:
            commands.append(("PUBLISH", self.config.commit_channel, self._name))
        transaction(self.client, commands)
        for name, n in produced.items():
            metrics.PRODUCED.labels(self._name, name).inc(n)
        for stream, ids in acks.items():
            metrics.CONSUMED.labels(self._name, stream).inc(len(ids))
        for item, reason in dead:
            metrics.DLQ.labels(self._name, item.stream).inc()
            self.log.warning(
                "dead-lettered", stream=item.stream, entry_id=item.entry_id, reason=reason
            )

    # --- recovery -------------------------------------------------------------------------

    def recover_own_pending(self) -> None:
        """Handle entries this consumer read but never acked (it died before committing)."""
        for key in self._keys:
            while True:
                pending = self.client.xpending_range(
                    key,
                    self.sub.group,
                    min="-",
                    max="+",
                    count=self.config.batch_size,
                    consumername=self.consumer,
                )
                if not pending:
                    break
                ids = [_id(p["message_id"]) for p in pending]
                counts = {_id(p["message_id"]): int(p["times_delivered"]) + 1 for p in pending}
                claimed = self.client.xclaim(key, self.sub.group, self.consumer, 0, ids)
                self._process_claimed(key, claimed, counts, ids)

    def reclaim(self) -> None:
        """``XAUTOCLAIM`` entries idle on dead consumers and handle them here."""
        for key in self._keys:
            start = "0-0"
            while True:
                result = self.client.xautoclaim(
                    key,
                    self.sub.group,
                    self.consumer,
                    self.config.claim_idle_ms,
                    start_id=start,
                    count=self.config.batch_size,
                )
                start, claimed = _id(result[0]), result[1]
                if claimed:
                    ids = [_id(eid) for eid, _ in claimed]
                    pending = self.client.xpending_range(
                        key, self.sub.group, min=ids[0], max=ids[-1], count=len(ids) * 2 + 10
                    )
                    counts = {_id(p["message_id"]): int(p["times_delivered"]) for p in pending}
                    metrics.RECLAIMED.labels(self._name, key).inc(len(claimed))
                    self.log.info("reclaimed", stream=key, entries=len(claimed))
                    self._process_claimed(key, claimed, counts, ids)
                if start == "0-0":
                    break

    def _process_claimed(
        self, key: str, claimed: list[Any], counts: dict[str, int], ids: list[str]
    ) -> None:
        present = {_id(eid) for eid, fields in claimed if fields}
        batch = [Delivered(key, _id(eid), fields) for eid, fields in claimed if fields]
        gone = [i for i in ids if i not in present]
        if gone:  # trimmed away while pending: nothing left to handle
            self.client.xack(key, self.sub.group, *gone)
        if batch:
            self.process(batch, counts)

    # --- metrics --------------------------------------------------------------------------

    def update_lag_metrics(self) -> None:
        for key in self._keys:
            try:
                groups = self.client.xinfo_groups(key)
            except redis.ResponseError:
                continue
            for g in groups:
                if _text(g.get("name")) == self.sub.group:
                    metrics.GROUP_PENDING.labels(self._name, key).set(int(g.get("pending") or 0))
                    lag = g.get("lag")
                    if lag is not None:
                        metrics.GROUP_LAG.labels(self._name, key).set(int(lag))


def _id(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
