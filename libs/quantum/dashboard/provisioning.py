"""Prometheus scrape config and targets, and the Grafana dashboards.

``python -m quantum.dashboard.provisioning`` writes ``deploy/prometheus/prometheus.yml`` and
``deploy/grafana/dashboards/*.json``; ``--check`` lists files that differ (exit 1);
``--targets PATH`` writes the scrape targets (every registry service on its port) for
Prometheus's file-based discovery — at install time, so a service added to the registry is
scraped without a change to any file in git. The dashboards' queries are declared here as
data, so ``tests/integration/test_observability.py`` can hold every one of them (and every
alert expression) to series a running fleet really exports.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from quantum.registry.fleet import SERVICES

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS_CONFIG = "deploy/prometheus/prometheus.yml"
ALERT_RULES = "deploy/prometheus/alerts.yml"
DASHBOARD_DIR = "deploy/grafana/dashboards"
DATASOURCE_UID = "quantum-prometheus"
JOB = "quantum"


@dataclass(frozen=True)
class Panel:
    """One Grafana panel: a title, its PromQL queries (legend → expression) and a unit."""

    title: str
    queries: tuple[tuple[str, str], ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 12


DASHBOARDS: dict[str, tuple[str, tuple[Panel, ...]]] = {
    "quantum-trading": ("Quantum Trader — trading", (
        Panel("Equity and balance", (("equity", "quantum_portfolio_equity"),
                                     ("balance", "quantum_portfolio_balance")), "currencyUSD"),
        Panel("Drawdown from peak", (("drawdown", "max(quantum_portfolio_drawdown_ratio)"),
                                     ("daily", "max(quantum_risk_daily_drawdown)")),
              "percentunit"),
        Panel("Open positions", (("open", "quantum_portfolio_open_positions"),
                                 ("tracked by exit-brain", "quantum_exit_tracked_positions"))),
        Panel("Trades closed per hour by reason",
              (("{{reason}}", "sum by (reason) "
                              "(increase(quantum_execution_trades_closed_total[1h]))"),)),
        Panel("Execution reports per minute",
              (("{{kind}}", "sum by (kind) (rate(quantum_execution_reports_total[5m])) * 60"),)),
        Panel("Exits by reason per hour",
              (("{{reason}}", "sum by (reason) (increase(quantum_exit_harvests_total[1h]))"),)),
        Panel("Order to report latency p99 (journal)", (("p99", "histogram_quantile(0.99, sum by "
              "(le) (rate(quantum_journal_order_report_latency_seconds_bucket[10m])))"),), "s"),
        Panel("Entry orders per hour",
              (("{{side}}", "sum by (side) (increase(quantum_apply_orders_total[1h]))"),)),
        Panel("Ledger: venue income against the journal",
              (("open differences", "max(quantum_ledger_open_differences)"),
               ("largest difference (USDT)", "max(quantum_ledger_largest_difference_usdt)"))),
    )),
    "quantum-ai-risk": ("Quantum Trader — models and risk", (
        Panel("Emergency stop", (("tripped", "max(quantum_ess_tripped)"),
                                 ("paused", "max(quantum_trading_paused)")), kind="stat",
              width=6),
        Panel("Models served", (("model", "max(quantum_ai_model_loaded)"),), kind="stat",
              width=6),
        Panel("Signals per hour by direction",
              (("{{direction}}", "sum by (direction) (increase(quantum_ai_signals_total[1h]))"),)),
        Panel("Direction bias: LONG share of signals, up share of the market",
              (("{{share}}", "quantum_ai_direction_bias"),
               ("blocked", "max(quantum_ai_direction_bias_blocked)")), "percentunit"),
        Panel("Largest feature PSI", (("psi max", "quantum_ai_feature_psi_max"),)),
        Panel("Inference p95", (("p95", "histogram_quantile(0.95, sum by (le) "
                                 "(rate(quantum_ai_inference_seconds_bucket[5m])))"),), "s"),
        Panel("Risk decisions per hour",
              (("approved={{approved}}",
                "sum by (approved) (increase(quantum_risk_decisions_total[1h]))"),)),
        Panel("Rejections per hour by reason",
              (("{{reason}}", "sum by (reason) (increase(quantum_risk_rejections_total[1h]))"),)),
        Panel("Plans sized per hour",
              (("{{side}}", "sum by (side) (increase(quantum_bridge_plans_total[1h]))"),)),
    )),
    "quantum-fleet": ("Quantum Trader — fleet and bus", (
        Panel("Services with a heartbeat", (("{{service}}", "quantum_service_heartbeat_up"),),
              kind="stat", width=24),
        Panel("Active instance per service (its lease; by scrape target)",
              (("{{service}} on {{instance}}", "quantum_service_active"),
               ("takeovers in the last hour: {{service}}", "sum by (service) "
                "(increase(quantum_lease_takeovers_total[1h]))"))),
        Panel("Consumer group lag", (("{{stream}}/{{group}}", "quantum_stream_group_lag"),)),
        Panel("Pending (delivered, not acked)",
              (("{{stream}}/{{group}}", "quantum_stream_group_pending"),)),
        Panel("Consumed per second",
              (("{{service}} {{stream}}", "sum by (service, stream) "
                                          "(rate(quantum_bus_consumed_total[1m]))"),)),
        Panel("Produced per second",
              (("{{service}} {{stream}}", "sum by (service, stream) "
                                          "(rate(quantum_bus_produced_total[1m]))"),)),
        Panel("Batch handle time p99", (("{{service}}", "histogram_quantile(0.99, sum by "
              "(service, le) (rate(quantum_bus_handle_seconds_bucket[5m])))"),), "s"),
        Panel("Dead-letter stream length",
              (("dlq", 'max(quantum_stream_length{stream="dlq"})'),)),
        Panel("Stream lengths", (("{{stream}}", "quantum_stream_length"),)),
        Panel("Heartbeat age", (("{{service}}", "quantum_service_heartbeat_age_seconds"),), "s"),
        Panel("Journal", (("database up", "max(quantum_journal_database_up)"),
                          ("events/s", "sum(rate(quantum_journal_events_written_total[1m]))"))),
        Panel("Dashboard API p99", (("{{route}}", "histogram_quantile(0.99, sum by (route, le) "
              "(rate(quantum_dashboard_request_seconds_bucket[5m])))"),), "s"),
        Panel("Truth-map findings", (("{{kind}}", "quantum_truth_flags"),)),
    )),
}


ALERTMANAGER = "127.0.0.1:9093"  # deploy/alertmanager/alertmanager.yml listens here


def scrape_config(targets: dict[str, int] | None = None, interval: str = "15s",
                  rules: str = "alerts.yml", alertmanager: str | None = ALERTMANAGER) -> str:
    """``prometheus.yml``. Without ``targets`` (the shipped file) the fleet's targets come
    from file-based discovery, ``targets/*.json`` beside the config, which
    :func:`targets_json` renders from the registry at install time: the file in git does not
    change when a service is added. With ``targets`` (tests) they are listed statically."""
    lines = [
        "# Generated by `python -m quantum.dashboard.provisioning`; do not edit, regenerate.",
        "# Targets: `python -m quantum.dashboard.provisioning --targets",
        "# /etc/prometheus/targets/quantum.json` writes them from the fleet registry.",
        "global:",
        f"  scrape_interval: {interval}",
        f"  evaluation_interval: {interval}",
        "rule_files:",
        f"  - {rules}",
    ]
    if alertmanager:
        lines += ["alerting:", "  alertmanagers:", "    - static_configs:",
                  f"        - targets: ['{alertmanager}']"]
    lines += [
        "scrape_configs:",
        f"  - job_name: {JOB}",
        "    metrics_path: /metrics",
        # The dashboard's fleet gauges carry a `service` label of their own (the service
        # they describe); without this Prometheus would rename it to `exported_service`
        # and every alert grouped by service would see only `dashboard-api`.
        "    honor_labels: true",
    ]
    if targets is None:
        lines += ["    file_sd_configs:", "      - files: ['targets/*.json']",
                  "        refresh_interval: 1m"]
    else:
        lines.append("    static_configs:")
        for name, port in targets.items():
            lines += [f"      - targets: ['127.0.0.1:{port}']", "        labels:",
                      f"          service: {name}"]
    return "\n".join(lines) + "\n"


def targets_json() -> str:
    """File-based discovery targets: every registry service with a port, on loopback,
    labelled with its name (the label alerts and dashboards group by)."""
    groups = [{"targets": [f"127.0.0.1:{spec.port}"], "labels": {"service": spec.name}}
              for spec in SERVICES if spec.port]
    return json.dumps(groups, indent=2) + "\n"


def dashboard_json(uid: str) -> str:
    title, panels = DASHBOARDS[uid]
    rendered = []
    x = y = 0
    for number, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y = 0, y + 8
        rendered.append({
            "id": number,
            "type": panel.kind,
            "title": panel.title,
            "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
            "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
            "options": {},
            "targets": [
                {"refId": chr(ord("A") + index), "expr": expr, "legendFormat": legend,
                 "datasource": {"type": "prometheus", "uid": DATASOURCE_UID}}
                for index, (legend, expr) in enumerate(panel.queries)
            ],
        })
        x += panel.width
    document = {
        "uid": uid, "title": title, "tags": ["quantum-trader"], "timezone": "utc",
        "schemaVersion": 39, "version": 1, "editable": False, "refresh": "30s",
        "time": {"from": "now-24h", "to": "now"}, "panels": rendered,
        "templating": {"list": []}, "annotations": {"list": []},
    }
    return json.dumps(document, indent=2) + "\n"


def dashboard_queries() -> list[str]:
    return [expr for _, panels in DASHBOARDS.values() for p in panels for _, expr in p.queries]


def render() -> dict[str, str]:
    files = {PROMETHEUS_CONFIG: scrape_config()}
    for uid in DASHBOARDS:
        files[f"{DASHBOARD_DIR}/{uid}.json"] = dashboard_json(uid)
    return files


def check(root: Path = ROOT) -> list[str]:
    return [path for path, text in render().items()
            if not (root / path).is_file() or (root / path).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantum.dashboard.provisioning")
    parser.add_argument("--check", action="store_true", help="list differing files, exit 1")
    parser.add_argument("--targets", type=Path,
                        help="write the Prometheus file-discovery targets to this path")
    arguments = parser.parse_args(argv)
    if arguments.targets is not None:
        arguments.targets.parent.mkdir(parents=True, exist_ok=True)
        arguments.targets.write_text(targets_json())
        print(f"wrote: {arguments.targets}")
        return 0
    differing = check()
    if arguments.check:
        for path in differing:
            print(f"differs: {path}")
        return 1 if differing else 0
    for path in differing:
        target = ROOT / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render()[path])
        print(f"wrote: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
