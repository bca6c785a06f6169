"""The promotion backtest as a separate process: ``python -m services.clm.judge …``.

The CLM starts this when a shadow test has seen its window, so its own loop keeps acking
and beating while two full backtests run. Both run through the in-process engine
(:func:`quantum.engine.backtest.run_backtest`: the fleet's real handlers, sizing, risk,
exits, fees, slippage and funding) over the same bars — the shadow window, preceded by the
features' warm-up bars, in which no decision is made — once with the candidate version and
once with the active one, with the live risk and sizing policy. The decision is
:func:`quantum.ml.shadow.backtest_verdict`; the result (both models' figures, the decision
and why, or why no backtest could run) is written as JSON to ``--result``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantum.features import WARMUP_BARS

BAR_MS = 300_000


def window(first_ms: int, last_ms: int) -> tuple[datetime, datetime]:
    """The backtest range for a shadow window of bars closing at ``first_ms``…``last_ms``:
    from the warm-up before the first bar to just after the last one."""
    first_open = first_ms + 1 - BAR_MS
    start = first_open - (WARMUP_BARS - 1) * BAR_MS
    return (datetime.fromtimestamp(start / 1000, tz=UTC),
            datetime.fromtimestamp((last_ms + 1) / 1000, tz=UTC))


def judge(data_dir: Path, models_dir: Path, candidate: str, active: str,
          symbols: tuple[str, ...], first_ms: int, last_ms: int, policy: dict[str, Any],
          brake: float, margin: float) -> dict[str, Any]:
    from quantum.engine.backtest import BacktestError, BacktestRequest, run_backtest
    from quantum.ml.shadow import backtest_figures, backtest_verdict

    start, end = window(first_ms, last_ms)
    figures: dict[str, dict[str, float]] = {}
    for role, version in (("candidate", candidate), ("active", active)):
        request = BacktestRequest(
            data_dir=data_dir, symbols=symbols, start=start, end=end, report_path=None,
            model=version, settings=(("QT_MODELS_DIR", str(models_dir)),),
            policy=tuple(policy.items()))
        try:
            figures[role] = backtest_figures(run_backtest(request, processes=1))
        except BacktestError as e:
            return {"ran": False, "promote": False,
                    "reason": f"no promotion: the {role} backtest could not run: {e}"}
    promote, reason = backtest_verdict(figures["candidate"], figures["active"], brake, margin)
    return {"ran": True, "promote": promote, "reason": reason, "candidate": figures["candidate"],
            "active": figures["active"], "start": start.isoformat(), "end": end.isoformat()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.clm.judge")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--models", required=True, type=Path)
    parser.add_argument("--candidate", required=True)
    parser.add_argument("--active", required=True)
    parser.add_argument("--symbols", required=True)
    parser.add_argument("--first-ms", required=True, type=int)
    parser.add_argument("--last-ms", required=True, type=int)
    parser.add_argument("--policy", default="{}", help="policy store keys (JSON object)")
    parser.add_argument("--brake", required=True, type=float)
    parser.add_argument("--margin", default=0.0, type=float)
    parser.add_argument("--result", required=True, type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        result = judge(args.data, args.models, args.candidate, args.active,
                       tuple(s for s in args.symbols.split(",") if s), args.first_ms,
                       args.last_ms, json.loads(args.policy), args.brake, args.margin)
    except (ValueError, OSError, RuntimeError) as e:
        result = {"ran": False, "promote": False,
                  "reason": f"no promotion: the backtest failed: {type(e).__name__}: {e}"}
    result["seconds"] = time.perf_counter() - started
    args.result.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
