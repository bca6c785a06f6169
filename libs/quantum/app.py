"""Start a service from its registry entry: settings, logging, Redis, metrics, runner."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis
import structlog

from quantum.bus import connection
from quantum.bus.lease import Lease
from quantum.bus.ports import Ports
from quantum.bus.redisports import redis_ports
from quantum.bus.runner import Runner, RunnerConfig, Service, Subscription, bus_unavailable
from quantum.config import ConfigError, FleetSettings, load
from quantum.contracts.events import EVENT_TYPES
from quantum.observability import logging as qlog
from quantum.observability import metrics
from quantum.observability.heartbeat import Beacon
from quantum.observability.systemd import Notifier
from quantum.registry.fleet import (
    FLEET_KEY,
    ServiceSpec,
    all_setting_keys,
    factory,
    service,
    version_key,
)

S = TypeVar("S", bound=FleetSettings)
COMMIT_CHANNEL = "quantum:replay:commits"  # replay only: wakes the barrier after each commit


# Longest a command may take before the client gives up and the runner treats the bus as
# unreachable (a ``CLIENT PAUSE``, a hung server): above the longest ``XREADGROUP BLOCK``.
SOCKET_TIMEOUT_S = 65.0


def connect(url: str, *, socket_timeout: float = SOCKET_TIMEOUT_S) -> redis.Redis:
    """A Redis client for ``url``, direct or through Sentinel (:mod:`quantum.bus.connection`).
    A URL that cannot be parsed is a configuration error
    (exit 78, the key named); an unreachable server is not: callers wait for it
    (:func:`wait_for_redis`, the runner's reconnect), since a Redis that restarts must not
    take the fleet down with it."""
    try:
        return connection.connect(url, socket_connect_timeout=3, socket_timeout=socket_timeout,
                                  health_check_interval=30)
    except ValueError as e:
        raise ConfigError(f"bad setting QT_REDIS_URL: {e} (got {_redact_url(url)!r})") from None


def wait_for_redis(client: redis.Redis, name: str, stop: Callable[[], bool] = lambda: False,
                   max_delay_s: float = 5.0) -> bool:
    """PING until Redis answers, with bounded back-off, feeding the systemd watchdog and
    logging ``redis_unreachable`` once. Returns False if ``stop()`` became true first."""
    log = structlog.get_logger(service=name)
    notifier = Notifier()
    delay, said = 0.1, False
    while not stop():
        try:
            client.ping()
            if said:
                log.warning("redis_reachable_again")
            metrics.REDIS_REACHABLE.labels(name).set(1)
            return True
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            if not said:
                said = True
                metrics.REDIS_REACHABLE.labels(name).set(0)
                notifier.status("redis_unreachable")
                log.error("redis_unreachable", error=repr(e))
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not stop():
            notifier.watchdog()
            time.sleep(0.1)
        delay = min(delay * 2, max_delay_s)
    return False


def subscription(spec: ServiceSpec) -> Subscription:
    return Subscription(
        service=spec.name,
        group=spec.group,
        consumes=spec.consumes,
        produces=frozenset(stream.name for stream in spec.produces),
        version_key=version_key(spec),
        fleet_key=FLEET_KEY,
    )


def runner_config(settings: FleetSettings) -> RunnerConfig:
    return RunnerConfig(
        batch_size=settings.batch_size,
        block_ms=settings.block_ms,
        claim_idle_ms=settings.claim_idle_ms,
        claim_interval_s=settings.claim_interval_s,
        max_deliveries=settings.max_deliveries,
        heartbeat_ttl_s=settings.heartbeat_ttl_s,
        instance=settings.consumer_instance,
        commit_channel=COMMIT_CHANNEL if settings.clock == "event" else None,
        replicas=settings.replicas_required,
        replica_wait_ms=settings.replica_wait_ms,
    )


def ports_for(settings: FleetSettings, client: redis.Redis) -> Ports:
    """A fleet service's ports on Redis (its clock from ``QT_CLOCK``)."""
    event = settings.clock == "event"
    return redis_ports(client, EVENT_TYPES, event_clock=event,
                       settle_channel=COMMIT_CHANNEL if event else None)


def build_service(name: str, settings: FleetSettings, client: redis.Redis) -> Service:
    """The registry's service ``name`` built on Redis, as its unit runs it: one line for a
    test or a tool that needs one real service."""
    built: Service = factory(service(name))(settings, ports_for(settings, client))
    return built


def build_runner(
    name: str, settings: FleetSettings, client: redis.Redis, service_obj: Service,
    runner: type[Runner] = Runner,
) -> Runner:
    spec = service(name)
    config = runner_config(settings)
    config.lease = spec.placement == "active-standby"
    return runner(client, service_obj, subscription(spec), EVENT_TYPES, config)


@dataclass
class Started(Generic[S]):
    """A process that has its settings, logging, metrics and a Redis that answered."""

    settings: S
    log: Any
    client: redis.Redis
    stop: threading.Event  # set by SIGTERM or SIGINT


def start(
    name: str, settings_cls: type[S], check: Callable[[S], None] = lambda _: None
) -> Started[S] | None:
    """The start-up every fleet process shares: settings (refused with the key named, and
    ``check``-ed before anything else happens), JSON logging, the metrics port, SIGTERM and
    SIGINT, then Redis waited for. None when asked to stop before Redis answered."""
    spec = service(name)
    settings = load(settings_cls, known=all_setting_keys())
    check(settings)
    log = qlog.configure(name, settings.log_level)
    client = connect(settings.redis_url)
    metrics.serve(spec.port if settings.metrics_port == -1 else settings.metrics_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if not wait_for_redis(client, name, stop.is_set):
        return None
    return Started(settings, log, client, stop)


def run_service(
    name: str,
    settings_cls: type[S],
    build: Callable[[S, Ports], Service],
    runner: type[Runner] = Runner,
) -> None:
    """The body of every consuming service's ``__main__``: :func:`start`, then the service
    on its ports and the runner."""
    started = start(name, settings_cls)
    if started is None:
        return
    settings, client = started.settings, started.client
    loop = build_runner(name, settings, client, build(settings, ports_for(settings, client)),
                        runner)
    loop.install_signal_handlers()
    started.log.info("starting", redis=_redact_url(settings.redis_url))
    loop.run()


EXIT_LEASE_LOST = 75  # EX_TEMPFAIL: systemd restarts the process, which waits as the standby


class PublisherLease:
    """The active-standby lease (:mod:`quantum.bus.lease`) for a service that publishes
    outside the runner (a live market feed). :meth:`acquire` waits as the standby until this
    instance holds the lease; :meth:`keep`, called from the feed's liveness callback, renews
    it once a second. Losing it (another instance took over while this one was cut off)
    sets ``stop`` and :attr:`lost`; :meth:`hold` then exits with :data:`EXIT_LEASE_LOST` and
    systemd restarts the process, as the standby. A bus outage is not a loss: the next
    renewal that reaches Redis decides."""

    def __init__(self, started: Started[Any], name: str, beacon: Beacon) -> None:
        self.name, self.beacon, self.stop, self.log = name, beacon, started.stop, started.log
        settings = started.settings
        self.lease = Lease(started.client, name, f"{name}-{settings.consumer_instance}",
                           settings.heartbeat_ttl_s)
        self.lost = False
        self._checked = 0.0
        metrics.LEASE_TAKEOVERS.labels(name)  # exported at 0 from the start

    def hold(self, body: Callable[[], None]) -> None:
        """Wait for the lease, run ``body`` (the feed) while holding it, give it up; a lease
        lost meanwhile ends the process with :data:`EXIT_LEASE_LOST`."""
        if self.acquire():
            try:
                body()
            finally:
                self.release()
        self.beacon.notifier.stopping()
        if self.lost:
            sys.exit(EXIT_LEASE_LOST)

    def acquire(self) -> bool:
        """Wait (beating as a standby) until the lease is held; False if stopped first."""
        self.beacon.demoted()
        said = False
        while not self.stop.is_set():
            try:
                previous = self.lease.holder
                held, _ = self.lease.renew()
                if held:
                    self._checked = time.monotonic()
                    self.beacon.promoted()
                    metrics.SERVICE_ACTIVE.labels(self.name).set(1)
                    if previous is not None and previous.consumer != self.lease.consumer:
                        metrics.LEASE_TAKEOVERS.labels(self.name).inc()
                    self.log.warning("lease_acquired", lease=self.lease.key,
                                     previous=previous.consumer if previous else None)
                    return True
                self.beacon.beat()
                if not said:
                    said = True
                    holder = self.lease.holder
                    metrics.SERVICE_ACTIVE.labels(self.name).set(0)
                    self.beacon.notifier.status("standby")
                    self.log.info("standby", lease=self.lease.key,
                                  active=holder.consumer if holder else None,
                                  active_host=holder.host if holder else None)
            except Exception as e:
                if not bus_unavailable(e):
                    raise
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and not self.stop.is_set():
                self.beacon.notifier.watchdog()
                time.sleep(0.1)
        return False

    def keep(self) -> None:
        """Renew (at most once a second); a lease another instance holds now stops the feed."""
        if self.lost or time.monotonic() - self._checked < 1.0:
            return
        self._checked = time.monotonic()
        try:
            held, _ = self.lease.renew()
        except Exception as e:
            if not bus_unavailable(e):
                raise
            return
        if not held:
            self.lost = True
            holder = self.lease.holder
            metrics.SERVICE_ACTIVE.labels(self.name).set(0)
            self.log.error("lease_lost", lease=self.lease.key,
                           holder=holder.consumer if holder else None)
            self.stop.set()

    def release(self) -> None:
        if not self.lost:
            self.lease.release()
            metrics.SERVICE_ACTIVE.labels(self.name).set(0)


def _redact_url(url: str) -> str:
    return connection.redact(url)
