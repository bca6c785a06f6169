"""The feature schema: names, parameters, version and the hash that pins them together.

Training and serving must agree on what a feature vector means. The schema hash is carried in
every ``features.computed`` event (``FeatureVector.schema_hash``) and stored with every trained
model, so a model is never fed vectors built under a different definition: the ai-engine can
compare two short strings instead of trusting that two deployments happen to run the same code.

The names are derived from :data:`PARAMETERS`, so a change of period cannot leave a stale name
behind; any change of definition that the parameters do not capture must bump
:data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


class FeatureParameters(BaseModel):
    """Every number that shapes a feature; both computation paths read only these.

    Periods are counted in bars (5-minute bars in this fleet: 12 bars = 1 hour).

    Attributes:
        return_lags: lags of the simple returns ``ret_k``.
        roc_periods: periods of the rate of change ``roc_k`` (simple returns over longer spans).
        log_return_lags: lags of the log returns ``log_ret_k``.
        rsi_periods: Wilder RSI periods.
        macd_fast, macd_slow, macd_signal: MACD EMA spans.
        stochastic_window, stochastic_smoothing: %K look-back and the %D moving average.
        momentum_period: look-back of the ATR-normalised momentum.
        atr_period: Wilder ATR period.
        bollinger_window, bollinger_deviations: Bollinger middle band and band width in sigmas.
        volatility_windows: windows of the realised volatility ``rv_k``.
        volatility_ratio: (short, long) windows of ``rv_ratio``.
        ema_periods, sma_periods, wma_periods: moving averages expressed as ``close/ma - 1``.
        ema_cross: (fast, slow) EMA spans of ``ema_cross``.
        adx_period: Wilder period of +DI, -DI and ADX.
        trend_window: window of the signed efficiency ratio ``trend_strength``.
        flow_window: window of the OBV slope and the VPT slope.
        obv_zscore_window: window of the OBV z-score.
        volume_ratio_windows: windows of ``volume / mean(volume)``.
        long_momentum: span of the long return ``ret_288`` (cross-sectional momentum rank).
        regime_window: window of the unsigned efficiency ratio ``er_k`` (trend vs range).
        regime_trend_efficiency, regime_trend_adx: ``regime_trend`` is 1 when ``er_k`` is at
            least the first and ``adx`` at least the second, else 0.
        vol_level_window: bars of ``rv_48`` history that ``vol_level`` divides by (their mean).
        regime_vol_low, regime_vol_high: ``regime_vol`` is -1 below the first ``vol_level``,
            +1 above the second, else 0.
        beta_window: pairs of one-bar log returns in the rolling beta to BTC.
        btc_symbol: the symbol whose state every symbol is given (and its beta to).
        warmup_bars: bars after which every feature is defined and independent of the seed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    return_lags: tuple[int, ...] = (1, 3, 6)
    roc_periods: tuple[int, ...] = (12, 24, 48)
    log_return_lags: tuple[int, ...] = (1, 3, 6, 12)
    rsi_periods: tuple[int, ...] = (7, 14)
    macd_fast: Annotated[int, Field(ge=2)] = 12
    macd_slow: Annotated[int, Field(ge=3)] = 26
    macd_signal: Annotated[int, Field(ge=2)] = 9
    stochastic_window: Annotated[int, Field(ge=2)] = 14
    stochastic_smoothing: Annotated[int, Field(ge=1)] = 3
    momentum_period: Annotated[int, Field(ge=1)] = 12
    atr_period: Annotated[int, Field(ge=2)] = 14
    bollinger_window: Annotated[int, Field(ge=2)] = 20
    bollinger_deviations: Annotated[float, Field(gt=0)] = 2.0
    volatility_windows: tuple[int, ...] = (12, 24, 48, 96)
    volatility_ratio: tuple[int, int] = (12, 48)
    ema_periods: tuple[int, ...] = (9, 12, 26, 48)
    sma_periods: tuple[int, ...] = (12, 24, 48, 96)
    wma_periods: tuple[int, ...] = (12, 24)
    ema_cross: tuple[int, int] = (12, 48)
    adx_period: Annotated[int, Field(ge=2)] = 14
    trend_window: Annotated[int, Field(ge=2)] = 24
    flow_window: Annotated[int, Field(ge=1)] = 12
    obv_zscore_window: Annotated[int, Field(ge=2)] = 48
    volume_ratio_windows: tuple[int, ...] = (12, 48)
    long_momentum: Annotated[int, Field(ge=2)] = 288
    regime_window: Annotated[int, Field(ge=2)] = 96
    regime_trend_efficiency: Annotated[float, Field(gt=0, lt=1)] = 0.15
    regime_trend_adx: Annotated[float, Field(gt=0, lt=100)] = 20.0
    vol_level_window: Annotated[int, Field(ge=2)] = 384
    regime_vol_low: Annotated[float, Field(gt=0)] = 0.7
    regime_vol_high: Annotated[float, Field(gt=0)] = 1.4
    beta_window: Annotated[int, Field(ge=3)] = 288
    btc_symbol: str = "BTCUSDT"
    warmup_bars: Annotated[int, Field(ge=1)] = 512


def feature_names(parameters: FeatureParameters) -> tuple[str, ...]:
    """The feature names in their stable order, derived from ``parameters``.

    The order is part of the schema: models read vectors positionally.
    """
    p = parameters
    names: list[str] = []
    names += [f"ret_{k}" for k in p.return_lags]
    names += [f"roc_{k}" for k in p.roc_periods]
    names += [f"log_ret_{k}" for k in p.log_return_lags]
    names += [f"rsi_{k}" for k in p.rsi_periods]
    names += ["macd_pct", "macd_signal_pct", "macd_hist_pct"]
    names += [f"stoch_k_{p.stochastic_window}", f"stoch_d_{p.stochastic_window}"]
    names += [f"mom_atr_{p.momentum_period}"]
    names += [f"atr_{p.atr_period}", f"atr_pct_{p.atr_period}"]
    names += [f"bb_pct_b_{p.bollinger_window}", f"bb_width_{p.bollinger_window}"]
    names += [f"rv_{k}" for k in p.volatility_windows]
    names += [f"rv_ratio_{p.volatility_ratio[0]}_{p.volatility_ratio[1]}"]
    names += ["hl_range_pct"]
    names += [f"ema_ratio_{k}" for k in p.ema_periods]
    names += [f"sma_ratio_{k}" for k in p.sma_periods]
    names += [f"wma_ratio_{k}" for k in p.wma_periods]
    names += [f"ema_cross_{p.ema_cross[0]}_{p.ema_cross[1]}"]
    names += [f"adx_{p.adx_period}", f"plus_di_{p.adx_period}", f"minus_di_{p.adx_period}"]
    names += [f"trend_strength_{p.trend_window}"]
    names += [f"obv_slope_{p.flow_window}", f"obv_z_{p.obv_zscore_window}"]
    names += [f"vpt_slope_{p.flow_window}"]
    names += [f"vol_ratio_{k}" for k in p.volume_ratio_windows]
    names += ["close_location"]
    names += list(context_names(p))
    return tuple(names)


def context_names(parameters: FeatureParameters) -> tuple[str, ...]:
    """The features of schema version 2, appended after the 49 of version 1: funding, basis,
    market regime (each symbol's own inputs) and BTC's state, beta to BTC and the
    cross-sectional ranks (inputs from the other symbols). Each group that can be missing
    carries an ``*_available`` flag (1 or 0); a missing value is 0 with its flag 0."""
    p = parameters
    names = ["funding_rate", "funding_change", "funding_available"]
    names += ["basis", "basis_available"]
    names += [f"er_{p.regime_window}", "regime_trend",
              f"vol_level_48_{p.vol_level_window}", "regime_vol"]
    names += ["btc_ret_12", "btc_ret_48", "btc_rv_48", "btc_available"]
    names += [f"beta_btc_{p.beta_window}", "beta_available"]
    names += ["xs_mom_rank_48", f"xs_mom_rank_{p.long_momentum}", "xs_vol_rank_48",
              "xs_available"]
    return tuple(names)


def cross_names(parameters: FeatureParameters) -> tuple[str, ...]:
    """The features that read other symbols (set by :mod:`quantum.features.universe`)."""
    return context_names(parameters)[9:]


def schema_hash(names: Sequence[str], parameters: Mapping[str, Any], version: int) -> str:
    """sha256 hex of the canonical JSON of ``names``, ``parameters`` and ``version``.

    Canonical means sorted keys and no whitespace, so the hash depends on content only and
    is reproducible in any process or language that can write the same JSON.
    """
    document = {"names": list(names), "parameters": dict(parameters), "version": version}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


SCHEMA_VERSION = 2
PARAMETERS = FeatureParameters()
FEATURE_NAMES: tuple[str, ...] = feature_names(PARAMETERS)
CONTEXT_NAMES: tuple[str, ...] = context_names(PARAMETERS)
CROSS_NAMES: tuple[str, ...] = cross_names(PARAMETERS)
WARMUP_BARS: int = PARAMETERS.warmup_bars
SCHEMA_HASH: str = schema_hash(FEATURE_NAMES, PARAMETERS.model_dump(mode="json"), SCHEMA_VERSION)
