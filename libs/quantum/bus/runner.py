"""The consumer-group runner: the loop every service runs.

One turn of the loop:

1. ping the systemd watchdog, refresh the heartbeat key (once a second);
2. every ``claim_interval_s``, reclaim entries other consumers left pending longer than
   ``claim_idle_ms`` (``XAUTOCLAIM``);
3. read a batch from every consumed stream (``XREADGROUP … BLOCK``);
4. decode each entry; an invalid one is routed to the dead-letter stream with its reason;
5. hand the events, in order, to the service, which records its outputs and state writes
   in an :class:`Outbox`;
6. commit outputs, state and ``XACK`` in one atomic Lua commit (:data:`COMMIT_SCRIPT`).

Effects are therefore exactly-once even though delivery is at-least-once: a process that
dies after handling but before step 6 committed nothing, and the entries are handled again
by its successor (its own pending entries at start, or ``XAUTOCLAIM`` by a peer). A
handler that raises has its batch's outputs discarded, its state restored from Redis, and
the batch retried one event at a time; the failing event stays pending and, after
``max_deliveries``, goes to the dead-letter stream. A poison event never crash-loops a
service.

The commit is checked before it writes anything, so a race cannot double an effect:

* **ownership**: every acked entry must still be pending on *this* consumer; a consumer
  that was paused past ``claim_idle_ms`` and whose entries a peer reclaimed finds the commit
  refused (``NOTOWNER``), drops its work and reloads its state;
* **state version**: a service that owns state keys commits only against the version of
  its state it restored (``STALE`` otherwise, then it reloads and handles the batch again),
  so two instances of one group never overwrite each other's book;
* **guards**: :meth:`Outbox.guard` records a durable, time-bounded "done once" (a plan id
  applied, an order sent); a guard already present refuses the commit (``DUPLICATE``).

Faults of the bus itself never end the process: a lost connection, a timeout (``CLIENT
PAUSE``), ``LOADING`` or a failover error makes the runner keep the watchdog, metrics and
process alive, retry with bounded back-off, then re-create its groups, check the fleet
epoch (:mod:`quantum.risk.fleetstate`: a Redis that came back empty trips the ESS with
``state_lost``), reload its state and resume with its own pending entries. Entries found
pending on this consumer at start were being handled when a previous process died; they are
handled one at a time, each charged a delivery only when its turn comes, so an entry that
kills the process is dead-lettered alone and its batch-mates are handled.

**Durable commits.** A commit whose outbox says an effect outside the bus will follow it
(:meth:`Outbox.require_replica`: execution recording an order intent it is about to send)
is confirmed with ``WAIT <replicas> <replica_wait_ms>`` on the connection that ran it, when
replicas are expected (``QT_REPLICAS_EXPECTED``; by default one behind a Sentinel URL). A
commit that is not confirmed in time raises :class:`ReplicaUnconfirmed`, which the loop
treats as an outage: the service's next turn (where the order would leave) does not come;
the runner reloads its state and waits until a probe write is confirmed by a replica. So an
intent the exchange may receive is always on a replica Sentinel can promote
(docs/RELIABILITY.md, "Failover").

**Active and standby.** A service placed ``active-standby`` in the registry
(``RunnerConfig.lease``) may run on two hosts in one group: only the instance holding the
service's lease (:mod:`quantum.bus.lease`) reads, runs its timers and commits; the commit
script refuses any other (``NOTLEADER``). The standby renews its claim once a second; when
the active one's lease lapses (heartbeat TTL) it takes over, restores the state, and
claims everything the old one left pending at once (``XAUTOCLAIM`` with no idle minimum).
A clean stop releases the lease, so a planned switch-over takes about a second.
"""

from __future__ import annotations

import hashlib
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
from quantum.bus.lease import Lease
from quantum.bus.streams import DLQ, StreamSpec
from quantum.observability import metrics
from quantum.observability.heartbeat import Beacon

Command = tuple[str | bytes | int | float, ...]
ACK_CHUNK = 1000  # ids per XACK inside the commit script (Lua's unpack has a limit)
_BUS_DOWN_PREFIXES = ("READONLY", "MASTERDOWN", "LOADING", "NOREPLICAS", "TRYAGAIN")
# The same replies once redis-py has parsed them into their own classes (prefix removed).
_BUS_DOWN_ERRORS = (redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError,
                    redis.exceptions.TryAgainError)


class ReplicaUnconfirmed(redis.ConnectionError):
    """A commit that must be on ``required`` replicas before its effects leave the bus was
    confirmed by only ``confirmed`` within the wait. The commit is on the master, but
    nothing that depends on it may happen: the runner treats this as the bus being down
    (reloads its state and waits until a replica confirms)."""

    def __init__(self, confirmed: int, required: int, wait_ms: int) -> None:
        super().__init__(f"{confirmed} of {required} replicas confirmed within {wait_ms} ms")
        self.confirmed = confirmed
        self.required = required


class CommitRefused(RuntimeError):
    """The commit script refused before writing: ``reason`` is NOTLEADER, NOTOWNER, STALE
    or DUPLICATE."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason} {detail}")
        self.reason = reason
        self.detail = detail


def bus_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the bus is (for now) not there, rather than a bug or bad data:
    connection refused or reset, a timeout (``CLIENT PAUSE``), ``LOADING``, or a failover
    (``READONLY`` replica, ``MASTERDOWN``). These are retried, never fatal."""
    if isinstance(error, redis.ConnectionError | redis.TimeoutError | ConnectionError):
        return True
    if isinstance(error, _BUS_DOWN_ERRORS):
        return True
    if isinstance(error, redis.ResponseError):
        return str(error).startswith(_BUS_DOWN_PREFIXES)
    return False


# The commit: checks first (nothing is written unless all pass), then the writes in order.
# ARGV: group, consumer, version key ("" = unversioned), expected version, bump (0/1),
#       lease key and value ("" = no lease: the lease must hold exactly that value),
#       n streams + (stream, first id, last id, k, k ids…)…, n guards + (key, member)…,
#       n compare-and-sets + (key, "1" expected present / "0" absent, expected value)…,
#       then each command as (argc, args…).
COMMIT_SCRIPT = """
local group, consumer, vkey, expected, bump = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if ARGV[6] ~= '' and redis.call('GET', ARGV[6]) ~= ARGV[7] then
  return redis.error_reply('NOTLEADER ' .. ARGV[6] .. ' is not held by ' .. consumer)
end
local i = 8
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local stream, first, last, k = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  local limit = k * 4 + 64
  local ok, rows = pcall(redis.call, 'XPENDING', stream, group, first, last, limit, consumer)
  if not ok then
    return redis.error_reply('NOTOWNER ' .. stream .. ' (no group)')
  end
  local mine = {}
  for _, row in ipairs(rows) do mine[row[1]] = true end
  for j = i, i + k - 1 do
    local id = ARGV[j]
    if not mine[id] then
      local one = (#rows >= limit) and redis.call('XPENDING', stream, group, id, id, 1, consumer)
      if not one or #one == 0 then
        return redis.error_reply('NOTOWNER ' .. stream .. ' ' .. id)
      end
    end
  end
  i = i + k
end
local version = expected
if vkey ~= '' then
  local current = redis.call('GET', vkey) or '0'
  if current ~= expected then
    return redis.error_reply('STALE ' .. vkey .. ' at ' .. current .. ', restored ' .. expected)
  end
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local key, member = ARGV[i], ARGV[i + 1]
  i = i + 2
  if redis.call('ZSCORE', key, member) then
    return redis.error_reply('DUPLICATE ' .. key .. ' ' .. member)
  end
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local key, present, expected = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local current = redis.call('GET', key)
  if (present == '1' and current ~= expected) or (present == '0' and current) then
    return redis.error_reply('STALE ' .. key .. ' changed since it was read')
  end
end
if vkey ~= '' and bump == '1' then
  version = tostring(redis.call('INCR', vkey))
end
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + 1 + argc
end
return version
"""
COMMIT_SHA = hashlib.sha1(COMMIT_SCRIPT.encode()).hexdigest()


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
    """What a handler wants committed with its acks, as typed operations: events, state
    keys (optionally expiring), list appends, guarded "once" records and compare-and-set
    writes. Nothing else reaches the bus from a handler; each engine commits an outbox in
    one atomic step (Redis: :data:`COMMIT_SCRIPT`; in process: :mod:`quantum.engine`)."""

    produces: frozenset[str]
    events: list[tuple[StreamSpec, Envelope[Any]]] = field(default_factory=list)
    state: dict[str, bytes] = field(default_factory=dict)
    ttls: dict[str, int] = field(default_factory=dict)  # key -> seconds
    deletes: set[str] = field(default_factory=set)
    appends: list[tuple[str, bytes, int]] = field(default_factory=list)  # key, value, keep
    guards: list[tuple[str, str, int, int]] = field(default_factory=list)
    swaps: dict[str, tuple[bytes | None, bytes]] = field(default_factory=dict)
    durable: bool = False  # must be on the expected replicas before its effects follow

    def emit(self, stream: StreamSpec, envelope: Envelope[Any]) -> None:
        if stream.name not in self.produces:
            raise UndeclaredStream(
                f"publishing {envelope.type} to {stream.name}, which the registry does not "
                f"declare for this service (declared: {', '.join(sorted(self.produces))})"
            )
        self.events.append((stream, envelope))

    def put_state(self, key: str, value: object, *, ttl_s: int | None = None) -> None:
        """Write ``key`` (JSON) in the same commit as the acks; ``ttl_s``: it expires."""
        self.deletes.discard(key)
        self.state[key] = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
        if ttl_s is None:
            self.ttls.pop(key, None)
        else:
            self.ttls[key] = ttl_s

    def delete_state(self, key: str) -> None:
        self.state.pop(key, None)
        self.ttls.pop(key, None)
        self.deletes.add(key)

    def append(self, key: str, value: object, keep: int) -> None:
        """Prepend ``value`` (JSON) to the list ``key``, keeping its newest ``keep`` items
        (an audit trail)."""
        self.appends.append((key, orjson.dumps(value), keep))

    def compare_and_set(self, key: str, expected: bytes | None, value: bytes) -> None:
        """Set ``key`` to ``value`` only if it still holds ``expected`` (None: absent) when
        the commit runs; otherwise the whole commit is refused as ``STALE`` and the batch
        is handled again on fresh state. For keys other writers share (the ESS, which
        operators change too)."""
        first = self.swaps.get(key)
        self.swaps[key] = (first[0] if first is not None else expected, value)

    def require_replica(self) -> None:
        """This commit records something an effect outside the bus will follow (an order
        intent the exchange is about to receive): the runner confirms it on the expected
        replicas (``WAIT``) before the service's next turn, or raises
        :class:`ReplicaUnconfirmed` and holds the service until a replica confirms."""
        self.durable = True

    def guard(self, key: str, member: str, score_ms: int, keep_ms: int) -> None:
        """Record ``member`` in the sorted set ``key`` (score: event time, ms) with the commit,
        which is refused (``DUPLICATE``) if ``member`` is already there: a durable "once".
        Members older than ``keep_ms`` before ``score_ms`` are pruned in the same commit, so
        the guard is bounded by time, not by a count."""
        self.guards.append((key, member, score_ms, keep_ms))

    @property
    def writes(self) -> bool:
        """Whether the commit changes the service's state (and so bumps its version)."""
        return bool(self.state or self.deletes or self.appends or self.guards or self.swaps)

    @property
    def empty(self) -> bool:
        return not (self.events or self.writes)


class Service(Protocol):
    """What a runner (the bus's or the engine's) needs from a service. A service reads the
    world only through the ports it was built with (:mod:`quantum.bus.ports`)."""

    name: str

    def restore(self) -> None:
        """Load committed state through the service's state port (at start, after a handler
        failure, after a refused commit and after a bus outage)."""

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        """Handle one event; record outputs and state writes in ``out``."""

    def on_batch_end(self, out: Outbox) -> None:
        """Called once per batch after its events (flush aggregated state)."""

    def on_idle(self, out: Outbox, now: float) -> None:
        """Called each loop turn, with wall time, for timers."""

    # Optional: ``after_commit()``, called after each commit the bus accepted (e.g. to copy
    # a book to a durable record of the service's own once it is committed); ``clock``, the
    # service's :class:`~quantum.bus.ports.Clock`, which the runner advances with each
    # event's time before the handler sees it.


class ServiceBase:
    """No-op defaults for the optional hooks of :class:`Service`."""

    name: str

    def restore(self) -> None:
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
    version_key: str | None = None  # a service owning state keys commits against its version
    fleet_key: str | None = None  # the fleet epoch (quantum.risk.fleetstate); None: unchecked


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
    reconnect_initial_s: float = 0.1  # back-off while the bus is unreachable, doubled …
    reconnect_max_s: float = 5.0  # … up to this
    stale_retries: int = 3  # a batch refused as STALE is reloaded and handled again this often
    replicas: int = 0  # replicas that must confirm a durable commit (Outbox.require_replica)
    replica_wait_ms: int = 1000  # how long they may take (WAIT's timeout)
    lease: bool = False  # active-standby: work only while holding the service's lease


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


def commit_script(
    client: redis.Redis, argv: list[str | bytes | int | float],
    wait: tuple[int, int] | None = None,
) -> Any:
    """Run :data:`COMMIT_SCRIPT` with ``argv``: packed by hiredis, one write, one reply.

    ``NOSCRIPT`` (a restarted or failed-over Redis has an empty script cache) is answered by
    sending the script itself once. A refusal raises :class:`CommitRefused`; a connection
    that failed mid-exchange is dropped rather than reused. ``wait`` = (replicas, ms): then
    ``WAIT`` on the same connection (it waits for this connection's last write) and
    :class:`ReplicaUnconfirmed` unless that many replicas hold the commit.
    """
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        for command in (("EVALSHA", COMMIT_SHA), ("EVAL", COMMIT_SCRIPT)):
            packed = hiredis.pack_command((*command, 0, *argv))  # type: ignore[arg-type]
            connection.send_packed_command([packed], check_health=False)
            try:
                reply = connection.read_response()
                if wait is not None:
                    _wait_replicas(connection, *wait)
                return reply
            except redis.exceptions.NoScriptError:
                continue
            except redis.ResponseError as e:
                text = str(e)
                for reason in ("NOTLEADER", "NOTOWNER", "STALE", "DUPLICATE"):
                    if text.startswith(reason):
                        raise CommitRefused(reason, text[len(reason):].strip()) from None
                raise
        raise RuntimeError("commit script could not be loaded")  # pragma: no cover
    except BaseException as e:
        if not isinstance(e, redis.ResponseError | CommitRefused):
            connection.disconnect()
        raise
    finally:
        pool.release(connection)


def _wait_replicas(connection: Any, replicas: int, wait_ms: int) -> None:
    packed = hiredis.pack_command(("WAIT", replicas, wait_ms))  # type: ignore[arg-type]
    connection.send_packed_command([packed], check_health=False)
    confirmed = int(connection.read_response())
    if confirmed < replicas:
        raise ReplicaUnconfirmed(confirmed, replicas, wait_ms)


def confirm_replicas(client: redis.Redis, probe: Command, replicas: int, wait_ms: int) -> None:
    """Whether everything written to the master so far is on ``replicas`` replicas: the
    write ``probe`` (any command the master replicates) then ``WAIT`` on one connection;
    the replication stream is ordered, so confirming the probe confirms every earlier
    write. Raises :class:`ReplicaUnconfirmed` otherwise."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command([hiredis.pack_command(probe)],  # type: ignore[arg-type]
                                       check_health=False)
        connection.read_response()
        _wait_replicas(connection, replicas, wait_ms)
    except BaseException as e:
        if not isinstance(e, redis.ResponseError):
            connection.disconnect()
        raise
    finally:
        pool.release(connection)


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
            client, subscription.service, self.consumer, self.config.heartbeat_ttl_s,
            watch_key=subscription.fleet_key,
        )
        self.notifier = self.beacon.notifier
        self._stopping = False
        self._last_claim = 0.0
        self._last_lag = 0.0
        self.failures: dict[str, str] = {}  # entry id -> last handler error
        self._keys = [spec.key for spec in subscription.consumes]
        self._name = subscription.service
        self._version = "0"  # the version of the state the service restored
        self._epoch: bytes | None = None  # the fleet epoch this process works under
        self._clock = getattr(service, "clock", None)
        self.outages = 0  # bus outages survived (tests and metrics)
        self.unconfirmed = 0  # durable commits no replica confirmed in time (tests, metrics)
        self._held: ReplicaUnconfirmed | None = None  # waiting for a replica to confirm
        self.refusals: dict[str, int] = defaultdict(int)  # commit refusals by reason
        self.lease = (Lease(client, subscription.service, self.consumer,
                            self.config.heartbeat_ttl_s) if self.config.lease else None)
        self._leading = self.lease is None  # this instance does the work
        self._lease_checked = 0.0  # monotonic time of the last renewal
        self._claim_due = False  # took over: claim every pending entry at once
        self.takeovers = 0  # leases taken over from another consumer (tests, metrics)
        if self.lease is not None:
            self.beacon.demoted()  # a standby until the lease says otherwise
            standing = getattr(service, "standing", None)
            if standing is not None:  # the service's Standing port follows the lease
                lease = self.lease
                standing.bind(lambda: self._leading and lease.held())
        # Exported from the start (at 0), so an alert on their increase sees the first one.
        metrics.REPLICA_UNCONFIRMED.labels(self._name)
        metrics.LEASE_TAKEOVERS.labels(self._name)
        metrics.SERVICE_ACTIVE.labels(self._name).set(1 if self._leading else 0)

    # --- lifecycle ------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def start(self) -> None:
        """Connect (waiting out an unreachable bus), create groups, restore, recover."""
        self._until_reachable(first=True)
        self.beacon.beat(force=True)
        self.notifier.ready()
        metrics.UP.labels(self._name).set(1)
        self.log.info("started", group=self.sub.group, streams=self._keys)

    def _resync(self) -> None:
        """(Re)establish everything the bus holds for this service: its groups, the fleet
        epoch, its restored state and its own pending entries."""
        for key in self._keys:
            ensure_group(self.client, key, self.sub.group)
        self._check_epoch(self.client.get(self.sub.fleet_key) if self.sub.fleet_key else None)
        if self.lease is not None:
            self._renew_lease()
        self._restore()
        if self._leading:
            self.recover_own_pending()
            self._claim_pending()

    # --- the lease (active-standby) -------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether this instance is the one doing the service's work."""
        return self._leading

    def _renew_lease(self) -> bool:
        """Renew or acquire the lease and follow what changed; returns whether this
        instance just became the active one (its state must be restored, its pending
        entries handled)."""
        assert self.lease is not None
        self._lease_checked = time.monotonic()
        before = self.lease.holder
        held, acquired = self.lease.renew()
        if held and (acquired or not self._leading):
            self._leading = True
            self._claim_due = True
            previous = None if before is None or before.raw == self.lease.value else before
            if previous is not None and previous.consumer != self.consumer:
                self.takeovers += 1
                metrics.LEASE_TAKEOVERS.labels(self._name).inc()
            metrics.SERVICE_ACTIVE.labels(self._name).set(1)
            self.beacon.promoted()
            self.notifier.status("running")
            self.log.warning("lease_acquired", lease=self.lease.key,
                             previous=None if previous is None else previous.consumer,
                             previous_host=None if previous is None else previous.host)
            return True
        if not held:
            holder = self.lease.holder
            if self._leading:
                self._demote(holder=None if holder is None else holder.consumer)
            else:
                if before is None or holder is None or before.raw != holder.raw:
                    self.log.info("standby", lease=self.lease.key,
                                  active=None if holder is None else holder.consumer,
                                  active_host=None if holder is None else holder.host)
                self._demote()
        return False

    def _demote(self, **detail: Any) -> None:
        """Stand by: no reads, no timers, no commits. With ``detail`` (the holder, or the
        commit script's refusal), the lease was held and is lost: logged as an error."""
        if detail:
            assert self.lease is not None
            self.log.error("lease_lost", lease=self.lease.key, **detail)
        self._leading = False
        self._claim_due = False
        metrics.SERVICE_ACTIVE.labels(self._name).set(0)
        self.beacon.demoted()
        self.notifier.status("standby")

    def _follow_lease(self) -> None:
        """Renew the lease once a second (or as soon as it lapsed locally); a new active
        instance restores its state and handles what is pending before it reads."""
        if self.lease is None:
            return
        if time.monotonic() - self._lease_checked >= 1.0 or not self.lease.held():
            if self._renew_lease():
                self._restore()
                self.recover_own_pending()
        if self._leading:
            self._claim_pending()

    def _claim_pending(self) -> None:
        """After a takeover: every entry pending on another consumer of the group is the
        old active one's unfinished work; claim it now rather than after claim_idle_ms."""
        if not self._claim_due:
            return
        self.reclaim(min_idle_ms=0)
        self._claim_due = False

    def _restore(self) -> None:
        if self.sub.version_key is not None:
            raw = self.client.get(self.sub.version_key)
            self._version = raw.decode() if raw else "0"
        self.service.restore()

    def run(self, max_idle_turns: int | None = None) -> None:
        """Loop until stopped. ``max_idle_turns`` ends it after that many empty reads (tests)."""
        self.start()
        idle = 0
        try:
            while not self._stopping:
                try:
                    handled = self.turn()
                except Exception as e:
                    if not bus_unavailable(e):
                        raise
                    self._until_reachable(first=False, error=e)
                    continue
                if handled:
                    idle = 0
                else:
                    idle += 1
                    if max_idle_turns is not None and idle >= max_idle_turns:
                        break
        finally:
            self.notifier.stopping()
            if self.lease is not None and self._leading:
                self.lease.release()  # the standby takes over at its next renewal
                self._leading = False
                metrics.SERVICE_ACTIVE.labels(self._name).set(0)
            metrics.UP.labels(self._name).set(0)
            self.log.info("stopped")

    def _until_reachable(self, *, first: bool, error: BaseException | None = None) -> None:
        """Retry with bounded back-off until the bus answers and the service is resynced.

        The process, its watchdog pings and its metrics stay alive meanwhile; a SIGTERM ends
        the wait. ``redis_unreachable`` is logged once per outage and exported as
        ``quantum_bus_redis_reachable`` 0.
        """
        delay = self.config.reconnect_initial_s
        started = time.monotonic()
        down = error is not None
        if down:
            self._outage_began(error)
        while not self._stopping:
            try:
                self.client.ping()
                self._resync()
                if self._held is not None:
                    self._confirm_held()
            except Exception as e:
                if not bus_unavailable(e):
                    raise
                if not down:
                    down = True
                    self._outage_began(e)
                self._sleep(delay)
                # Holding a lease (waiting for a replica, say): retry often enough to renew it.
                ceiling = (self.config.reconnect_max_s if self.lease is None else
                           min(self.config.reconnect_max_s, self.config.heartbeat_ttl_s / 3))
                delay = min(delay * 2, ceiling)
                continue
            break
        metrics.REDIS_REACHABLE.labels(self._name).set(1)
        if down:
            self.outages += 1
            self.notifier.status("running")
            self.log.warning("redis_reachable_again", after_s=round(time.monotonic() - started, 2),
                             first_start=first)

    def _confirm_held(self) -> None:
        """After a durable commit no replica confirmed: confirm everything written so far
        (the heartbeat as the probe write) before the service may send anything."""
        held = self._held
        assert held is not None
        confirm_replicas(self.client, self.beacon.command(), held.required,
                         self.config.replica_wait_ms)
        self._held = None
        self.log.warning("replica_confirmed", replicas=held.required)

    def _outage_began(self, error: BaseException | None) -> None:
        metrics.REDIS_REACHABLE.labels(self._name).set(0)
        metrics.BUS_OUTAGES.labels(self._name).inc()
        self.notifier.status("redis_unreachable")
        self.log.error("redis_unreachable", error=repr(error))
        self.client.connection_pool.disconnect()

    def _sleep(self, seconds: float) -> None:
        """Sleep while keeping the systemd watchdog fed; a stop request cuts it short."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            self.notifier.watchdog()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def _check_epoch(self, raw: bytes | None) -> None:
        """Compare the fleet epoch now in Redis with the one this process works under."""
        if self.sub.fleet_key is None or raw == self._epoch:
            return
        from quantum.risk import fleetstate  # the bus knows the risk layer only here

        now = fleetstate.parse(raw)
        before = self._epoch
        self._epoch = raw
        if now is not None and (before is None or now.after_loss):
            # First sight of the epoch (this process starting), or an operator's
            # re-initialisation after a loss that was already declared: adopt it.
            if before is not None or now.after_loss:
                self.log.warning("fleet epoch adopted", epoch=now.epoch, after_loss=now.after_loss)
            return
        detail = (
            "no fleet epoch in Redis (state lost, or never initialised: quantumctl init)"
            if now is None
            else "the fleet epoch changed (Redis replaced or restored from elsewhere)"
        )
        self.log.error("state_lost", detail=detail)
        metrics.STATE_LOST.labels(self._name).inc()
        fleetstate.declare_lost(self.client, self._name, detail)

    def turn(self) -> bool:
        """One loop turn; returns whether any entry was handled."""
        now = time.time()
        self._follow_lease()
        epoch = self.beacon.beat()
        if epoch is not None:
            self._check_epoch(epoch[0])
        if not self._leading:
            # Standby: no reads, no timers; look at the lease again in a second.
            self._sleep(1.0)
            return False
        out = Outbox(self.sub.produces)
        self.service.on_idle(out, now)
        self.service.on_batch_end(out)  # timers may change state: persist it with their events
        if not out.empty:
            try:
                self.commit(out, {}, [])
            except CommitRefused as e:
                self._refused(e)
                if not self._leading:
                    return False
        if now - self._last_claim >= self.config.claim_interval_s:
            self._last_claim = now
            self.reclaim()
        if now - self._last_lag >= 5.0:
            self._last_lag = now
            self.update_lag_metrics()
        # Stopping: read what is there without waiting. (BLOCK 0 would wait forever: a stop
        # requested during this turn's idle work then hung until the socket timed out, and
        # systemd SIGKILLed the unit at its TimeoutStopSec.)
        block = None if self._stopping else self.config.block_ms
        try:
            response = self.client.xreadgroup(
                self.sub.group,
                self.consumer,
                {key: ">" for key in self._keys},
                count=self.config.batch_size,
                block=block,
            )
        except redis.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self.log.error("consumer group missing; recreating", error=str(e))
            self._resync()
            return False
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

    def _refused(self, error: CommitRefused) -> None:
        """A commit the script refused: nothing was written. Reload the committed state."""
        self.refusals[error.reason] += 1
        metrics.COMMIT_REFUSED.labels(self._name, error.reason).inc()
        self.log.warning("commit refused; state reloaded", reason=error.reason,
                         detail=error.detail)
        if error.reason == "NOTLEADER" and self._leading:
            self._demote(detail=error.detail)  # another instance holds the lease now
        self._restore()

    # --- handling -------------------------------------------------------------------------

    def process(
        self, batch: Sequence[Delivered], delivery_counts: dict[str, int] | None = None
    ) -> None:
        for _attempt in range(self.config.stale_retries + 1):
            try:
                self._process(batch, delivery_counts)
                return
            except CommitRefused as e:
                self._refused(e)
                if e.reason in ("NOTOWNER", "NOTLEADER"):
                    return  # a peer holds these entries (or the lease) now: it handles them
        self.log.warning("batch left pending after repeated STALE commits", entries=len(batch))

    def _process(
        self, batch: Sequence[Delivered], delivery_counts: dict[str, int] | None
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
        except Exception as e:
            if bus_unavailable(e):
                raise
            metrics.HANDLER_ERRORS.labels(self._name).inc()
            self.log.warning("batch failed, retrying one by one", error=repr(e))
            self._restore()
            if dead:
                self.commit(Outbox(self.sub.produces), {}, dead)
            self._process_one_by_one(events)
            return
        try:
            self.commit(out, acks, dead)
        except CommitRefused as e:
            if e.reason != "DUPLICATE":
                raise
            # A guard another instance (or an earlier life) recorded: reload, and let the
            # handlers see it one event at a time.
            self._refused(e)
            if dead:
                self.commit(Outbox(self.sub.produces), {}, dead)
            self._process_one_by_one(events)
            return
        metrics.HANDLE_SECONDS.labels(self._name).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels(self._name).observe(len(batch))

    def _handle_one(self, event: Envelope[Any], out: Outbox) -> None:
        structlog.contextvars.bind_contextvars(trace_id=event.trace_id, event_id=event.id)
        if self._clock is not None:
            self._clock.observe(event.ts)
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
            except Exception as e:
                if bus_unavailable(e):
                    raise
                self.failures[item.entry_id] = repr(e)
                self.log.error(
                    "handler failed; entry left pending",
                    entry_id=item.entry_id,
                    stream=item.stream,
                    error=repr(e),
                    event_type=event.type,
                )
                self._restore()
                continue
            try:
                self.commit(out, {item.stream: [item.entry_id]}, [])
            except CommitRefused as e:
                self._refused(e)
                if e.reason in ("NOTOWNER", "NOTLEADER"):
                    return
                if e.reason == "DUPLICATE":
                    # The handler did not see the guard (its state predates it): the effect
                    # exists already, so the entry is done; ack it alone.
                    self.commit(Outbox(self.sub.produces), {item.stream: [item.entry_id]}, [])

    def commit(
        self, out: Outbox, acks: dict[str, list[str]], dead: list[tuple[Delivered, str]]
    ) -> None:
        """Outputs, state, dead letters and acks in one atomic script, checked first: every
        acked entry still ours, our state at the version we restored, no guard present."""
        commands, owned, produced = self._commands(out, acks, dead)
        versioned = self.sub.version_key is not None
        argv: list[str | bytes | int | float] = [
            self.sub.group,
            self.consumer,
            self.sub.version_key or "",
            self._version,
            "1" if versioned and out.writes else "0",
            self.lease.key if self.lease is not None else "",
            self.lease.value if self.lease is not None else "",
            sum(1 for ids in acks.values() if ids),
            *owned,
            len(out.guards),
        ]
        for key, member, _, _ in out.guards:
            argv += (key, member)
        argv.append(len(out.swaps))
        for key, (expected, _) in out.swaps.items():
            argv += (key, "0" if expected is None else "1", expected or b"")
        for command in commands:
            argv.append(len(command))
            argv.extend(command)
        wait = ((self.config.replicas, self.config.replica_wait_ms)
                if out.durable and self.config.replicas > 0 else None)
        try:
            reply = commit_script(self.client, argv, wait)
        except ReplicaUnconfirmed as e:
            # Fail closed: the commit is on the master only; nothing that follows from it
            # (an order to the exchange) may happen until a replica holds it.
            self._held = e
            self.unconfirmed += 1
            metrics.REPLICA_UNCONFIRMED.labels(self._name).inc()
            self.notifier.status("replica_unconfirmed")
            self.log.error("replica_unconfirmed", confirmed=e.confirmed, required=e.required,
                           wait_ms=self.config.replica_wait_ms)
            raise
        if versioned:
            self._version = _id(reply)
        after = getattr(self.service, "after_commit", None)
        if after is not None:
            after()
        for name, n in produced.items():
            metrics.PRODUCED.labels(self._name, name).inc(n)
        for stream, ids in acks.items():
            metrics.CONSUMED.labels(self._name, stream).inc(len(ids))
        for item, reason in dead:
            metrics.DLQ.labels(self._name, item.stream).inc()
            self.log.warning(
                "dead-lettered", stream=item.stream, entry_id=item.entry_id, reason=reason
            )

    def _commands(
        self, out: Outbox, acks: dict[str, list[str]], dead: list[tuple[Delivered, str]]
    ) -> tuple[list[Command], list[str | bytes | int | float], dict[str, int]]:
        """The commit's writes in order, the (stream, id) pairs it acks, events per stream."""
        commands: list[Command] = []
        produced: dict[str, int] = defaultdict(int)
        for spec, envelope in out.events:
            commands.append(xadd_command(spec.key, encode(envelope), spec.maxlen))
            produced[spec.name] += 1
        for key, value in out.state.items():
            ttl = out.ttls.get(key)
            commands.append(("SET", key, value) if ttl is None else ("SET", key, value, "EX", ttl))
        for key in out.deletes:
            commands.append(("DEL", key))
        for key, (_, value) in out.swaps.items():
            commands.append(("SET", key, value))
        for key, value, keep in out.appends:
            commands.append(("LPUSH", key, value))
            commands.append(("LTRIM", key, 0, keep - 1))
        for key, member, score, keep in out.guards:
            commands.append(("ZADD", key, score, member))
            commands.append(("ZREMRANGEBYSCORE", key, "-inf", f"({score - keep}"))
        for item, reason in dead:
            fields = dead_letter_fields(item, self.sub.group, reason)
            commands.append(xadd_command(DLQ.key, fields, DLQ.maxlen))
            acks.setdefault(item.stream, []).append(item.entry_id)
        owned: list[str | bytes | int | float] = []
        for stream, ids in acks.items():
            if not ids:
                continue
            for i in range(0, len(ids), ACK_CHUNK):
                commands.append(("XACK", stream, self.sub.group, *ids[i : i + ACK_CHUNK]))
            ordered = sorted(ids, key=_order)
            owned += (stream, ordered[0], ordered[-1], len(ids), *ids)
        if self.config.commit_channel is not None:
            commands.append(("PUBLISH", self.config.commit_channel, self._name))
        return commands, owned, produced

    # --- recovery -------------------------------------------------------------------------

    def recover_own_pending(self) -> None:
        """Handle entries this consumer read but never acked: a previous process died while
        handling them. One at a time, each claimed (charged a delivery) only when its turn
        comes, so an entry that kills the process is the only one charged for it, reaches
        the delivery limit alone and is dead-lettered; its batch-mates are handled."""
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
                for p in pending:
                    entry_id = _id(p["message_id"])
                    count = int(p["times_delivered"]) + 1
                    claimed = self.client.xclaim(key, self.sub.group, self.consumer, 0, [entry_id])
                    self._process_claimed(key, claimed, {entry_id: count}, [entry_id])

    def reclaim(self, min_idle_ms: int | None = None) -> None:
        """``XAUTOCLAIM`` entries idle on dead consumers (longer than ``claim_idle_ms``, or
        ``min_idle_ms``) and handle them here."""
        idle = self.config.claim_idle_ms if min_idle_ms is None else min_idle_ms
        for key in self._keys:
            start = "0-0"
            while True:
                result = self.client.xautoclaim(
                    key,
                    self.sub.group,
                    self.consumer,
                    idle,
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


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _id(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
