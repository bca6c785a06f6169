"""The batch path: every feature for a whole history at once, for model training.

Classic indicators come from the ``ta`` library (EMA, SMA, MACD, stochastic %K, ATR, ROC).
Where ``ta`` is unsuitable the feature is computed here with pandas, and the
reason is recorded next to it (and in ``docs/features.md``):

* ADX/+DI/-DI: ``ta.trend.ADXIndicator`` leaves the last bar's smoothed sums at zero, so a
  bar's value changes once a later bar arrives (a look-ahead artefact in training data).
* RSI: ``ta`` reports 100 on a perfectly flat market (no gains and no losses); we report 50.
* OBV: ``ta`` counts an unchanged close as buying volume; Granville's definition counts it as 0.
* Bollinger bands, realised volatility, OBV z-score: pandas' rolling variance (which
  ``ta`` uses) drifts to ~1e-9 relative on prices; :func:`_rolling_moments` is exact.
* WMA: ``ta`` evaluates a Python function per window, far too slow for multi-year histories.

Every rule for a degenerate case (a flat window, zero volume) is mirrored exactly in
:mod:`quantum.features.streaming`; the tests hold the two paths to 1e-9 of each other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from ta.momentum import ROCIndicator, StochasticOscillator
from ta.trend import MACD, EMAIndicator, SMAIndicator
from ta.volatility import AverageTrueRange

from quantum.features.schema import CROSS_NAMES, FEATURE_NAMES, PARAMETERS, WARMUP_BARS

REQUIRED_COLUMNS = ("open", "high", "low", "close", "volume")
# What the other symbols read of a symbol's bar (its cross-sectional inputs, BTC's state).
SHARED_COLUMNS = ("log_ret_1", "roc_12", "roc_48", "rv_48", "ret_long")
_MOMENTS_BLOCK = 16_384  # windows per block in _rolling_moments: ~12 MB at a 96-bar window


def compute_batch(frame: pd.DataFrame) -> pd.DataFrame:
    """All features of ``frame`` (columns open/high/low/close/volume, time order).

    Optional columns ``mark_price`` and ``funding_rate`` carry what each bar's
    ``market.tick`` carried (NaN where it carried none; built from data files by
    :func:`quantum.features.universe.symbol_frame`); without them the funding and basis
    features are unavailable (0 with their flag 0). The features
    that read other symbols (BTC's state, the beta to BTC, the cross-sectional ranks) are
    unavailable here; :func:`quantum.features.universe.compute_universe` fills them.

    Returns a frame with columns :data:`FEATURE_NAMES` and the same index; the first
    ``WARMUP_BARS - 1`` rows are NaN because the seeds of the recursive indicators still
    dominate there. Row ``t`` depends only on rows ``<= t`` (no look-ahead).
    """
    return symbol_features(frame)[0]


def symbol_features(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`compute_batch`'s frame, and beside it what the other symbols read of this one
    per bar (columns :data:`SHARED_COLUMNS`, defined from the bar each is first defined at,
    not masked by the warm-up)."""
    _validate(frame)
    high = frame["high"].astype("float64")
    low = frame["low"].astype("float64")
    close = frame["close"].astype("float64")
    volume = frame["volume"].astype("float64")

    atr = AverageTrueRange(high, low, close, window=PARAMETERS.atr_period).average_true_range()
    # ta fills the bars before its seed with 0; they are undefined.
    atr = atr.where(np.arange(len(close)) >= PARAMETERS.atr_period - 1)

    columns: dict[str, pd.Series] = {}
    columns.update(_returns(close))
    columns.update(_momentum(high, low, close, atr))
    columns.update(_volatility(high, low, close, atr))
    columns.update(_trend(high, low, close))
    columns.update(_volume(high, low, close, volume))
    columns.update(_funding_and_basis(frame, close))
    columns.update(_regime(close, columns))
    for name in CROSS_NAMES:
        columns[name] = pd.Series(0.0, index=frame.index)

    long = close.shift(PARAMETERS.long_momentum)
    shared = pd.DataFrame({
        "log_ret_1": columns["log_ret_1"], "roc_12": columns["roc_12"],
        "roc_48": columns["roc_48"], "rv_48": columns["rv_48"],
        "ret_long": (close - long) / long,
    }, index=frame.index)[list(SHARED_COLUMNS)]
    result = pd.DataFrame(columns, index=frame.index)[list(FEATURE_NAMES)]
    result.iloc[: WARMUP_BARS - 1] = np.nan
    return result, shared


def _validate(frame: pd.DataFrame) -> None:
    """Refuse input the features would silently misread (wrong columns, order, values)."""
    missing = [name for name in REQUIRED_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"compute_batch: missing columns {missing}")
    if not frame.index.is_monotonic_increasing or not frame.index.is_unique:
        raise ValueError("compute_batch: index must be unique and in time order")
    values = frame[list(REQUIRED_COLUMNS)].to_numpy(dtype="float64")
    if not np.isfinite(values).all():
        raise ValueError("compute_batch: non-finite price or volume")
    if (values[:, :4] <= 0).any() or (values[:, 4] < 0).any():
        raise ValueError("compute_batch: prices must be positive and volume non-negative")
    for name in ("mark_price", "funding_rate"):
        if name in frame.columns:
            given = frame[name].to_numpy(dtype="float64")
            given = given[~np.isnan(given)]
            if not np.isfinite(given).all() or (name == "mark_price" and (given <= 0).any()):
                raise ValueError(f"compute_batch: {name} must be finite (mark positive) or NaN")


def _safe_ratio(numerator: pd.Series, denominator: pd.Series, fallback: float) -> pd.Series:
    """numerator / denominator, or ``fallback`` where the denominator is exactly zero."""
    ratio = numerator / denominator.where(denominator != 0.0)
    return ratio.where(denominator != 0.0, fallback).where(denominator.notna())


def _rolling_moments(series: pd.Series, window: int, ddof: int) -> tuple[pd.Series, pd.Series]:
    """Rolling mean and variance by an exact two-pass over each window.

    pandas' rolling variance (an add/remove Welford update) drifts to about 1e-9 relative on
    price series over a few thousand bars, which is the whole tolerance between the two
    paths; a two-pass over each window is exact to rounding. A window of identical values
    has exactly that value as mean and zero variance, the rule the streaming path applies.
    Windows are processed in blocks so memory stays bounded on long histories.
    """
    values = series.to_numpy(dtype="float64")
    mean = np.full(len(values), np.nan)
    variance = np.full(len(values), np.nan)
    for start in range(0, max(len(values) - window + 1, 0), _MOMENTS_BLOCK):
        block = np.lib.stride_tricks.sliding_window_view(
            values[start : start + _MOMENTS_BLOCK + window - 1], window
        )
        block_mean = block.mean(axis=1)
        deviations = block - block_mean[:, None]
        block_variance = (deviations * deviations).sum(axis=1) / (window - ddof)
        constant = block.max(axis=1) == block.min(axis=1)
        rows = slice(start + window - 1, start + window - 1 + len(block))
        mean[rows] = np.where(constant, block[:, -1], block_mean)
        variance[rows] = np.where(constant, 0.0, block_variance)
    return pd.Series(mean, index=series.index), pd.Series(variance, index=series.index)


def _wilder(values: pd.Series, period: int, first: int) -> pd.Series:
    """Wilder's smoothing of ``values`` whose first valid element is at position ``first``.

    The seed is the plain mean of the first ``period`` valid values (defined at position
    ``first + period - 1``); afterwards ``avg = avg + (x - avg) / period``, which is an EMA
    with alpha ``1/period`` started from the seed.
    """
    seeded = pd.Series(np.nan, index=values.index)
    start = first + period - 1
    if start < len(values):
        seeded.iloc[start] = values.iloc[first : start + 1].mean()
        seeded.iloc[start + 1 :] = values.iloc[start + 1 :]
    return seeded.ewm(alpha=1.0 / period, adjust=False).mean()


def _returns(close: pd.Series) -> dict[str, pd.Series]:
    """Simple returns, ROC (the same quantity over longer spans) and log returns."""
    out: dict[str, pd.Series] = {}
    for lag in PARAMETERS.return_lags:
        previous = close.shift(lag)
        out[f"ret_{lag}"] = (close - previous) / previous
    for period in PARAMETERS.roc_periods:
        out[f"roc_{period}"] = ROCIndicator(close, window=period).roc() / 100.0
    for lag in PARAMETERS.log_return_lags:
        out[f"log_ret_{lag}"] = np.log(close / close.shift(lag))
    return out


def _rsi(close: pd.Series, period: int) -> pd.Series:
    """Wilder RSI as ``100 * gain / (gain + loss)``; 50 when both averages are zero."""
    change = close.diff()
    gain = _wilder(change.clip(lower=0.0), period, first=1)
    loss = _wilder((-change).clip(lower=0.0), period, first=1)
    return _safe_ratio(100.0 * gain, gain + loss, 50.0)


def _momentum(
    high: pd.Series, low: pd.Series, close: pd.Series, atr: pd.Series
) -> dict[str, pd.Series]:
    """RSI, MACD (scaled by close), stochastic %K/%D and ATR-normalised momentum."""
    p = PARAMETERS
    out: dict[str, pd.Series] = {}
    for period in p.rsi_periods:
        out[f"rsi_{period}"] = _rsi(close, period)

    macd = MACD(close, window_slow=p.macd_slow, window_fast=p.macd_fast,
                window_sign=p.macd_signal)
    out["macd_pct"] = macd.macd() / close
    out["macd_signal_pct"] = macd.macd_signal() / close
    out["macd_hist_pct"] = macd.macd_diff() / close

    window = p.stochastic_window
    stochastic_k = StochasticOscillator(high, low, close, window=window).stoch()
    # ta divides 0 by 0 when high == low over the whole window; the close sits mid-range.
    defined = pd.Series(np.arange(len(close)) >= window - 1, index=close.index)
    stochastic_k = stochastic_k.where(~(stochastic_k.isna() & defined), 50.0)
    out[f"stoch_k_{window}"] = stochastic_k
    out[f"stoch_d_{window}"] = stochastic_k.rolling(p.stochastic_smoothing).mean()

    change = close - close.shift(p.momentum_period)
    out[f"mom_atr_{p.momentum_period}"] = _safe_ratio(change, atr, 0.0)
    return out


def _volatility(
    high: pd.Series, low: pd.Series, close: pd.Series, atr: pd.Series
) -> dict[str, pd.Series]:
    """ATR, Bollinger %B and width, realised volatility and the bar range."""
    p = PARAMETERS
    out: dict[str, pd.Series] = {}
    out[f"atr_{p.atr_period}"] = atr
    out[f"atr_pct_{p.atr_period}"] = atr / close

    middle, variance = _rolling_moments(close, p.bollinger_window, ddof=0)
    deviation = np.sqrt(variance)
    upper = middle + p.bollinger_deviations * deviation
    lower = middle - p.bollinger_deviations * deviation
    out[f"bb_pct_b_{p.bollinger_window}"] = _safe_ratio(close - lower, upper - lower, 0.5)
    out[f"bb_width_{p.bollinger_window}"] = (upper - lower) / middle

    log_return = np.log(close / close.shift(1))
    rv = {window: np.sqrt(_rolling_moments(log_return, window, ddof=1)[1])
          for window in {*p.volatility_windows, *p.volatility_ratio}}
    for window in p.volatility_windows:
        out[f"rv_{window}"] = rv[window]
    short, long = p.volatility_ratio
    out[f"rv_ratio_{short}_{long}"] = _safe_ratio(rv[short], rv[long], 1.0)
    out["hl_range_pct"] = (high - low) / close
    return out


def _weighted_moving_average(close: pd.Series, period: int) -> pd.Series:
    """Linearly weighted mean of the last ``period`` closes (newest weight ``period``)."""
    values = close.to_numpy(dtype="float64")
    result = np.full(len(values), np.nan)
    if len(values) >= period:
        weights = np.arange(1, period + 1, dtype="float64")
        windows = np.lib.stride_tricks.sliding_window_view(values, period)
        result[period - 1 :] = windows @ weights / weights.sum()
    return pd.Series(result, index=close.index)


def _directional(
    high: pd.Series, low: pd.Series, close: pd.Series, period: int
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Wilder's +DI, -DI and ADX (see the module docstring for why not ``ta``)."""
    previous_close = close.shift(1)
    true_range = pd.concat(
        [high - low, (high - previous_close).abs(), (low - previous_close).abs()], axis=1
    ).max(axis=1, skipna=False)
    up_move = high - high.shift(1)
    down_move = low.shift(1) - low
    plus_move = up_move.where((up_move > down_move) & (up_move > 0.0), 0.0)
    minus_move = down_move.where((down_move > up_move) & (down_move > 0.0), 0.0)
    plus_move = plus_move.where(up_move.notna())
    minus_move = minus_move.where(down_move.notna())

    average_range = _wilder(true_range, period, first=1)
    plus_di = _safe_ratio(100.0 * _wilder(plus_move, period, first=1), average_range, 0.0)
    minus_di = _safe_ratio(100.0 * _wilder(minus_move, period, first=1), average_range, 0.0)
    dx = _safe_ratio(100.0 * (plus_di - minus_di).abs(), plus_di + minus_di, 0.0)
    adx = _wilder(dx, period, first=period)
    return adx, plus_di, minus_di


def _trend(high: pd.Series, low: pd.Series, close: pd.Series) -> dict[str, pd.Series]:
    """Moving averages as distance from close, EMA cross, ADX/DI and trend strength."""
    p = PARAMETERS
    out: dict[str, pd.Series] = {}
    emas = {period: EMAIndicator(close, window=period).ema_indicator()
            for period in {*p.ema_periods, *p.ema_cross}}
    for period in p.ema_periods:
        out[f"ema_ratio_{period}"] = close / emas[period] - 1.0
    for period in p.sma_periods:
        average = SMAIndicator(close, window=period).sma_indicator()
        out[f"sma_ratio_{period}"] = close / average - 1.0
    for period in p.wma_periods:
        out[f"wma_ratio_{period}"] = close / _weighted_moving_average(close, period) - 1.0
    fast, slow = p.ema_cross
    out[f"ema_cross_{fast}_{slow}"] = emas[fast] / emas[slow] - 1.0

    adx, plus_di, minus_di = _directional(high, low, close, p.adx_period)
    out[f"adx_{p.adx_period}"] = adx
    out[f"plus_di_{p.adx_period}"] = plus_di
    out[f"minus_di_{p.adx_period}"] = minus_di

    window = p.trend_window
    path = close.diff().abs().rolling(window).sum()
    out[f"trend_strength_{window}"] = _safe_ratio(close - close.shift(window), path, 0.0)
    return out


def _volume(
    high: pd.Series, low: pd.Series, close: pd.Series, volume: pd.Series
) -> dict[str, pd.Series]:
    """OBV slope and z-score, VPT slope, volume ratios and the close location in the bar."""
    p = PARAMETERS
    out: dict[str, pd.Series] = {}
    change = close.diff()
    direction = pd.Series(np.sign(change.to_numpy()), index=close.index).fillna(0.0)
    signed_volume = direction * volume
    flow = p.flow_window
    volume_sum = volume.rolling(flow).sum()
    out[f"obv_slope_{flow}"] = _safe_ratio(signed_volume.rolling(flow).sum(), volume_sum, 0.0)

    obv = signed_volume.cumsum()
    window = p.obv_zscore_window
    obv_mean, obv_variance = _rolling_moments(obv, window, ddof=0)
    out[f"obv_z_{window}"] = _safe_ratio(obv - obv_mean, np.sqrt(obv_variance), 0.0)

    weighted_return = (change / close.shift(1)) * volume
    out[f"vpt_slope_{flow}"] = _safe_ratio(weighted_return.rolling(flow).sum(), volume_sum, 0.0)

    for window in p.volume_ratio_windows:
        out[f"vol_ratio_{window}"] = _safe_ratio(volume, volume.rolling(window).mean(), 0.0)
    out["close_location"] = _safe_ratio(close - low, high - low, 0.5)
    return out


def _funding_and_basis(frame: pd.DataFrame, close: pd.Series) -> dict[str, pd.Series]:
    """Funding: a settlement on bar ``j``'s tick is known from bar ``j + 1`` (replay puts it
    on the tick at the close of the bar ending at the settlement, live it arrives on the
    first tick after it; both are before the next bar closes). Basis: the newest mark price
    on a tick at or before the bar's close against the bar's close."""
    index = frame.index
    out: dict[str, pd.Series] = {}
    if "funding_rate" in frame.columns:
        settled = frame["funding_rate"].astype("float64").reset_index(drop=True)
        known = settled.notna()
        previous = settled[known].shift(1).reindex(settled.index)
        last = settled.ffill().shift(1)
        before = previous.ffill().where(known.cumsum() >= 2).shift(1)
        available = (known.cumsum().shift(1, fill_value=0) >= 2).to_numpy()
        rate = np.where(available, last.to_numpy(), 0.0)
        change = np.where(available, last.to_numpy() - before.to_numpy(), 0.0)
    else:
        available = np.zeros(len(index), dtype=bool)
        rate = change = np.zeros(len(index))
    out["funding_rate"] = pd.Series(rate, index=index)
    out["funding_change"] = pd.Series(change, index=index)
    out["funding_available"] = pd.Series(available.astype("float64"), index=index)
    if "mark_price" in frame.columns:
        mark = frame["mark_price"].astype("float64").ffill()
        has_mark = mark.notna()
        out["basis"] = (mark / close - 1.0).where(has_mark, 0.0)
        out["basis_available"] = has_mark.astype("float64")
    else:
        out["basis"] = pd.Series(0.0, index=index)
        out["basis_available"] = pd.Series(0.0, index=index)
    return out


def _regime(close: pd.Series, columns: dict[str, pd.Series]) -> dict[str, pd.Series]:
    """Trend vs range (unsigned efficiency ratio and ADX) and the volatility level (rv_48
    against its own mean over ``vol_level_window`` bars), see ``docs/features.md``."""
    p = PARAMETERS
    out: dict[str, pd.Series] = {}
    window = p.regime_window
    path = close.diff().abs().rolling(window).sum()
    efficiency = _safe_ratio((close - close.shift(window)).abs(), path, 0.0)
    out[f"er_{window}"] = efficiency
    adx = columns[f"adx_{p.adx_period}"]
    trending = (efficiency >= p.regime_trend_efficiency) & (adx >= p.regime_trend_adx)
    out["regime_trend"] = trending.astype("float64").where(efficiency.notna() & adx.notna())
    rv = columns["rv_48"]
    mean = _rolling_moments(rv, p.vol_level_window, ddof=0)[0]
    level = _safe_ratio(rv, mean, 1.0)
    out[f"vol_level_48_{p.vol_level_window}"] = level
    regime = np.where(level < p.regime_vol_low, -1.0, np.where(level > p.regime_vol_high,
                                                                1.0, 0.0))
    out["regime_vol"] = pd.Series(regime, index=close.index).where(level.notna())
    return out
