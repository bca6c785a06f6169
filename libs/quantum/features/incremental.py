"""O(1) building blocks for the streaming path, one small class per kind of state.

Each block mirrors one pandas operation used by the batch path closely enough that the two
agree to about 1e-12, including the corner cases that decide finiteness:

* :class:`ExponentialAverage` uses the same update as ``Series.ewm(adjust=False)``.
* :class:`WilderAverage` is seeded by the mean of its first ``period`` inputs, as
  ``batch._wilder`` is.
* :class:`RollingWindow` keeps running sums of deviations from an anchor (a recent value),
  not raw sums: ``sum(x**2) - sum(x)**2 / n`` on prices near 100,000 would cancel away most
  digits of a variance. The sums are rebuilt exactly from the window every ``window``
  updates, so rounding cannot drift, and a window of identical values reports that value as
  its mean and exactly zero spread, as pandas' rolling kernels do.
* :class:`RollingExtreme` is the monotonic-deque rolling minimum/maximum.
"""

from __future__ import annotations

import math
from collections import deque


class ExponentialAverage:
    """EMA started at the first input; ``ready`` after ``min_periods`` inputs.

    ``alpha`` is derived through pandas' centre-of-mass form so the weights are bit-identical
    to ``ewm(span=...)`` / ``ewm(alpha=...)``.
    """

    __slots__ = ("_alpha", "_count", "_denominator", "_keep", "min_periods", "value")

    def __init__(self, *, span: float | None = None, alpha: float | None = None,
                 min_periods: int = 1) -> None:
        if span is not None and alpha is None:
            center_of_mass = (span - 1.0) / 2.0
        elif alpha is not None and span is None:
            center_of_mass = 1.0 / alpha - 1.0
        else:
            raise ValueError("give exactly one of span or alpha")
        self._alpha = 1.0 / (1.0 + center_of_mass)
        self._keep = 1.0 - self._alpha
        self._denominator = self._keep + self._alpha
        self._count = 0
        self.min_periods = min_periods
        self.value = math.nan

    def update(self, x: float) -> float:
        """Fold ``x`` in and return the new average."""
        if self._count == 0:
            self.value = x
        elif self.value != x:
            self.value = (self._keep * self.value + self._alpha * x) / self._denominator
        self._count += 1
        return self.value

    @property
    def ready(self) -> bool:
        return self._count >= self.min_periods


class WilderAverage:
    """Wilder's smoothing: the mean of the first ``period`` inputs, then alpha ``1/period``."""

    __slots__ = ("_average", "_seed_count", "_seed_sum", "period")

    def __init__(self, period: int) -> None:
        self.period = period
        self._seed_sum = 0.0
        self._seed_count = 0
        self._average = ExponentialAverage(alpha=1.0 / period)

    def update(self, x: float) -> float:
        """Fold ``x`` in; NaN until ``period`` inputs have been seen."""
        if self._seed_count < self.period:
            self._seed_sum += x
            self._seed_count += 1
            if self._seed_count < self.period:
                return math.nan
            return self._average.update(self._seed_sum / self.period)
        return self._average.update(x)

    @property
    def ready(self) -> bool:
        return self._seed_count >= self.period

    @property
    def value(self) -> float:
        return self._average.value if self.ready else math.nan


class RollingWindow:
    """Sum, mean, variance and linearly weighted mean of the last ``window`` values."""

    __slots__ = ("_anchor", "_last", "_same_run", "_since_rebuild", "_sum", "_sum_squares",
                 "_values", "_weighted", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self._values: deque[float] = deque()
        self._anchor = 0.0
        self._sum = 0.0          # sum of (x - anchor)
        self._sum_squares = 0.0  # sum of (x - anchor) ** 2
        self._weighted = 0.0     # sum of i * (x_i - anchor), oldest i = 1
        self._since_rebuild = 0
        self._same_run = 0
        self._last = math.nan

    def push(self, x: float) -> None:
        """Append ``x``, dropping the oldest value once the window is full."""
        values = self._values
        anchor = self._anchor
        deviation = x - anchor
        if len(values) == self.window:
            old = values.popleft() - anchor
            # Shifting every weight down by one removes the old sum (old value included).
            self._weighted += self.window * deviation - self._sum
            self._sum += deviation - old
            self._sum_squares += deviation * deviation - old * old
        else:
            self._sum += deviation
            self._sum_squares += deviation * deviation
            self._weighted += (len(values) + 1) * deviation
        values.append(x)
        self._same_run = self._same_run + 1 if x == self._last else 1
        self._last = x
        self._since_rebuild += 1
        if self._since_rebuild >= self.window:
            self._rebuild()

    def _rebuild(self) -> None:
        """Recompute the sums exactly around the newest value, cancelling any drift."""
        anchor = self._last
        deviations = [value - anchor for value in self._values]
        self._anchor = anchor
        self._sum = math.fsum(deviations)
        self._sum_squares = math.fsum(d * d for d in deviations)
        self._weighted = math.fsum(i * d for i, d in enumerate(deviations, start=1))
        self._since_rebuild = 0

    @property
    def full(self) -> bool:
        return len(self._values) == self.window

    @property
    def constant(self) -> bool:
        """Whether every value in the (full) window is identical."""
        return self._same_run >= self.window

    def sum(self) -> float:
        if self.constant:
            return self._last * self.window
        return self._anchor * len(self._values) + self._sum

    def mean(self) -> float:
        if self.constant:
            return self._last
        return self._anchor + self._sum / len(self._values)

    def variance(self, ddof: int = 0) -> float:
        """Population (``ddof=0``) or sample (``ddof=1``) variance; exactly 0 if constant."""
        if self.constant:
            return 0.0
        count = len(self._values)
        squares = self._sum_squares - self._sum * self._sum / count
        return max(squares, 0.0) / (count - ddof)

    def weighted_mean(self) -> float:
        """Linearly weighted mean, newest weight ``window``: ta's / TradingView's WMA."""
        if self.constant:
            return self._last
        count = len(self._values)
        return self._anchor + self._weighted / (count * (count + 1) / 2.0)


class RollingExtreme:
    """Rolling minimum or maximum over ``window`` values, amortised O(1) per update."""

    __slots__ = ("_candidates", "_count", "_maximum", "window")

    def __init__(self, window: int, *, maximum: bool) -> None:
        self.window = window
        self._maximum = maximum
        self._candidates: deque[tuple[int, float]] = deque()
        self._count = 0

    def push(self, x: float) -> float:
        """Append ``x`` and return the extreme of the last ``window`` values."""
        candidates = self._candidates
        if self._maximum:
            while candidates and candidates[-1][1] <= x:
                candidates.pop()
        else:
            while candidates and candidates[-1][1] >= x:
                candidates.pop()
        candidates.append((self._count, x))
        if candidates[0][0] <= self._count - self.window:
            candidates.popleft()
        self._count += 1
        return candidates[0][1]


class RollingBeta:
    """``cov(x, y) / var(y)`` over the last ``window`` pairs, defined only when every pair
    in the window is (a NaN in either breaks the pair); 0 when ``y`` is constant.

    Sums of ``x``, ``y``, ``x*y`` and ``y*y`` over the window are kept and rebuilt exactly
    (``math.fsum``) every ``window`` pushes. The inputs are one-bar log returns, whose mean is
    tiny against their spread, so the one-pass form loses no meaningful digits.
    """

    __slots__ = ("_invalid", "_pairs", "_same_run", "_since_rebuild", "_sums", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self._pairs: deque[tuple[float, float]] = deque()
        self._sums = [0.0, 0.0, 0.0, 0.0]  # x, y, x*y, y*y over the valid pairs
        self._invalid = 0
        self._since_rebuild = 0
        self._same_run = 0

    def push(self, x: float, y: float) -> None:
        pairs = self._pairs
        sums = self._sums
        valid = x == x and y == y
        previous_y = pairs[-1][1] if pairs else math.nan
        if len(pairs) == self.window:
            old_x, old_y = pairs.popleft()
            if old_x == old_x and old_y == old_y:
                sums[0] -= old_x
                sums[1] -= old_y
                sums[2] -= old_x * old_y
                sums[3] -= old_y * old_y
            else:
                self._invalid -= 1
        pairs.append((x, y))
        if valid:
            sums[0] += x
            sums[1] += y
            sums[2] += x * y
            sums[3] += y * y
        else:
            self._invalid += 1
        self._same_run = self._same_run + 1 if valid and y == previous_y else (1 if valid else 0)
        self._since_rebuild += 1
        if self._since_rebuild >= self.window:
            self._rebuild()

    def _rebuild(self) -> None:
        good = [(x, y) for x, y in self._pairs if x == x and y == y]
        self._sums = [math.fsum(x for x, _ in good), math.fsum(y for _, y in good),
                      math.fsum(x * y for x, y in good), math.fsum(y * y for _, y in good)]
        self._since_rebuild = 0

    @property
    def ready(self) -> bool:
        return len(self._pairs) == self.window and self._invalid == 0

    def beta(self) -> float:
        if self._same_run >= self.window:
            return 0.0
        sum_x, sum_y, sum_xy, sum_yy = self._sums
        count = self.window
        covariance = sum_xy - sum_x * sum_y / count
        variance = sum_yy - sum_y * sum_y / count
        return covariance / variance if variance > 0.0 else 0.0
