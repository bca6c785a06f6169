"""Measure the streaming path's cost per bar on real sample data.

The feature-publisher updates every symbol on every closed bar, so this cost bounds how many
symbols one process can serve. Run::

    .venv/bin/python -m quantum.features.benchmark --bars 10000 BTCUSDT ETHUSDT

It prints the mean cost per bar over a tight loop (the honest throughput number) and
percentiles of individually timed updates (timer overhead included), warm-up bars excluded.

With ``--universe`` it times both paths over every symbol of ``--data`` with their funding
and mark files, as training and a backtest's priming run them::

    .venv/bin/python -m quantum.features.benchmark --universe --data ../shared/data/futures
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd

from quantum.features.schema import FEATURE_NAMES, WARMUP_BARS
from quantum.features.streaming import StreamingFeatures

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "data" / "sample"


def load_bars(path: Path, bars: int) -> list[tuple[float, float, float, float, float]]:
    """The first ``bars`` bars of a ``<SYMBOL>-5m.csv.gz`` file as plain float tuples."""
    frame = pd.read_csv(path, nrows=bars)
    columns = frame[["open", "high", "low", "close", "volume"]].astype("float64")
    return [tuple(map(float, row)) for row in columns.itertuples(index=False)]  # type: ignore[misc]


def measure(bars: list[tuple[float, float, float, float, float]]) -> dict[str, float]:
    """Microseconds per bar: loop mean after warm-up, and p50/p99 of single updates."""
    warm, timed = bars[:WARMUP_BARS], bars[WARMUP_BARS:]
    if not timed:
        raise ValueError(f"need more than {WARMUP_BARS} bars to measure")

    features = StreamingFeatures()
    for bar in warm:
        features.update(*bar)
    started = time.perf_counter()
    for bar in timed:
        features.update(*bar)
    loop_mean = (time.perf_counter() - started) / len(timed) * 1e6

    features = StreamingFeatures()
    for bar in warm:
        features.update(*bar)
    samples = []
    clock = time.perf_counter_ns
    for bar in timed:
        before = clock()
        features.update(*bar)
        samples.append((clock() - before) / 1e3)
    percentiles = statistics.quantiles(samples, n=100)
    return {"mean_us": loop_mean, "p50_us": percentiles[49], "p99_us": percentiles[98],
            "bars": float(len(timed))}


def measure_universe(data_dir: Path) -> dict[str, float]:
    """Seconds to load every symbol of ``data_dir``, to compute the batch features
    (:func:`compute_universe`) and to run the streaming path (:func:`stream_tables`): wall
    time, and this process's CPU time beside it (``*_cpu_s``), which a loaded machine does
    not inflate."""
    from quantum.features.universe import compute_universe, stream_tables, symbol_frame
    from quantum.replay.data import available_symbols, load_symbol

    wall, cpu = time.perf_counter, time.process_time
    started = (wall(), cpu())
    data = {s: load_symbol(data_dir, s) for s in available_symbols(data_dir)}
    loaded = (wall(), cpu())
    compute_universe({s: symbol_frame(d) for s, d in data.items()})
    batch = (wall(), cpu())
    stream_tables(data)
    streamed = (wall(), cpu())
    result = {"symbols": float(len(data)),
              "bars": float(sum(d.open_time.size for d in data.values()))}
    for name, (begin, end) in (("load", (started, loaded)), ("batch", (loaded, batch)),
                               ("stream", (batch, streamed))):
        result[f"{name}_s"] = end[0] - begin[0]
        result[f"{name}_cpu_s"] = end[1] - begin[1]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("symbols", nargs="*", default=["BTCUSDT", "ETHUSDT"])
    parser.add_argument("--bars", type=int, default=10_000, help="bars per symbol")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="sample directory")
    parser.add_argument("--universe", action="store_true",
                        help="time batch and streaming over every symbol of --data")
    args = parser.parse_args(argv)
    if args.universe:
        u = measure_universe(args.data)
        per_bar = u["stream_cpu_s"] / u["bars"] * 1e6
        print(f"{int(u['symbols'])} symbols, {int(u['bars'])} bars (wall s / CPU s):"
              f" load {u['load_s']:.1f} / {u['load_cpu_s']:.1f},"
              f" batch {u['batch_s']:.1f} / {u['batch_cpu_s']:.1f},"
              f" streaming {u['stream_s']:.1f} / {u['stream_cpu_s']:.1f}"
              f" ({per_bar:.0f} CPU us/bar)")
        return
    print(f"{len(FEATURE_NAMES)} features, warm-up {WARMUP_BARS} bars (not timed)")
    for symbol in args.symbols:
        result = measure(load_bars(args.data / f"{symbol}-5m.csv.gz", args.bars))
        print(f"{symbol}: {result['mean_us']:.1f} us/bar mean over {int(result['bars'])} bars"
              f" (single-update p50 {result['p50_us']:.1f} us, p99 {result['p99_us']:.1f} us)")


if __name__ == "__main__":
    main()
