"""The streaming path: the same features as :func:`compute_batch`, one bar at a time.

The feature-publisher keeps one :class:`StreamingFeatures` per symbol and feeds it every
closed bar. Each indicator keeps O(1) state (running sums, recursive averages, monotonic
deques) instead of recomputing a pandas window per bar: the publisher runs this on every bar
of every symbol, and the whole update costs tens of microseconds (see
``python -m quantum.features.benchmark``).

Every formula, seed and degenerate-case rule here mirrors :mod:`quantum.features.batch`; the
tests hold the two paths to 1e-9 on real market data, so a model trained on batch features
sees the same numbers live.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from quantum.features.batch import SHARED_COLUMNS
from quantum.features.incremental import (
    ExponentialAverage,
    RollingExtreme,
    RollingWindow,
    WilderAverage,
)
from quantum.features.schema import CROSS_NAMES, FEATURE_NAMES, PARAMETERS, WARMUP_BARS

_INFINITY = math.inf


def _ratio(numerator: float, denominator: float, fallback: float) -> float:
    """numerator / denominator, or ``fallback`` for a zero denominator (as the batch path)."""
    return numerator / denominator if denominator != 0.0 else fallback


class StreamingFeatures:
    """Incremental features of one symbol's bar series.

    :meth:`update` returns ``None`` until :data:`WARMUP_BARS` bars have been seen, then a
    dict with every name in :data:`FEATURE_NAMES`, all finite. The features that read other
    symbols are unavailable (0, flags 0) unless a
    :class:`~quantum.features.universe.UniverseFeatures` sets them.
    """

    def __init__(self) -> None:
        p = PARAMETERS
        self._bars_seen = 0
        self._previous_close = math.nan
        self._previous_high = math.nan
        self._previous_low = math.nan
        longest_lag = max(*p.return_lags, *p.roc_periods, *p.log_return_lags,
                          p.momentum_period, p.trend_window, p.long_momentum,
                          p.regime_window)
        self._closes: deque[float] = deque(maxlen=longest_lag + 1)
        self._values: dict[str, float] = {}

        self._rsi = {period: (WilderAverage(period), WilderAverage(period))
                     for period in p.rsi_periods}
        spans = {*p.ema_periods, *p.ema_cross, p.macd_fast, p.macd_slow}
        self._emas = {span: ExponentialAverage(span=span, min_periods=span) for span in spans}
        self._macd_signal = ExponentialAverage(span=p.macd_signal, min_periods=p.macd_signal)

        self._lowest_low = RollingExtreme(p.stochastic_window, maximum=False)
        self._highest_high = RollingExtreme(p.stochastic_window, maximum=True)
        self._stochastic_k = RollingWindow(p.stochastic_smoothing)

        self._atr_seed: list[float] = []
        self._atr = math.nan

        close_windows = {*p.sma_periods, *p.wma_periods, p.bollinger_window}
        self._close_windows = {window: RollingWindow(window) for window in close_windows}
        volatility_windows = {*p.volatility_windows, *p.volatility_ratio}
        self._log_returns = {window: RollingWindow(window) for window in volatility_windows}

        self._true_range = WilderAverage(p.adx_period)
        self._plus_move = WilderAverage(p.adx_period)
        self._minus_move = WilderAverage(p.adx_period)
        self._adx = WilderAverage(p.adx_period)
        self._path = RollingWindow(p.trend_window)

        self._obv = 0.0
        self._obv_window = RollingWindow(p.obv_zscore_window)
        self._signed_volume = RollingWindow(p.flow_window)
        self._weighted_return = RollingWindow(p.flow_window)
        volume_windows = {*p.volume_ratio_windows, p.flow_window}
        self._volumes = {window: RollingWindow(window) for window in volume_windows}

        self._regime_path = RollingWindow(p.regime_window)
        self._rv_history = RollingWindow(p.vol_level_window)
        self._settlements: list[float] = []  # the last two funding rates known, oldest first
        self._mark = math.nan
        for name in CROSS_NAMES:
            self._values[name] = 0.0

    @property
    def bars_seen(self) -> int:
        """Bars folded in so far (including those of the warm-up)."""
        return self._bars_seen

    def update(self, open: float, high: float, low: float, close: float, volume: float, *,
               mark_price: float | None = None, funding_rates: Iterable[float] = ()
               ) -> dict[str, float] | None:
        """Fold in one closed bar; the features of that bar once warmed up, else ``None``.

        ``mark_price`` is the newest mark price known at the bar's close (None: none newer
        than the one before), ``funding_rates`` the funding settlements that became known
        since the previous bar, oldest first (see :class:`~quantum.features.universe.TickContext`
        for which tick belongs to which bar).

        Raises:
            ValueError: a price that is not positive and finite, or a negative or non-finite
                volume, mark price or funding rate. The state is left untouched, so the
                caller may skip the bar.
        """
        rates = list(funding_rates)
        if not (0.0 < open < _INFINITY and 0.0 < high < _INFINITY and 0.0 < low < _INFINITY
                and 0.0 < close < _INFINITY and 0.0 <= volume < _INFINITY
                and (mark_price is None or 0.0 < mark_price < _INFINITY)
                and all(-_INFINITY < rate < _INFINITY for rate in rates)):
            raise ValueError(
                f"bad bar: open={open} high={high} low={low} close={close} volume={volume}"
                f" mark_price={mark_price} funding_rates={rates}"
            )
        values = self._values
        self._closes.append(close)
        self._update_returns(close)
        self._update_momentum(high, low, close)
        self._update_volatility(high, low, close)
        self._update_trend(high, low, close)
        self._update_volume(high, low, close, volume)
        self._update_context(close, mark_price, rates)
        self._update_regime(close)
        self._previous_close = close
        self._previous_high = high
        self._previous_low = low
        self._bars_seen += 1
        if self._bars_seen < WARMUP_BARS:
            return None
        return {name: values[name] for name in FEATURE_NAMES}

    @property
    def warmed(self) -> bool:
        """Whether the newest bar's features are complete (the warm-up is over)."""
        return self._bars_seen >= WARMUP_BARS

    def shared(self) -> tuple[float, ...]:
        """What other symbols read of the newest bar: :data:`batch.SHARED_COLUMNS` (NaN
        where not yet defined)."""
        values = self._values
        previous = self._lagged_close(PARAMETERS.long_momentum)
        close = self._closes[-1]
        own = {"ret_long": (close - previous) / previous}
        return tuple(own[name] if name in own else values.get(name, math.nan)
                     for name in SHARED_COLUMNS)

    def _lagged_close(self, lag: int) -> float:
        """The close ``lag`` bars before the newest one (NaN early in the warm-up)."""
        closes = self._closes
        return closes[-1 - lag] if len(closes) > lag else math.nan

    def _update_returns(self, close: float) -> None:
        values = self._values
        p = PARAMETERS
        for lag in p.return_lags:
            previous = self._lagged_close(lag)
            values[f"ret_{lag}"] = (close - previous) / previous
        for period in p.roc_periods:
            previous = self._lagged_close(period)
            # ta reports percent; the batch path scales it back, so this rounds the same way.
            values[f"roc_{period}"] = (close - previous) / previous * 100.0 / 100.0
        for lag in p.log_return_lags:
            previous = self._lagged_close(lag)
            values[f"log_ret_{lag}"] = (math.log(close / previous)
                                        if previous == previous else math.nan)

    def _update_momentum(self, high: float, low: float, close: float) -> None:
        values = self._values
        p = PARAMETERS
        previous_close = self._previous_close
        if previous_close == previous_close:
            change = close - previous_close
            gain = change if change > 0.0 else 0.0
            loss = -change if change < 0.0 else 0.0
            for period, (average_gain, average_loss) in self._rsi.items():
                up = average_gain.update(gain)
                down = average_loss.update(loss)
                values[f"rsi_{period}"] = _ratio(100.0 * up, up + down, 50.0)

        fast = self._emas[p.macd_fast].update(close)
        slow = self._emas[p.macd_slow].update(close)
        for span, average in self._emas.items():
            if span not in (p.macd_fast, p.macd_slow):
                average.update(close)
        if self._emas[p.macd_fast].ready and self._emas[p.macd_slow].ready:
            macd = fast - slow
            signal = self._macd_signal.update(macd)
            values["macd_pct"] = macd / close
            if self._macd_signal.ready:
                values["macd_signal_pct"] = signal / close
                values["macd_hist_pct"] = (macd - signal) / close

        window = p.stochastic_window
        lowest = self._lowest_low.push(low)
        highest = self._highest_high.push(high)
        if self._bars_seen >= window - 1:
            k = _ratio(100.0 * (close - lowest), highest - lowest, 50.0)
            self._stochastic_k.push(k)
            values[f"stoch_k_{window}"] = k
            if self._stochastic_k.full:
                values[f"stoch_d_{window}"] = self._stochastic_k.mean()

    def _update_volatility(self, high: float, low: float, close: float) -> None:
        values = self._values
        p = PARAMETERS
        previous_close = self._previous_close
        if previous_close == previous_close:
            true_range = max(high - low, abs(high - previous_close), abs(low - previous_close))
        else:
            true_range = high - low
        period = p.atr_period
        if len(self._atr_seed) < period:
            self._atr_seed.append(true_range)
            if len(self._atr_seed) == period:
                self._atr = math.fsum(self._atr_seed) / period
        else:
            self._atr = (self._atr * (period - 1) + true_range) / period
        atr = self._atr
        values[f"atr_{period}"] = atr
        values[f"atr_pct_{period}"] = atr / close
        lag = p.momentum_period
        values[f"mom_atr_{lag}"] = _ratio(close - self._lagged_close(lag), atr, 0.0)

        bands = self._close_windows[p.bollinger_window]
        for window in self._close_windows.values():
            window.push(close)
        if bands.full:
            middle = bands.mean()
            deviation = math.sqrt(bands.variance())
            upper = middle + p.bollinger_deviations * deviation
            lower = middle - p.bollinger_deviations * deviation
            values[f"bb_pct_b_{p.bollinger_window}"] = _ratio(close - lower, upper - lower, 0.5)
            values[f"bb_width_{p.bollinger_window}"] = (upper - lower) / middle

        self._update_realised_volatility(close)
        values["hl_range_pct"] = (high - low) / close

    def _update_realised_volatility(self, close: float) -> None:
        """Sample standard deviations of 1-bar log returns, and their short/long ratio."""
        values = self._values
        p = PARAMETERS
        previous_close = self._previous_close
        if previous_close == previous_close:
            log_return = math.log(close / previous_close)
            for window in self._log_returns.values():
                window.push(log_return)
        rv: dict[int, float] = {}
        for size, window in self._log_returns.items():
            if window.full:
                rv[size] = math.sqrt(window.variance(ddof=1))
        for size in p.volatility_windows:
            if size in rv:
                values[f"rv_{size}"] = rv[size]
        short, long = p.volatility_ratio
        if long in rv and short in rv:
            values[f"rv_ratio_{short}_{long}"] = _ratio(rv[short], rv[long], 1.0)

    def _update_trend(self, high: float, low: float, close: float) -> None:
        values = self._values
        p = PARAMETERS
        for span in p.ema_periods:
            values[f"ema_ratio_{span}"] = close / self._emas[span].value - 1.0
        for window in p.sma_periods:
            values[f"sma_ratio_{window}"] = close / self._close_windows[window].mean() - 1.0
        for window in p.wma_periods:
            values[f"wma_ratio_{window}"] = (
                close / self._close_windows[window].weighted_mean() - 1.0
            )
        fast, slow = p.ema_cross
        values[f"ema_cross_{fast}_{slow}"] = self._emas[fast].value / self._emas[slow].value - 1.0
        self._update_directional(high, low)

        previous_close = self._previous_close
        if previous_close == previous_close:
            self._path.push(abs(close - previous_close))
        if self._path.full:
            window = p.trend_window
            change = close - self._lagged_close(window)
            values[f"trend_strength_{window}"] = _ratio(change, self._path.sum(), 0.0)

    def _update_directional(self, high: float, low: float) -> None:
        """Wilder's +DI, -DI and ADX, smoothed from the second bar on."""
        previous_close = self._previous_close
        if previous_close != previous_close:
            return
        up_move = high - self._previous_high
        down_move = self._previous_low - low
        plus_move = up_move if up_move > down_move and up_move > 0.0 else 0.0
        minus_move = down_move if down_move > up_move and down_move > 0.0 else 0.0
        true_range = max(high - low, abs(high - previous_close), abs(low - previous_close))
        average_range = self._true_range.update(true_range)
        average_plus = self._plus_move.update(plus_move)
        average_minus = self._minus_move.update(minus_move)
        if not self._true_range.ready:
            return
        period = PARAMETERS.adx_period
        plus_di = _ratio(100.0 * average_plus, average_range, 0.0)
        minus_di = _ratio(100.0 * average_minus, average_range, 0.0)
        dx = _ratio(100.0 * abs(plus_di - minus_di), plus_di + minus_di, 0.0)
        values = self._values
        values[f"plus_di_{period}"] = plus_di
        values[f"minus_di_{period}"] = minus_di
        values[f"adx_{period}"] = self._adx.update(dx)

    def _update_volume(self, high: float, low: float, close: float, volume: float) -> None:
        values = self._values
        p = PARAMETERS
        previous_close = self._previous_close
        if previous_close == previous_close:
            change = close - previous_close
            signed_volume = volume if change > 0.0 else (-volume if change < 0.0 else 0.0)
            self._weighted_return.push(change / previous_close * volume)
        else:
            signed_volume = 0.0
        self._obv += signed_volume
        self._signed_volume.push(signed_volume)
        self._obv_window.push(self._obv)
        for volumes in self._volumes.values():
            volumes.push(volume)

        flow = p.flow_window
        volume_sum = self._volumes[flow].sum()
        if self._signed_volume.full:
            values[f"obv_slope_{flow}"] = _ratio(self._signed_volume.sum(), volume_sum, 0.0)
        if self._weighted_return.full:
            values[f"vpt_slope_{flow}"] = _ratio(self._weighted_return.sum(), volume_sum, 0.0)
        obv_window = self._obv_window
        if obv_window.full:
            deviation = math.sqrt(obv_window.variance())
            values[f"obv_z_{p.obv_zscore_window}"] = _ratio(
                self._obv - obv_window.mean(), deviation, 0.0
            )
        for window in p.volume_ratio_windows:
            if self._volumes[window].full:
                values[f"vol_ratio_{window}"] = _ratio(volume, self._volumes[window].mean(), 0.0)
        values["close_location"] = _ratio(close - low, high - low, 0.5)


    def _update_context(self, close: float, mark_price: float | None,
                        rates: list[float]) -> None:
        """Funding (the last two settlements known) and the basis to the newest mark."""
        values = self._values
        settlements = self._settlements
        settlements.extend(rates)
        del settlements[:-2]
        if len(settlements) == 2:
            values["funding_rate"] = settlements[1]
            values["funding_change"] = settlements[1] - settlements[0]
            values["funding_available"] = 1.0
        else:
            values["funding_rate"] = values["funding_change"] = values["funding_available"] = 0.0
        if mark_price is not None:
            self._mark = mark_price
        if self._mark == self._mark:
            values["basis"] = self._mark / close - 1.0
            values["basis_available"] = 1.0
        else:
            values["basis"] = values["basis_available"] = 0.0

    def _update_regime(self, close: float) -> None:
        """Efficiency ratio and trend flag; volatility level and its class."""
        values = self._values
        p = PARAMETERS
        previous_close = self._previous_close
        if previous_close == previous_close:
            self._regime_path.push(abs(close - previous_close))
        window = p.regime_window
        adx = values.get(f"adx_{p.adx_period}", math.nan)
        if self._regime_path.full:
            change = abs(close - self._lagged_close(window))
            efficiency = _ratio(change, self._regime_path.sum(), 0.0)
            values[f"er_{window}"] = efficiency
            if adx == adx:
                values["regime_trend"] = float(efficiency >= p.regime_trend_efficiency
                                               and adx >= p.regime_trend_adx)
        rv = values.get("rv_48", math.nan)
        history = self._rv_history
        if rv == rv and self._log_returns[48].full:
            history.push(rv)
        if history.full:
            level = _ratio(rv, history.mean(), 1.0)
            values[f"vol_level_48_{p.vol_level_window}"] = level
            values["regime_vol"] = (-1.0 if level < p.regime_vol_low
                                    else 1.0 if level > p.regime_vol_high else 0.0)
