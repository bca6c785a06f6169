"""The in-process backtest beside the fleet replay, on the same bars in the same run.

* ``baseline``: ``quantumctl backtest`` over five symbols of ``data/sample`` (10 days, 3 in
  quick mode) with the baseline model, on every core (the two-stage pipeline) and on one
  (every service in this process), with where the time goes per kline (each service's
  handlers and commits, the step building, the engine's own delivery).
* ``ensemble``: the same range served by the four-member ensemble (the registry's active
  version under ``models/``, else a small one trained here first).
* ``replay``: the fleet (a process per service on a private Redis) over the same range,
  and whether both engines made exactly the same trades (they must: the parity test holds
  them to it; the benchmark says so again on its own figures).

Targets from the engine issue: ≥ 10,000 klines/s with the baseline, ≥ 2,000 with the
ensemble, on this 2-core machine.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SYMBOLS = ("BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
START = datetime(2025, 9, 1, tzinfo=UTC)
TARGET_BASELINE = 10_000
TARGET_ENSEMBLE = 2_000


def _backtest(days: int, processes: int | None, **extra: Any) -> dict[str, Any]:
    from quantum.engine.backtest import BacktestRequest, run_backtest

    request = BacktestRequest(data_dir=SAMPLE, symbols=SYMBOLS, start=START,
                              end=START + timedelta(days=days), report_path=None, **extra)
    started = time.perf_counter()
    report = run_backtest(request, processes=processes)
    report["total_seconds"] = time.perf_counter() - started
    return report


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    """klines/s and the time per kline by stage (µs), from the engine's own profile."""
    klines = int(report["klines"])
    run = report["replay"]
    wall = float(report["wall_seconds"])
    profile = run["profile"]
    per_kline = {name: round(entry["seconds"] / klines * 1e6, 2)
                 for name, entry in profile.items()}
    split = run["processes"] == 2
    from quantum.engine.pipeline import SIGNAL_SERVICES

    here = sum(entry["seconds"] for name, entry in profile.items()
               if not (split and name in SIGNAL_SERVICES))
    loop = run.get("loop_seconds", {})
    for name, seconds in loop.items():
        per_kline[name] = round(seconds / klines * 1e6, 2)
    per_kline["delivery, scheduling and commits (the rest of the run)"] = round(
        max(wall - here - sum(loop.values()), 0.0) / klines * 1e6, 2)
    return {
        "klines": klines,
        "klines_per_second": round(float(report["klines_per_second"]), 1),
        "processes": run["processes"],
        "wall_seconds": round(wall, 3),
        "setup_seconds": round(float(report["setup_seconds"]), 3),
        "total_seconds": round(float(report["total_seconds"]), 3),
        "trades": report["trades"],
        "us_per_kline": per_kline,
        "note": "with 2 processes the signal stage (feature-publisher, ai-engine) runs in the "
                "child, in parallel: its rows are its own time, not part of the wall time"
        if split else "every service in one process",
    }


def _ensemble_version(workdir: Path) -> tuple[Path, str, str]:
    from quantum.ml.registry import ModelRefused, ModelRegistry

    registry = ModelRegistry(ROOT / "models")
    try:
        ensemble = registry.load()
        if len(ensemble.members) == 4:
            return ROOT / "models", ensemble.version, "models/ active version"
    except ModelRefused:
        pass
    from quantum.ml.dataset import load_dataset
    from quantum.ml.members import MemberConfig
    from quantum.ml.train import TrainConfig, train

    data = load_dataset(SAMPLE, ("BTCUSDT", "ETHUSDT"))
    version, _ = train(data, ModelRegistry(workdir), TrainConfig(
        folds=0, member=MemberConfig(tree_rounds=100, neural_steps=20)))
    return workdir, version, "trained for the benchmark (small)"


def _replay(days: int, workdir: Path) -> dict[str, Any]:
    from quantum.replay.orchestrator import ReplayRequest, run_replay

    return run_replay(ReplayRequest(
        data_dir=SAMPLE, symbols=SYMBOLS, start=START, end=START + timedelta(days=days),
        speed=None, report_path=workdir / "replay.json"))


def run(quick: bool) -> dict[str, Any]:
    days = 3 if quick else 10
    with tempfile.TemporaryDirectory(prefix="quantum-bench-backtest-") as directory:
        workdir = Path(directory)
        parallel = _backtest(days, None)
        single = _backtest(days, 1)
        models, version, origin = _ensemble_version(workdir)
        ensemble = _backtest(days, None, model=version,
                             settings=(("QT_MODELS_DIR", str(models)),))
        fleet = _replay(days, workdir)
    same = all(fleet[k] == parallel[k] for k in ("trade_list", "final_balance", "events"))
    baseline_rate = float(parallel["klines_per_second"])
    ensemble_rate = float(ensemble["klines_per_second"])
    return {
        "range": {"symbols": list(SYMBOLS), "start": START.isoformat(), "days": days,
                  "data": "data/sample"},
        "baseline": _figures(parallel),
        "baseline_one_process": _figures(single),
        "ensemble": {**_figures(ensemble), "model": f"{version} ({origin})"},
        "replay": {"klines_per_second": round(float(fleet["klines_per_second"]), 1),
                   "wall_seconds": round(float(fleet["wall_seconds"]), 3),
                   "setup_seconds": round(float(fleet["setup_seconds"]), 3),
                   "trades": fleet["trades"]},
        "backtest_to_replay_ratio": round(baseline_rate / float(fleet["klines_per_second"]), 1),
        "same_trades_as_the_fleet": same,
        "targets": {
            "baseline_klines_per_second": TARGET_BASELINE,
            "baseline_met": baseline_rate >= TARGET_BASELINE,
            "ensemble_klines_per_second": TARGET_ENSEMBLE,
            "ensemble_met": ensemble_rate >= TARGET_ENSEMBLE,
        },
    }
