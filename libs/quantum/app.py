"""Start a service from its registry entry: settings, logging, Redis, metrics, runner."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import redis

from quantum.bus.runner import Runner, RunnerConfig, Service, Subscription
from quantum.config import ConfigError, FleetSettings, load
from quantum.contracts.events import EVENT_TYPES
from quantum.observability import logging as qlog
from quantum.observability import metrics
from quantum.registry.fleet import ServiceSpec, all_setting_keys, service

S = TypeVar("S", bound=FleetSettings)
COMMIT_CHANNEL = "quantum:replay:commits"  # replay only: wakes the barrier after each commit


def connect(url: str) -> redis.Redis:
    """A Redis client that has answered a PING; a clear error names the URL if not."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3, health_check_interval=30)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise ConfigError(f"cannot reach Redis at {url}: {e}") from None
    return client


def subscription(spec: ServiceSpec) -> Subscription:
    return Subscription(
        service=spec.name,
        group=spec.group,
        consumes=spec.consumes,
        produces=frozenset(stream.name for stream in spec.produces),
    )


def runner_config(settings: FleetSettings) -> RunnerConfig:
    return RunnerConfig(
        batch_size=settings.batch_size,
        block_ms=settings.block_ms,
        claim_idle_ms=settings.claim_idle_ms,
        claim_interval_s=settings.claim_interval_s,
        max_deliveries=settings.max_deliveries,
        heartbeat_ttl_s=settings.heartbeat_ttl_s,
        instance=settings.instance,
        commit_channel=COMMIT_CHANNEL if settings.clock == "event" else None,
    )


def build_runner(
    name: str, settings: FleetSettings, client: redis.Redis, service_obj: Service
) -> Runner:
    return Runner(
        client, service_obj, subscription(service(name)), EVENT_TYPES, runner_config(settings)
    )


def run_service(
    name: str,
    settings_cls: type[S],
    build: Callable[[S, redis.Redis], Service],
) -> None:
    """The body of every consuming service's ``__main__``."""
    spec = service(name)
    settings = load(settings_cls, known=all_setting_keys())
    log = qlog.configure(name, settings.log_level)
    client = connect(settings.redis_url)
    metrics.serve(spec.port if settings.metrics_port == -1 else settings.metrics_port)
    runner = build_runner(name, settings, client, build(settings, client))
    runner.install_signal_handlers()
    log.info("starting", redis=_redact_url(settings.redis_url))
    runner.run()


def _redact_url(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
