"""End-to-end replays of real data through the real fleet processes.

Each replay starts every service as its own process on a private Redis, exactly as
``quantumctl replay`` does; the assertions read what the services wrote to the streams.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from quantum.replay.orchestrator import ReplayError, ReplayRequest, run_replay
from quantum.replay.report import payloads

SYMBOLS = ("BTCUSDT", "ETHUSDT")
START = datetime(2025, 9, 1, tzinfo=UTC)
END = datetime(2025, 9, 6, tzinfo=UTC)  # 1,440 bars a symbol: 512 of warm-up, then trading


def replay(
    sample_dir: Path, tmp_path: Path, redis_url: str | None,
    progress: Callable[[int, int], None] | None = None, **kwargs: Any,
) -> dict[str, Any]:
    request = ReplayRequest(
        data_dir=sample_dir,
        symbols=SYMBOLS,
        start=START,
        end=END,
        report_path=tmp_path / "report.json",
        redis_url=redis_url,
        log_dir=tmp_path / "logs",
        **kwargs,
    )
    return run_replay(request, progress=progress)


@pytest.fixture(scope="module")
def replayed(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], redis.Redis]:
    """One full-speed replay into the test Redis, kept for the invariant tests."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    sample = Path(__file__).resolve().parents[3] / "data" / "sample"
    report = replay(sample, tmp_path_factory.mktemp("replay"), redis_url, speed=None)
    return report, client


def stream(client: redis.Redis, name: str) -> list[dict[str, Any]]:
    return payloads(client, f"quantum:stream:{name}")


def test_report_has_the_promised_figures(replayed: tuple[dict[str, Any], redis.Redis]) -> None:
    report, _ = replayed
    for key in (
        "initial_balance",
        "final_balance",
        "trades",
        "win_rate",
        "net_pnl",
        "fees",
        "max_drawdown",
        "sharpe",
        "events",
        "klines",
        "wall_seconds",
        "klines_per_second",
    ):
        assert key in report
    assert report["klines"] == 2 * 1440
    assert report["events"]["market.klines"] == 2 * 1440
    assert report["trades"] > 0, "the slice should trade; otherwise the invariants prove nothing"
    assert report["open_positions_at_end"] == 0


def test_every_intent_gets_exactly_one_decision(
    replayed: tuple[dict[str, Any], redis.Redis],
) -> None:
    _, client = replayed
    intents = [i["intent_id"] for i in stream(client, "trade.intent")]
    plans = {p["plan_id"]: p["intent_id"] for p in stream(client, "apply.plan")}
    decisions = Counter(plans[d["plan_id"]] for d in stream(client, "risk.decision"))
    assert len(intents) == len(set(intents)) > 0
    assert all(decisions[i] == 1 for i in intents)
    assert sum(decisions.values()) == len(intents)


def test_every_approval_yields_exactly_one_order(
    replayed: tuple[dict[str, Any], redis.Redis],
) -> None:
    _, client = replayed
    approved = sorted(d["plan_id"] for d in stream(client, "risk.decision") if d["approved"])
    orders = sorted(o["plan_id"] for o in stream(client, "apply.result"))
    assert approved and approved == orders
    assert len(set(orders)) == len(orders)


def test_positions_equal_the_sum_of_fills(replayed: tuple[dict[str, Any], redis.Redis]) -> None:
    _, client = replayed
    open_quantity: dict[str, float] = defaultdict(float)
    for report in stream(client, "execution.result"):
        if report["kind"] != "fill":
            continue
        sign = -1.0 if report["reduce_only"] else 1.0
        open_quantity[report["position_id"]] += sign * report["quantity"]
        assert math.isclose(
            open_quantity[report["position_id"]],
            report["position_quantity"],
            rel_tol=1e-9,
            abs_tol=1e-12,
        )
    portfolio = orjson.loads(client.get("quantum:state:portfolio"))
    held = {p["position_id"]: p["quantity"] for p in portfolio["positions"]}
    for position_id, quantity in open_quantity.items():
        assert math.isclose(quantity, held.get(position_id, 0.0), abs_tol=1e-9)
    trades = {t["trade_id"]: t for t in stream(client, "trade.closed")}
    entries = {
        r["position_id"]: r["quantity"]
        for r in stream(client, "execution.result")
        if r["kind"] == "fill" and not r["reduce_only"]
    }
    assert set(trades) == set(entries)
    for trade_id, trade in trades.items():
        assert math.isclose(trade["quantity"], entries[trade_id], rel_tol=1e-12)


def test_balance_equals_initial_plus_net_pnl_with_fees_counted_once(
    replayed: tuple[dict[str, Any], redis.Redis],
) -> None:
    report, client = replayed
    trades = stream(client, "trade.closed")
    fill_fees = sum(r["fee"] for r in stream(client, "execution.result") if r["kind"] == "fill")
    assert math.isclose(sum(t["fees"] for t in trades), fill_fees, rel_tol=1e-9)
    assert math.isclose(
        report["final_balance"],
        report["initial_balance"] + report["net_pnl"],
        rel_tol=0,
        abs_tol=1e-6,
    )
    for trade in trades:
        assert math.isclose(
            trade["net_pnl"], trade["gross_pnl"] - trade["fees"] - trade["funding"], abs_tol=1e-9
        )


def test_orders_fill_at_the_next_bar_open(replayed: tuple[dict[str, Any], redis.Redis]) -> None:
    _, client = replayed
    bars = {(k["symbol"], k["open_time"]): k for k in stream(client, "market.klines")}
    orders = {o["plan_id"]: o for o in stream(client, "apply.result")}
    for fill in stream(client, "execution.result"):
        if fill["kind"] != "fill" or fill["reduce_only"]:
            continue
        order = orders[fill["plan_id"]]
        next_bar = bars[(fill["symbol"], order["bar_time"] + 1)]
        slip = 2.0 / 10_000
        expected = next_bar["open"] * (1 + slip if fill["side"] == "BUY" else 1 - slip)
        assert math.isclose(fill["price"], expected, rel_tol=1e-12)
        assert fill["ts"] == next_bar["close_time"]


def test_replay_is_deterministic_across_speeds(
    replayed: tuple[dict[str, Any], redis.Redis],
    sample_dir: Path,
    tmp_path: Path,
) -> None:
    report, _ = replayed
    # 5-minute bars at 60,000× real time: 5 ms of wall time per bar, paced by the clock,
    # on a private Redis of its own.
    paced = replay(sample_dir, tmp_path, None, speed=60_000.0)
    assert paced["trade_list"] == report["trade_list"]
    assert paced["final_balance"] == report["final_balance"]
    assert paced["events"] == report["events"]


def test_a_killed_publisher_resumes_and_the_trades_do_not_change(
    replayed: tuple[dict[str, Any], redis.Redis],
    sample_dir: Path,
    tmp_path: Path,
) -> None:
    report, _ = replayed
    killed: list[int] = []

    def kill_publisher_once(done: int, total: int) -> None:
        if killed or done < total // 3:
            return
        for pid in _children_running("services.market_publisher"):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    resumed = replay(sample_dir, tmp_path, None, kill_publisher_once, speed=None)
    assert killed, "the publisher was never seen running"
    assert resumed["trade_list"] == report["trade_list"]
    assert resumed["final_balance"] == report["final_balance"]
    # It resumed after the last step on the streams: nothing was published twice.
    assert resumed["events"] == report["events"]
    assert "replay resuming" in (tmp_path / "logs" / "market-publisher.log").read_text()


def test_a_failed_replay_keeps_its_logs_and_says_where(sample_dir: Path, tmp_path: Path) -> None:
    # A setting every service refuses (exit 78): the supervisor gives up at once.
    request = ReplayRequest(data_dir=sample_dir, symbols=SYMBOLS, start=START, end=END,
                            report_path=tmp_path / "report.json", redis_url=None, speed=None,
                            settings=(("QT_BATCH_SIZE", "abc"),))
    with pytest.raises(ReplayError) as failed:
        run_replay(request)
    message = str(failed.value)
    assert "\n" not in message
    match = re.search(r"its log: (\S+\.log)", message)
    assert match, message
    log = Path(match.group(1))
    try:
        assert log.is_file()
        assert "QT_BATCH_SIZE" in log.read_text()
    finally:
        shutil.rmtree(log.parent, ignore_errors=True)
    assert not (tmp_path / "report.json").exists()


def _children_running(module: str) -> list[int]:
    """Descendant processes of this test whose command line runs ``module``."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if module.encode() in cmdline and ppid == me:
            found.append(int(entry.name))
    return found
