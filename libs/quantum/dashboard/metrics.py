"""The dashboard's ``/metrics``: its own request metrics and fleet-wide gauges.

Each service exports what it does (``quantum_bus_*``, ``quantum_ai_*`` …). What belongs to
no single service — the emergency stop state, every stream's length and each group's lag as
Redis sees it, heartbeat ages, the journal's peak-to-trough drawdown — is collected here on
each scrape from the truth map, so alerts on them do not depend on the service they watch
being alive (a dead consumer exports no lag; Redis still knows it).
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from quantum.dashboard import live, queries
from quantum.dashboard.backend import DashboardBackend
from quantum.journal.database import UNAVAILABLE_ERRORS

log = structlog.get_logger(service="dashboard-api")


class FleetCollector(Collector):
    """Gauges derived from Redis and the journal at scrape time."""

    def __init__(self, backend: DashboardBackend) -> None:
        self.backend = backend

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._fleet()
        except redis.RedisError as e:
            log.warning("fleet metrics unavailable", error=repr(e))
        try:
            yield from self._journal()
        except UNAVAILABLE_ERRORS as e:
            log.warning("journal metrics unavailable", error=repr(e))

    def _fleet(self) -> Iterator[Metric]:
        from quantum.ctl.truth import truth_map

        document = truth_map(self.backend.client, self.backend.supervisor_state())
        ess = live.ess_state(self.backend.client)
        tripped = GaugeMetricFamily("quantum_ess_tripped", "1 while the emergency stop is tripped")
        tripped.add_metric([], 1.0 if ess["tripped"] else 0.0)
        paused = GaugeMetricFamily("quantum_trading_paused", "1 while an operator paused trading")
        paused.add_metric([], 1.0 if ess["paused"] else 0.0)
        trips = GaugeMetricFamily("quantum_ess_trips", "Emergency stop trips so far (state key)")
        trips.add_metric([], float(ess["trips"]))
        yield from (tripped, paused, trips)
        length = GaugeMetricFamily("quantum_stream_length", "Entries in the stream",
                                   labels=["stream"])
        lag = GaugeMetricFamily("quantum_stream_group_lag",
                                "Entries not yet delivered to the group",
                                labels=["stream", "group"])
        pending = GaugeMetricFamily("quantum_stream_group_pending",
                                    "Entries delivered to the group and not acked",
                                    labels=["stream", "group"])
        for row in document["streams"]:
            length.add_metric([row["name"]], float(row["length"]))
            for group in row["groups"]:
                lag.add_metric([row["name"], group["name"]], float(group["lag"]))
                pending.add_metric([row["name"], group["name"]], float(group["pending"]))
        yield from (length, lag, pending)
        alive = GaugeMetricFamily("quantum_service_heartbeat_up",
                                  "1 while the service's heartbeat key exists",
                                  labels=["service", "required"])
        age = GaugeMetricFamily("quantum_service_heartbeat_age_seconds",
                                "Seconds since the service's last heartbeat", labels=["service"])
        # The pid in the heartbeat: a restart changes it, so changes() over a window counts
        # restarts under systemd too, where process_* metrics are hidden (ProcSubset=pid).
        pid = GaugeMetricFamily("quantum_service_process_id",
                                "Process id in the service's heartbeat", labels=["service"])
        for service in document["services"]:
            up = service["state"] == "up"
            required = str(service["required"]).lower()
            alive.add_metric([service["name"], required], 1.0 if up else 0.0)
            if service["heartbeat_age_s"] is not None:
                age.add_metric([service["name"]], float(service["heartbeat_age_s"]))
            if isinstance(service.get("pid"), int):
                pid.add_metric([service["name"]], float(service["pid"]))
        flags = GaugeMetricFamily("quantum_truth_flags", "Truth-map findings by kind",
                                  labels=["kind"])
        counts: dict[str, int] = {}
        for flag in document["flags"]:
            counts[flag["kind"]] = counts.get(flag["kind"], 0) + 1
        for kind in ("missing_heartbeat", "gave_up", "dead_stream", "missing_group",
                     "orphan_group", "undeclared_stream", "undeclared_state_key"):
            flags.add_metric([kind], float(counts.get(kind, 0)))
        yield from (alive, age, pid, flags)
        yield from timer_metrics(self.backend.client)

    def _journal(self) -> Iterator[Metric]:
        snapshot = queries.latest_snapshot(self.backend.journal())
        if snapshot is None:
            return
        drawdown = GaugeMetricFamily("quantum_portfolio_drawdown_ratio",
                                     "1 - equity / peak equity, from the journal")
        drawdown.add_metric([], float(snapshot["drawdown"]))
        peak = GaugeMetricFamily("quantum_portfolio_peak_equity",
                                 "Highest equity the journal has recorded")
        peak.add_metric([], float(snapshot["peak_equity"]))
        yield from (drawdown, peak)


def timer_metrics(client: redis.Redis) -> Iterator[Metric]:
    """Each registry timer's period, and its last success where one is recorded
    (``quantumctl timer run``); QuantumTimerNotSucceeding compares the two."""
    from quantum.ctl.timers import last_results
    from quantum.registry.fleet import TIMERS

    results = last_results(client)
    period = GaugeMetricFamily("quantum_timer_period_seconds",
                               "The interval a periodic job is meant to run at",
                               labels=["timer"])
    success = GaugeMetricFamily("quantum_timer_last_success_timestamp_seconds",
                                "Unix time of the periodic job's last success",
                                labels=["timer"])
    for timer in TIMERS:
        period.add_metric([timer.name], float(timer.period_seconds))
        last = results.get(timer.name, {}).get("last_success")
        if isinstance(last, int | float):
            success.add_metric([timer.name], float(last))
    yield from (period, success)


class RequestMetrics:
    """Request counts and latency of the dashboard API, per route template."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("quantum_dashboard_requests_total", "HTTP requests answered",
                                ["route", "method", "status"], registry=registry)
        self.seconds = Histogram("quantum_dashboard_request_seconds", "Time to answer a request",
                                 ["route"], registry=registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                          0.5, 1, 2.5))
        self.websockets = Counter("quantum_dashboard_websocket_messages_total",
                                  "Messages pushed over /ws/dashboard", registry=registry)
