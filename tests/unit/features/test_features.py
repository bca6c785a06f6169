"""The unified feature module: batch and streaming agree, stay finite, never look ahead.

Real 5-minute futures bars from ``data/sample`` (two symbols five orders of magnitude apart
in price), plus an exchange pause spliced in, because flat zero-volume bars are where
divisions by zero hide.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from quantum.features import (
    CONTEXT_NAMES,
    CROSS_NAMES,
    FEATURE_NAMES,
    PARAMETERS,
    SCHEMA_HASH,
    SCHEMA_VERSION,
    WARMUP_BARS,
    FeatureParameters,
    StreamingFeatures,
    compute_batch,
    feature_names,
    schema_hash,
)

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "data" / "sample"
BARS = 3000
SYMBOLS = ("BTCUSDT", "XRPUSDT")
TOLERANCE = 1e-9  # relative, or absolute for values near zero
REQUIRED = ("atr_14", "atr_pct_14", "roc_12", "log_ret_1", "rv_48", "ema_ratio_12",
            "ema_ratio_48", "rsi_14")
COLUMNS = ["open", "high", "low", "close", "volume"]


def load(symbol: str, bars: int = BARS) -> pd.DataFrame:
    frame = pd.read_csv(SAMPLE / f"{symbol}-5m.csv.gz", index_col="open_time", nrows=bars)
    return frame[COLUMNS].astype("float64")


def with_exchange_pause(frame: pd.DataFrame, start: int, length: int) -> pd.DataFrame:
    """``frame`` with ``length`` flat zero-volume bars from ``start`` and a few lone
    zero-volume bars after it, as an exchange pause leaves them in the kline history."""
    paused = frame.copy()
    price = paused["close"].iloc[start - 1]
    paused.iloc[start : start + length, :4] = price
    paused.iloc[start : start + length, 4] = 0.0
    for offset in (length + 30, length + 31, length + 75):
        paused.iloc[start + offset, 4] = 0.0
    return paused


def stream(frame: pd.DataFrame) -> pd.DataFrame:
    """The streaming output as a frame with the batch's index (rows before warm-up dropped)."""
    features = StreamingFeatures()
    rows, index = [], []
    for time_key, bar in zip(frame.index, frame[COLUMNS].itertuples(index=False), strict=True):
        values = features.update(*bar)
        if values is not None:
            rows.append(values)
            index.append(time_key)
    return pd.DataFrame(rows, index=pd.Index(index, name=frame.index.name))


def assert_paths_agree(streamed: pd.DataFrame, batch: pd.DataFrame) -> None:
    """Every feature equal to TOLERANCE, naming the worst offender on failure."""
    expected = batch.loc[streamed.index, list(FEATURE_NAMES)].to_numpy()
    actual = streamed[list(FEATURE_NAMES)].to_numpy()
    error = np.abs(actual - expected) / np.maximum(np.abs(expected), 1.0)
    worst = np.nanmax(error, axis=0)
    bad = {name: float(value) for name, value in zip(FEATURE_NAMES, worst, strict=True)
           if not value <= TOLERANCE}
    assert not bad, f"streaming differs from batch: {bad}"


@pytest.fixture(scope="module", params=SYMBOLS)
def market(request: pytest.FixtureRequest) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(bars, batch features, streamed features) of one symbol's real history."""
    frame = load(request.param)
    return frame, compute_batch(frame), stream(frame)


def test_names_are_unique_stable_and_the_49_of_version_1_come_first() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert len(FEATURE_NAMES) == 49 + len(CONTEXT_NAMES)
    assert FEATURE_NAMES[49:] == CONTEXT_NAMES and FEATURE_NAMES[-len(CROSS_NAMES):] == CROSS_NAMES
    assert set(REQUIRED) <= set(FEATURE_NAMES)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in FEATURE_NAMES)
    assert feature_names(FeatureParameters()) == FEATURE_NAMES


def test_schema_hash_follows_names_parameters_and_version() -> None:
    parameters = PARAMETERS.model_dump(mode="json")
    assert schema_hash(FEATURE_NAMES, parameters, SCHEMA_VERSION) == SCHEMA_HASH
    assert re.fullmatch(r"[0-9a-f]{64}", SCHEMA_HASH)

    renamed = ("rsi_fourteen", *FEATURE_NAMES[1:])
    reordered = (FEATURE_NAMES[1], FEATURE_NAMES[0], *FEATURE_NAMES[2:])
    longer = (*FEATURE_NAMES, "funding_rate")
    for names in (renamed, reordered, longer, FEATURE_NAMES[:-1]):
        assert schema_hash(names, parameters, SCHEMA_VERSION) != SCHEMA_HASH
    assert schema_hash(FEATURE_NAMES, parameters, SCHEMA_VERSION + 1) != SCHEMA_HASH
    changed = FeatureParameters(atr_period=21).model_dump(mode="json")
    assert schema_hash(FEATURE_NAMES, changed, SCHEMA_VERSION) != SCHEMA_HASH
    # A changed period also renames its features, so a stale name cannot survive.
    assert "atr_21" in feature_names(FeatureParameters(atr_period=21))


def test_parameters_are_frozen_and_refuse_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        FeatureParameters(rsi_period=14)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        PARAMETERS.atr_period = 21  # type: ignore[misc]


def test_streaming_equals_batch_after_warmup(
    market: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    frame, batch, streamed = market
    assert list(streamed.columns) == list(FEATURE_NAMES)
    assert len(streamed) == len(frame) - WARMUP_BARS + 1
    assert streamed.index[0] == frame.index[WARMUP_BARS - 1]
    assert_paths_agree(streamed, batch)


def test_every_feature_is_finite_after_warmup_and_nan_before(
    market: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    frame, batch, streamed = market
    assert list(batch.columns) == list(FEATURE_NAMES)
    assert batch.index.equals(frame.index)
    assert batch.iloc[: WARMUP_BARS - 1].isna().all().all()
    assert np.isfinite(batch.iloc[WARMUP_BARS - 1 :].to_numpy()).all()
    assert np.isfinite(streamed.to_numpy()).all()


def test_streaming_is_silent_during_warmup() -> None:
    frame = load("BTCUSDT", WARMUP_BARS + 1)
    features = StreamingFeatures()
    bars = list(frame.itertuples(index=False))
    for count, bar in enumerate(bars[: WARMUP_BARS - 1], start=1):
        assert features.update(*bar) is None
        assert features.bars_seen == count
    first = features.update(*bars[WARMUP_BARS - 1])
    assert first is not None and tuple(first) == FEATURE_NAMES
    assert features.update(*bars[WARMUP_BARS]) is not None
    assert features.bars_seen == WARMUP_BARS + 1


def test_exchange_pause_stays_finite_and_identical() -> None:
    """A 120-bar flat, zero-volume pause: every window (up to 96 bars) goes fully flat."""
    frame = with_exchange_pause(load("ETHUSDT"), start=1200, length=120)
    batch = compute_batch(frame)
    streamed = stream(frame)
    assert np.isfinite(batch.iloc[WARMUP_BARS - 1 :].to_numpy()).all()
    assert np.isfinite(streamed.to_numpy()).all()
    assert_paths_agree(streamed, batch)

    flat = streamed.loc[frame.index[1200 + 119]]
    assert flat["stoch_k_14"] == 50.0 and flat["stoch_d_14"] == 50.0
    assert flat["bb_pct_b_20"] == 0.5 and flat["bb_width_20"] == 0.0
    assert flat["close_location"] == 0.5 and flat["hl_range_pct"] == 0.0
    assert flat["rv_12"] == 0.0 and flat["rv_96"] == 0.0 and flat["rv_ratio_12_48"] == 1.0
    assert flat["vol_ratio_12"] == 0.0 and flat["obv_slope_12"] == 0.0
    assert flat["vpt_slope_12"] == 0.0 and flat["trend_strength_24"] == 0.0
    assert flat["obv_z_48"] == 0.0 and flat["sma_ratio_96"] == 0.0
    assert flat["ret_1"] == 0.0 and flat["roc_48"] == 0.0


def test_batch_has_no_look_ahead() -> None:
    """Row t is the same whether or not later bars exist, or what they contain."""
    frame = load("SOLUSDT", 2000)
    full = compute_batch(frame)
    for cut in (WARMUP_BARS - 1, WARMUP_BARS + 37, 1333, len(frame) - 1):
        prefix = compute_batch(frame.iloc[: cut + 1])
        pd.testing.assert_frame_equal(prefix, full.iloc[: cut + 1], check_exact=True)

    scrambled = frame.copy()
    scrambled.iloc[1500:] = scrambled.iloc[1500:].to_numpy()[::-1] * 1.7
    pd.testing.assert_frame_equal(
        compute_batch(scrambled).iloc[:1500], full.iloc[:1500], check_exact=True
    )


def test_streaming_started_mid_history_matches_training_features() -> None:
    """The live publisher starts from a short backfill while training saw years of bars:
    after WARMUP_BARS the seeds of every recursive indicator have decayed below 1e-9."""
    frame = load("BNBUSDT")
    batch = compute_batch(frame)
    late_start = stream(frame.iloc[1000:])
    assert late_start.index[0] == frame.index[1000 + WARMUP_BARS - 1]
    assert_paths_agree(late_start, batch)


def test_required_features_match_their_definitions() -> None:
    """Plain re-derivations of the features other services name explicitly."""
    frame = load("BTCUSDT", 1200)
    features = compute_batch(frame)
    close, high, low = frame["close"].to_numpy(), frame["high"].to_numpy(), frame["low"].to_numpy()

    true_range = [high[0] - low[0]] + [
        max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        for i in range(1, len(close))
    ]
    atr = sum(true_range[:14]) / 14
    atr_series = [math.nan] * 13 + [atr]
    for value in true_range[14:]:
        atr = (atr * 13 + value) / 14
        atr_series.append(atr)
    ema_12 = frame["close"].ewm(span=12, adjust=False).mean().to_numpy()
    ema_48 = frame["close"].ewm(span=48, adjust=False).mean().to_numpy()
    log_returns = np.log(close[1:] / close[:-1])

    for t in (WARMUP_BARS - 1, 800, 1199):
        row = features.iloc[t]
        assert row["atr_14"] == pytest.approx(atr_series[t], rel=1e-12)
        assert row["atr_pct_14"] == pytest.approx(atr_series[t] / close[t], rel=1e-12)
        assert row["roc_12"] == pytest.approx(close[t] / close[t - 12] - 1, rel=1e-9)
        assert row["log_ret_1"] == pytest.approx(math.log(close[t] / close[t - 1]), rel=1e-12)
        expected_rv = float(np.std(log_returns[t - 48 : t], ddof=1))
        assert row["rv_48"] == pytest.approx(expected_rv, rel=1e-9)
        assert row["ema_ratio_12"] == pytest.approx(close[t] / ema_12[t] - 1, rel=1e-9)
        assert row["ema_ratio_48"] == pytest.approx(close[t] / ema_48[t] - 1, rel=1e-9)
        assert 0.0 <= row["rsi_14"] <= 100.0


def test_rsi_follows_wilder() -> None:
    """RSI from Wilder's averages, seeded with the mean of the first 14 changes."""
    frame = load("XRPUSDT", 800)
    change = np.diff(frame["close"].to_numpy())
    gains, losses = np.clip(change, 0, None), np.clip(-change, 0, None)
    average_gain, average_loss = gains[:14].mean(), losses[:14].mean()
    for gain, loss in zip(gains[14:], losses[14:], strict=True):
        average_gain = (average_gain * 13 + gain) / 14
        average_loss = (average_loss * 13 + loss) / 14
    expected = 100.0 - 100.0 / (1.0 + average_gain / average_loss)
    assert compute_batch(frame)["rsi_14"].iloc[-1] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "bar",
    [
        (1.0, 1.0, 1.0, math.nan, 1.0),
        (1.0, 1.0, 0.0, 1.0, 1.0),
        (1.0, math.inf, 1.0, 1.0, 1.0),
        (1.0, 1.0, 1.0, 1.0, -1.0),
        (1.0, 1.0, 1.0, 1.0, math.inf),
    ],
)
def test_streaming_refuses_bad_bars_without_changing_state(
    bar: tuple[float, float, float, float, float],
) -> None:
    features = StreamingFeatures()
    features.update(1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="bad bar"):
        features.update(*bar)
    assert features.bars_seen == 1


def test_batch_refuses_bad_frames() -> None:
    frame = load("BTCUSDT", 100)
    with pytest.raises(ValueError, match="missing columns"):
        compute_batch(frame.drop(columns="volume"))
    with pytest.raises(ValueError, match="time order"):
        compute_batch(frame.iloc[::-1])
    broken = frame.copy()
    broken.iloc[50, 3] = 0.0
    with pytest.raises(ValueError, match="positive"):
        compute_batch(broken)
    broken.iloc[50, 3] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        compute_batch(broken)


def test_short_history_is_all_nan() -> None:
    frame = load("BTCUSDT", 40)
    result = compute_batch(frame)
    assert list(result.columns) == list(FEATURE_NAMES)
    assert result.isna().all().all()


def test_docs_describe_every_feature() -> None:
    text = (ROOT / "docs" / "features.md").read_text()
    missing = [name for name in FEATURE_NAMES if f"`{name}`" not in text]
    assert not missing, f"docs/features.md lacks {missing}"
    assert f"WARMUP_BARS = {WARMUP_BARS}" in text
    assert f"SCHEMA_VERSION = {SCHEMA_VERSION}" in text
