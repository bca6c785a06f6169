"""Parity: the fleet (``replay``: a process per service on Redis) and the in-process engine
(``backtest``) run the same handlers over the same real bars and must agree exactly —
every trade (times, prices, quantities, fees, funding, exit reasons), the equity curve, the
final balance and how many events each stream carried. This is the project's answer to
backtests that disagree with live: there is one implementation, delivered two ways.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from quantum.engine.backtest import BacktestRequest, run_backtest
from quantum.ml.dataset import load_dataset
from quantum.ml.members import MemberConfig
from quantum.ml.registry import ModelRegistry
from quantum.ml.train import TrainConfig, train
from quantum.replay.orchestrator import ReplayRequest, run_replay

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
TINY = MemberConfig(tree_rounds=10, tree_depth=3, neural_steps=3, nhits_units=16,
                    patchtst_hidden=16, neural_series_bars=3000)


def both(tmp_path: Path, start: datetime, end: datetime,
         settings: tuple[tuple[str, str], ...] = (),
         policy: tuple[tuple[str, Any], ...] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    fleet = run_replay(ReplayRequest(
        data_dir=SAMPLE, symbols=SYMBOLS, start=start, end=end, speed=None,
        report_path=tmp_path / "replay.json", settings=settings, policy=policy))
    model = dict(settings).get("QT_MODEL_VERSION", "baseline")
    engine = run_backtest(BacktestRequest(
        data_dir=SAMPLE, symbols=SYMBOLS, start=start, end=end,
        report_path=tmp_path / "backtest.json", model=model,
        settings=tuple((k, v) for k, v in settings
                       if k not in ("QT_MODEL", "QT_MODEL_VERSION")), policy=policy))
    return fleet, engine


def assert_same_run(fleet: dict[str, Any], engine: dict[str, Any]) -> None:
    assert engine["trade_list"] == fleet["trade_list"]
    assert engine["final_balance"] == fleet["final_balance"]
    assert engine["equity_curve"] == fleet["equity_curve"]
    assert engine["exit_reasons"] == fleet["exit_reasons"]
    for name in ("net_pnl", "fees", "funding", "max_drawdown", "sharpe"):
        assert engine[name] == fleet[name], name
    assert engine["events"] == fleet["events"]  # every stream, event for event


def test_baseline_trades_identically_on_both_engines(tmp_path: Path) -> None:
    fleet, engine = both(tmp_path, datetime(2025, 9, 1, tzinfo=UTC),
                         datetime(2025, 9, 5, tzinfo=UTC))
    assert fleet["trades"] > 5, "the range must trade to prove anything"
    assert_same_run(fleet, engine)
    assert engine["replay"]["engine"] == "in-process"


def test_maker_entries_trade_identically_on_both_engines(tmp_path: Path) -> None:
    """Resting post-only entries (fills on trade-through, expiries) on the fleet and the
    engine alike."""
    maker = (("sizing.entry_order", "maker"), ("sizing.maker_offset_bps", 5.0))
    fleet, engine = both(tmp_path, datetime(2025, 9, 1, tzinfo=UTC),
                         datetime(2025, 9, 5, tzinfo=UTC), policy=maker)
    assert fleet["trades"] > 5, "the range must trade to prove anything"
    assert_same_run(fleet, engine)


@pytest.mark.slow
def test_the_ensemble_trades_identically_on_both_engines(tmp_path: Path) -> None:
    data = load_dataset(SAMPLE, SYMBOLS, start=datetime(2025, 9, 1, tzinfo=UTC),
                        end=datetime(2025, 9, 8, tzinfo=UTC))
    root = tmp_path / "models"
    version, _ = train(data, ModelRegistry(root), TrainConfig(folds=0, member=TINY))
    settings = (("QT_MODEL", "ensemble"), ("QT_MODELS_DIR", str(root)),
                ("QT_MODEL_VERSION", version), ("QT_MIN_CONFIDENCE", "0.5"))
    # The tiny ensemble is rarely confident: let sizing and risk take its 0.5 calls too.
    looser = (("risk.min_confidence", 0.5), ("sizing.min_confidence", 0.5))
    fleet, engine = both(tmp_path, datetime(2025, 9, 8, tzinfo=UTC),
                         datetime(2025, 9, 11, tzinfo=UTC), settings, looser)
    assert fleet["events"]["ai.signal_generated"] > 0
    assert fleet["trades"] > 0, "a tiny ensemble at 0.5 confidence must act at least once"
    assert_same_run(fleet, engine)


def test_one_process_and_the_two_stage_pipeline_agree(tmp_path: Path) -> None:
    """The pipeline (signal stage in a child process) is only a way of using two cores."""
    runs = [run_backtest(BacktestRequest(
        data_dir=SAMPLE, symbols=SYMBOLS, start=datetime(2025, 9, 1, tzinfo=UTC),
        end=datetime(2025, 9, 4, tzinfo=UTC), report_path=None), processes=n)
        for n in (1, 2)]
    assert runs[0]["replay"]["processes"] == 1 and runs[1]["replay"]["processes"] == 2
    assert runs[0]["trades"] > 0
    for name in ("trade_list", "equity_curve", "final_balance", "events"):
        assert runs[0][name] == runs[1][name], name
