"""The features of schema version 2: funding, basis, regime, BTC's state, beta to BTC and the
cross-sectional ranks, on real bars, funding rates and mark prices from ``data/sample``.

Streaming (the publisher's :class:`UniverseFeatures`, fed bar time by bar time with each
bar's replay tick) equals batch (:func:`compute_universe`) for every feature; nothing at bar
``t`` moves when anything after ``t``'s close does (for the cross-symbol inputs: when any
symbol's bar ``t`` does); a missing input is the same, flagged, in both paths.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantum.features import (
    CONTEXT_NAMES,
    CROSS_NAMES,
    FEATURE_NAMES,
    PARAMETERS,
    WARMUP_BARS,
    UniverseFeatures,
    compute_universe,
    stream_tables,
    symbol_frame,
)
from quantum.market.replay import ReplaySource
from quantum.replay.data import HOUR_MS, SymbolData, load_symbol

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "data" / "sample"
BARS = 2200
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
STEP = 300_000
TOLERANCE = 1e-9
FLAGS = ("funding_available", "basis_available", "btc_available", "beta_available",
         "xs_available")


def cut(data: SymbolData, bars: int) -> SymbolData:
    return replace(data, open_time=data.open_time[:bars], ohlcv=data.ohlcv[:bars])


@pytest.fixture(scope="module")
def sample() -> dict[str, SymbolData]:
    return {s: cut(load_symbol(SAMPLE, s), BARS) for s in SYMBOLS}


def batch_of(data: dict[str, SymbolData]) -> dict[str, pd.DataFrame]:
    return compute_universe({s: symbol_frame(d) for s, d in data.items()})


def streamed(tables: dict[int, dict[str, float] | None]) -> pd.DataFrame:
    rows = {t: v for t, v in tables.items() if v is not None}
    return pd.DataFrame.from_dict(rows, orient="index")[list(FEATURE_NAMES)]


def assert_paths_agree(data: dict[str, SymbolData]) -> dict[str, pd.DataFrame]:
    """Both paths over ``data``; every feature of every symbol within TOLERANCE, every
    streamed value finite, the batch NaN exactly in the warm-up. Returns the batch."""
    batch = batch_of(data)
    tables = stream_tables(data)
    for symbol in data:
        stream = streamed(tables[symbol])
        expected = batch[symbol]
        assert expected.iloc[: WARMUP_BARS - 1].isna().all().all()
        assert list(stream.index) == list(expected.index[WARMUP_BARS - 1 :])
        assert np.isfinite(stream.to_numpy()).all()
        error = (stream - expected.loc[stream.index]).abs() / np.maximum(
            expected.loc[stream.index].abs(), 1.0)
        worst = error.max()
        bad = worst[~(worst <= TOLERANCE)]
        assert bad.empty, f"{symbol}: streaming differs from batch: {bad.to_dict()}"
    return batch


def test_streaming_equals_batch_for_every_feature_across_four_symbols(
        sample: dict[str, SymbolData]) -> None:
    batch = assert_paths_agree(sample)
    for symbol, frame in batch.items():
        warm = frame.iloc[WARMUP_BARS - 1 :]
        # Real inputs everywhere: every group is available (BTC's state and the ranks from
        # the second warmed bar on, when a warmed previous bar exists).
        for flag in FLAGS:
            assert warm[flag].iloc[1:].eq(1.0).all(), (symbol, flag)
        assert warm["funding_rate"].abs().max() > 0 and warm["funding_change"].abs().max() > 0
        assert warm["basis"].abs().max() > 0
        for name in ("xs_mom_rank_48", f"xs_mom_rank_{PARAMETERS.long_momentum}",
                     "xs_vol_rank_48"):
            sixths = warm[name].iloc[1:].to_numpy() * 6  # (less + ties / 2) / 3
            assert np.allclose(sixths, np.round(sixths)) and warm[name].between(0, 1).all()
        assert warm["regime_vol"].isin([-1.0, 0.0, 1.0]).all()
        assert warm["regime_trend"].isin([0.0, 1.0]).all()
    assert (batch["BTCUSDT"][f"beta_btc_{PARAMETERS.beta_window}"].iloc[WARMUP_BARS:]
            == 1.0).all()
    eth = batch["ETHUSDT"].iloc[WARMUP_BARS:]
    assert np.array_equal(eth["btc_ret_12"].to_numpy(),
                          batch["BTCUSDT"]["roc_12"].shift(1).loc[eth.index].to_numpy())
    # The three ranks of one bar time are a permutation of the cross-section's ranks.
    ranks = pd.concat([batch[s]["xs_vol_rank_48"] for s in SYMBOLS], axis=1).iloc[WARMUP_BARS:]
    assert np.allclose(np.sort(ranks.to_numpy(), axis=1), [0, 1 / 3, 2 / 3, 1])


def test_funding_is_known_from_the_bar_after_its_settlement_tick(
        sample: dict[str, SymbolData]) -> None:
    data = sample["BTCUSDT"]
    frame = batch_of({"BTCUSDT": data})["BTCUSDT"]
    times = data.open_time
    settlements = sorted(t for t in data.funding if times[WARMUP_BARS] < t < times[-1])
    for first, second in pairwise(settlements):
        # The settlement at `second` rides on the tick of the bar closing at it (opening at
        # second - STEP); it is a feature from the bar opening at `second`.
        assert frame.loc[second - STEP, "funding_rate"] == data.funding[first]
        assert frame.loc[second, "funding_rate"] == data.funding[second]
        assert frame.loc[second, "funding_change"] == data.funding[second] - data.funding[first]
    # The basis uses the last 1h mark closed at or before the bar's close.
    hour = int(times[WARMUP_BARS + 100] // HOUR_MS * HOUR_MS)
    mark = data.mark_close[np.searchsorted(data.mark_open_time, hour - HOUR_MS)]
    close = data.ohlcv[np.searchsorted(times, hour - STEP), 3]
    assert frame.loc[hour - STEP, "basis"] == mark / close - 1.0


def perturbed_after(data: SymbolData, position: int, seed: int) -> SymbolData:
    """``data`` with everything after bar ``position``'s close changed: later bars scaled
    (still valid bars), later funding settlements (the one at this bar's close included)
    and later mark klines replaced."""
    rng = np.random.default_rng(seed)
    ohlcv = data.ohlcv.copy()
    later = slice(position + 1, None)
    factors = rng.uniform(0.8, 1.25, size=ohlcv[later].shape[0])
    ohlcv[later, :4] *= factors[:, None]
    ohlcv[later, 4] *= rng.uniform(0.0, 3.0, size=factors.size)
    close_time = int(data.open_time[position]) + STEP - 1
    funding = {t: (r if t <= close_time else float(rng.normal(0, 1e-3)))
               for t, r in data.funding.items()}
    marks = data.mark_close.copy()
    after = data.mark_open_time + HOUR_MS - 1 > close_time
    marks[after] *= rng.uniform(0.9, 1.1, size=int(after.sum()))
    return replace(data, ohlcv=ohlcv, funding=funding, mark_close=marks)


def test_a_feature_at_bar_t_uses_nothing_after_t(sample: dict[str, SymbolData]) -> None:
    full = batch_of(sample)
    for position, seed in ((WARMUP_BARS + 300, 1), (BARS - 400, 2)):
        changed = {s: perturbed_after(d, position, seed + i)
                   for i, (s, d) in enumerate(sample.items())}
        moved = batch_of(changed)
        for symbol in SYMBOLS:
            pd.testing.assert_frame_equal(moved[symbol].iloc[: position + 1],
                                          full[symbol].iloc[: position + 1], check_exact=True)
            after = moved[symbol].iloc[position + 2 :][list(CONTEXT_NAMES)]
            assert not after.equals(full[symbol].iloc[position + 2 :][list(CONTEXT_NAMES)])


def test_other_symbols_bar_t_reaches_a_symbol_only_from_bar_t_plus_1(
        sample: dict[str, SymbolData]) -> None:
    """Cross-symbol inputs are every symbol's previous bar: changing BTC's bar t changes
    BTC's own row t but no other symbol's before t + 1, in both paths."""
    position = WARMUP_BARS + 500
    btc = sample["BTCUSDT"]
    ohlcv = btc.ohlcv.copy()
    ohlcv[position, :4] *= 1.05
    changed = {**sample, "BTCUSDT": replace(btc, ohlcv=ohlcv)}
    full, moved = batch_of(sample), batch_of(changed)
    assert not moved["BTCUSDT"].iloc[position].equals(full["BTCUSDT"].iloc[position])
    for symbol in ("ETHUSDT", "SOLUSDT", "XRPUSDT"):
        pd.testing.assert_frame_equal(moved[symbol].iloc[: position + 1],
                                      full[symbol].iloc[: position + 1], check_exact=True)
        nxt = position + 1
        assert moved[symbol].iloc[nxt]["btc_ret_12"] != full[symbol].iloc[nxt]["btc_ret_12"]
    tables, original = stream_tables(changed), stream_tables(sample)
    time_t = int(btc.open_time[position])
    assert tables["ETHUSDT"][time_t] == original["ETHUSDT"][time_t]
    assert tables["ETHUSDT"][time_t + STEP] != original["ETHUSDT"][time_t + STEP]


def test_the_order_of_symbols_within_a_bar_time_does_not_matter(
        sample: dict[str, SymbolData]) -> None:
    """Live, klines of one bar time arrive in any order: feeding them in reverse order (and
    BTC last) gives the same vectors as the sorted order the replay uses."""
    frames = {s: symbol_frame(d) for s, d in sample.items()}
    universe = UniverseFeatures()
    reversed_tables: dict[str, dict[int, dict[str, float] | None]] = {s: {} for s in frames}
    for t in frames["BTCUSDT"].index.tolist():
        for symbol in sorted(frames, reverse=True):
            o, h, low, c, v, mark, funding = frames[symbol].loc[t].tolist()
            close_time = t + STEP - 1
            universe.observe_tick(symbol, close_time, None if np.isnan(mark) else mark,
                                  None if np.isnan(funding) else funding)
            reversed_tables[symbol][t] = universe.update(symbol, t, close_time, o, h, low, c, v)
    assert reversed_tables == stream_tables(sample)


def test_missing_inputs_are_flagged_zeros_equal_in_both_paths(
        sample: dict[str, SymbolData]) -> None:
    no_btc = {s: d for s, d in sample.items() if s != "BTCUSDT"}
    batch = assert_paths_agree(no_btc)
    for frame in batch.values():
        warm = frame.iloc[WARMUP_BARS - 1 :]
        assert (warm[["btc_available", "beta_available"]] == 0.0).all().all()
        names = ["btc_ret_12", "btc_ret_48", "btc_rv_48", f"beta_btc_{PARAMETERS.beta_window}"]
        assert (warm[names] == 0.0).all().all()
        assert warm["xs_available"].iloc[1:].eq(1.0).all()

    bare = replace(sample["ETHUSDT"], funding={}, mark_open_time=np.zeros(0, np.int64),
                   mark_close=np.zeros(0))
    alone = assert_paths_agree({"ETHUSDT": bare})["ETHUSDT"].iloc[WARMUP_BARS - 1 :]
    flagged = ["funding_available", "basis_available", "btc_available", "beta_available",
               "xs_available"]
    assert (alone[flagged] == 0.0).all().all()
    assert (alone[list(CROSS_NAMES)] == 0.0).all().all()
    assert (alone[["funding_rate", "funding_change", "basis"]] == 0.0).all().all()
    # The symbol's own context (the regime) does not depend on anything missing.
    assert alone["er_96"].gt(0).any() and alone["vol_level_48_384"].gt(0).all()


def test_a_gap_in_btc_leaves_the_others_without_btc_for_that_bar_only_and_beta_for_a_window(
        sample: dict[str, SymbolData]) -> None:
    btc = sample["BTCUSDT"]
    gap = WARMUP_BARS + 200
    keep = np.ones(btc.open_time.size, dtype=bool)
    keep[gap] = False
    holed = {**sample, "BTCUSDT": replace(btc, open_time=btc.open_time[keep],
                                          ohlcv=btc.ohlcv[keep])}
    batch = assert_paths_agree(holed)
    eth = batch["ETHUSDT"]
    assert eth["btc_available"].iloc[gap + 1] == 0.0
    assert eth["btc_available"].iloc[gap + 2] == 1.0
    window = PARAMETERS.beta_window
    # No BTC bar at `gap`: the pair of ETH's bar gap + 1 is missing, and beta waits a window.
    assert eth["beta_available"].iloc[gap + 1 : gap + 1 + window].eq(0.0).all()
    assert eth["beta_available"].iloc[gap + 1 + window] == 1.0


def test_symbol_frame_carries_what_the_replay_ticks_carry() -> None:
    """The batch inputs and the backtest's priming read the data files the way the replay
    source publishes them: each bar's tick has the frame's mark price and funding rate."""
    replay = ReplaySource(SAMPLE, ("BTCUSDT", "XRPUSDT"), end_ms=1_756_684_800_000 + 400 * STEP)
    frames = {s: symbol_frame(d) for s, d in replay.data.items()}
    settled = 0
    for open_time in replay.times.tolist():
        for _, envelope in replay.step(open_time).ticks:
            tick = envelope.payload
            row = frames[tick.symbol].loc[open_time]
            assert tick.ts == open_time + STEP - 1
            assert (tick.mark_price is None) == np.isnan(row["mark_price"])
            assert tick.mark_price is None or tick.mark_price == row["mark_price"]
            assert (tick.funding_rate is None) == np.isnan(row["funding_rate"])
            settled += tick.funding_rate is not None
    assert settled == 2 * 4  # 33 hours: settlements at 08:00, 16:00, 00:00 and 08:00
