"""The bus and fleet benchmarks on tiny workloads: they measure the real code paths.

Figures are not asserted (benchmarks measure, never assert); what is checked is that each
measurement did the work it claims, e.g. every consumer group drained and acked.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from bench import bus, fleet
from quantum.replay.orchestrator import ReplayRequest


def test_bus_measurement_runs_the_real_runner_and_acks_everything(r: redis.Redis) -> None:
    workload = bus.Workload(events=300, events_at_batch_1=40, repeats=1, profile_events=200)
    figures = bus.measure(r, workload)
    assert 250 < figures["workload"]["entry_bytes_mean"] < 450  # "about 300 bytes"
    for section in (figures["publish"], figures["consume"]["sink"], figures["consume"]["relay"]):
        assert set(section) == {"batch_1", "batch_10", "batch_100"}
        assert all(entry["events_per_second"] > 0 for entry in section.values())
    groups = r.xinfo_groups(bus.INPUT.key)
    assert len(groups) == 1 + 6 + 1  # raw reference, 2 services x 3 batch sizes, profiled
    assert all(group["pending"] == 0 for group in groups)
    profile = figures["profile_relay_batch_100"]
    assert profile["events"] >= 200
    assert abs(sum(profile["share_by_component"].values()) - 1.0) < 0.01


def test_unordered_fleet_reference_drains_the_whole_range(tmp_path: Path) -> None:
    start = datetime(2025, 9, 1, tzinfo=UTC)
    request = ReplayRequest(data_dir=fleet.SAMPLE, symbols=("BTCUSDT", "ETHUSDT"), start=start,
                            end=start + timedelta(hours=12), speed=None,
                            report_path=tmp_path / "report.json")
    figures = fleet.unordered(request, tmp_path / "logs")
    assert figures["klines"] == 2 * 144
    assert figures["events"]["market.klines"] == 2 * 144
    assert figures["events"]["market.tick"] == 2 * 144 + 1  # and the end-of-data event
    assert figures["klines_per_second"] > 0


def test_backtest_figures_account_for_the_run() -> None:
    from bench import backtest

    figures = backtest._figures(backtest._backtest(1, 1))
    assert figures["processes"] == 1 and figures["klines"] == 5 * 288
    stages = figures["us_per_kline"]
    assert {"execution", "feature-publisher", "ai-engine"} <= set(stages)
    per_kline = 1e6 / figures["klines_per_second"]  # one process: the stages are the run
    assert abs(sum(stages.values()) - per_kline) / per_kline < 0.05
