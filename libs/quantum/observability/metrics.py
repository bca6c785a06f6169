"""Prometheus metrics of the bus runner; services add their own beside these."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

CONSUMED = Counter("quantum_bus_consumed_total", "Entries handled and acked", ["service", "stream"])
PRODUCED = Counter("quantum_bus_produced_total", "Entries published", ["service", "stream"])
DLQ = Counter(
    "quantum_bus_dlq_total", "Entries moved to the dead-letter stream", ["service", "stream"]
)
HANDLE_SECONDS = Histogram(
    "quantum_bus_handle_seconds",
    "Time to handle and commit one batch",
    ["service"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_SIZE = Histogram(
    "quantum_bus_batch_entries",
    "Entries per batch",
    ["service"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 1000),
)
GROUP_LAG = Gauge(
    "quantum_bus_group_lag",
    "Entries in the stream not yet delivered to the group",
    ["service", "stream"],
)
GROUP_PENDING = Gauge(
    "quantum_bus_group_pending",
    "Entries delivered to the group and not acked",
    ["service", "stream"],
)
RECLAIMED = Counter(
    "quantum_bus_reclaimed_total", "Entries reclaimed from dead consumers", ["service", "stream"]
)
HANDLER_ERRORS = Counter("quantum_bus_handler_errors_total", "Handler exceptions", ["service"])
REDIS_REACHABLE = Gauge(
    "quantum_bus_redis_reachable", "1 while the service reaches Redis, 0 during an outage",
    ["service"],
)
BUS_OUTAGES = Counter("quantum_bus_outages_total", "Bus outages survived", ["service"])
SERVICE_ACTIVE = Gauge(
    "quantum_service_active",
    "1 while this instance holds its service's lease (the active one), 0 as a standby",
    ["service"],
)
LEASE_TAKEOVERS = Counter(
    "quantum_lease_takeovers_total",
    "Times this instance took its service's lease over from another instance",
    ["service"],
)
REPLICA_UNCONFIRMED = Counter(
    "quantum_bus_replica_unconfirmed_total",
    "Commits recording an order intent that no replica confirmed in time (order held)",
    ["service"],
)
COMMIT_REFUSED = Counter(
    "quantum_bus_commit_refused_total",
    "Commits refused before writing (NOTOWNER, STALE, DUPLICATE)",
    ["service", "reason"],
)
STATE_LOST = Counter(
    "quantum_bus_state_lost_total", "Times the service found the fleet's state lost", ["service"]
)
UP = Gauge("quantum_service_up", "1 while the service loop runs", ["service"])


def serve(port: int) -> None:
    """Expose ``/metrics`` on ``port`` (0 = disabled)."""
    if port > 0:
        try:
            start_http_server(port, addr="127.0.0.1")
        except OSError as e:
            from quantum.config import ConfigError

            raise ConfigError(
                f"bad setting QT_METRICS_PORT: port {port} on 127.0.0.1 is not available "
                f"({e.strerror or e})"
            ) from None
