"""``quantumctl optimize`` on a tiny search: reproducible with a seed, and shared by two
workers through one PostgreSQL study (Optuna's RDB storage), each running its own trials.

Every trial is a real walk over the validation blocks through the engine (two symbols, two
folds of the bundled sample, an edge model of a few boosting rounds), so the search is the
one research runs, only smaller.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from quantum.journal import postgres
from quantum.ml.edge import EdgeConfig
from quantum.research.optimize import SearchSpace, run_optimize, storage_url
from quantum.research.walkforward import Research, StrategyParams, WalkForwardConfig

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "data" / "sample"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
START, END = "2025-09-25T00:00:00Z", "2025-10-31T00:00:00Z"
TINY = WalkForwardConfig(folds=2, edge=EdgeConfig(rounds=5, leaves=7, min_rows_leaf=100),
                         params=StrategyParams(horizon=12))
SPACE = SearchSpace(horizons=(12, 48))


def research(work: Path) -> Research:
    return Research(SAMPLE, SYMBOLS, work, TINY, start=datetime.fromisoformat(START),
                    end=datetime.fromisoformat(END).astimezone(UTC), progress=lambda _: None,
                    processes=1)


def test_the_same_seed_finds_the_same_best_trial(tmp_path: Path) -> None:
    shared = research(tmp_path / "work")  # models trained once, reused by both searches
    first = run_optimize(shared, trials=3, study_name="a", storage=None, seed=5, space=SPACE,
                         final=False, progress=lambda _: None)
    second = run_optimize(shared, trials=3, study_name="b", storage=None, seed=5, space=SPACE,
                          final=False, progress=lambda _: None)
    assert first["trials"] == second["trials"] == 3
    assert first["best"]["params"] == second["best"]["params"]
    assert first["best"]["score"] == pytest.approx(second["best"]["score"])
    assert first["best"]["validation"] == second["best"]["validation"]


@pytest.fixture
def study_database() -> Iterator[str]:
    reason = postgres.ensure()
    if reason is not None:
        pytest.skip(f"PostgreSQL unavailable: {reason}")
    url = postgres.create_database(prefix="qt_optuna")
    try:
        yield url
    finally:
        postgres.drop_database(url)


def worker(url: str, seed: int, work: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "quantum.ctl", "optimize", "--data", str(SAMPLE),
         "--symbols", ",".join(SYMBOLS), "--start", START, "--end", END, "--folds", "2",
         "--rounds", "5", "--horizons", "12,48", "--trials", "2", "--study", "shared",
         "--storage", url, "--seed", str(seed), "--no-final", "--work", str(work), "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_workers_on_one_postgresql_study_split_its_trials(study_database: str,
                                                              tmp_path: Path) -> None:
    import optuna

    workers = [worker(study_database, seed, tmp_path / f"w{seed}") for seed in (1, 2)]
    outputs: list[Any] = [w.communicate(timeout=900) for w in workers]
    for process, (_, err) in zip(workers, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="shared", storage=storage_url(study_database))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4
    assert sorted(t.number for t in done) == [0, 1, 2, 3]  # handed out once each
    by_worker: dict[str, int] = {}
    for trial in done:
        by_worker[trial.user_attrs["worker"]] = by_worker.get(trial.user_attrs["worker"], 0) + 1
    assert sorted(by_worker.values()) == [2, 2]  # each worker ran its own two
    assert "password" not in outputs[0][0]


def test_a_bad_storage_url_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quantum.ctl", "optimize", "--data", str(SAMPLE), "--symbols",
         "BTCUSDT", "--storage", "mysql://x@y/z", "--trials", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--storage must be a postgresql:// or sqlite:/// URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_walkforward_reports_every_strategy_on_every_test_block(tmp_path: Path) -> None:
    from quantum.research.walkforward import run_walkforward

    report = run_walkforward(research(tmp_path / "work"), progress=lambda _: None)
    assert len(report["folds"]) == 2
    names = {"edge", "flat", "buy_and_hold", "momentum", "baseline"}
    fields = {"net_return", "sharpe", "max_drawdown", "trades", "fees", "funding", "turnover",
              "exposure", "long_share", "short_share"}
    for fold in report["folds"]:
        assert set(fold["results"]) == names
        assert all(fields <= set(row) for row in fold["results"].values())
        assert fold["results"]["flat"]["trades"] == 0
        assert fold["calibration"]["rows"] > 0  # the edge model's calibration on the test block
        # nothing of the test block was used to fit: the model's train range ends before it
        assert fold["train"][1] <= fold["test"][0]
    assert set(report["total"]) == names
    assert report["verdict"]["folds"] == 2


def test_bad_walkforward_arguments_are_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quantum.ctl", "walkforward", "--data", str(SAMPLE),
         "--symbols", "BTCUSDT", "--entry", "limit"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--entry must be taker or maker" in result.stderr
    assert "Traceback" not in result.stderr
