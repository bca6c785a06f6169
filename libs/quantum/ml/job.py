"""One retraining run as a separate process: ``python -m quantum.ml.job …``.

The CLM service starts this process instead of training in its own loop, so its runner
keeps acknowledging events and beating its heartbeat while the members train. The result
(a new candidate version, or the error) is written as JSON to ``--result``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantum.ml.job")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--result", required=True, type=Path)
    parser.add_argument("--symbols", default="")
    parser.add_argument("--lookback-days", type=float, default=60.0)
    parser.add_argument("--members", default="xgboost,lightgbm,nhits,patchtst")
    parser.add_argument("--folds", type=int, default=0)
    parser.add_argument("--neural-steps", type=int, default=300)
    parser.add_argument("--tree-rounds", type=int, default=300)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        version, manifest = run(args)
        result = {"succeeded": True, "candidate": version,
                  "detail": manifest["walk_forward"]["verdict"]["summary"]}
    except (ValueError, OSError, RuntimeError) as e:
        result = {"succeeded": False, "candidate": None, "detail": f"{type(e).__name__}: {e}"}
    result["seconds"] = time.perf_counter() - started
    args.result.write_text(json.dumps(result))
    return 0 if result["succeeded"] else 1


def run(args: argparse.Namespace) -> tuple[str, dict]:
    from quantum.ml.dataset import load_dataset
    from quantum.ml.members import MemberConfig
    from quantum.ml.registry import ModelRegistry
    from quantum.ml.train import TrainConfig, train

    symbols = tuple(s for s in args.symbols.split(",") if s) or None
    data = load_dataset(args.data, symbols)
    newest = int(data.open_time.max())
    recent = np.flatnonzero(data.open_time >= newest - int(args.lookback_days * 86_400_000))
    data = data.subset(recent)
    members = tuple(m for m in args.members.split(",") if m)
    config = TrainConfig(members=members, folds=args.folds, quorum=min(3, len(members)),
                         member=MemberConfig(neural_steps=args.neural_steps,
                                             tree_rounds=args.tree_rounds))
    return train(data, ModelRegistry(args.out), config, source=str(args.data))


if __name__ == "__main__":
    sys.exit(main())
