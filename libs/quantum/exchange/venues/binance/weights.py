"""Request-weight accounting and back-off, so the fleet never earns an IP ban.

Binance counts a weight per request over a one-minute window and reports the total in the
``X-MBX-USED-WEIGHT-1M`` header. Past the limit it answers ``429`` with ``Retry-After``;
ignoring 429s gets the IP banned with ``418`` (freqtrade #7187). The budget below keeps
its own count (reset at each minute boundary), trusts the exchange's header when present,
refuses a request that would cross ``limit × headroom``, and after a 429 or 418 refuses
everything until ``Retry-After`` has passed. A refusal is an exception, not a sleep: the
service loop carries on (heartbeat, exits queued) and retries on a later turn.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


class RateLimited(RuntimeError):
    """No request may be sent before ``retry_at`` (monotonic seconds)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Weights of the USDⓈ-M endpoints the adapter calls (Binance's documentation).
ENDPOINT_WEIGHTS: dict[str, int] = {
    "exchangeInfo": 1, "time": 1, "order": 1, "algoOrder": 1, "openOrders": 1,
    "openAlgoOrders": 1, "positionRisk": 5, "balance": 5, "account": 5, "leverage": 1,
    "marginType": 1, "listenKey": 1, "allOpenOrders": 1, "algoOpenOrders": 1, "income": 30,
    "ticker24hr": 40, "bookTicker": 5,  # all symbols at once (the universe service)
}


@dataclass
class WeightBudget:
    """The request weight spent in the current minute and any ban in force.

    Attributes:
        limit: the account's ``REQUEST_WEIGHT`` per minute (2400 on USDⓈ-M futures).
        headroom: the share of ``limit`` the fleet allows itself.
        clock: monotonic seconds (injectable so tests need no sleeping).
        wall: wall-clock seconds, for the minute boundary the exchange uses.
    """

    limit: int = 2400
    headroom: float = 0.8
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    used: int = 0
    minute: int = 0
    banned_until: float = 0.0
    bans: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _roll(self) -> None:
        minute = int(self.wall() // 60)
        if minute != self.minute:
            self.minute = minute
            self.used = 0

    def acquire(self, weight: int) -> None:
        """Reserve ``weight`` or raise :class:`RateLimited` saying how long to wait."""
        with self._lock:
            now = self.clock()
            if now < self.banned_until:
                wait = self.banned_until - now
                raise RateLimited(f"backing off after 429/418 for {wait:.1f}s more", wait)
            self._roll()
            if self.used + weight > self.limit * self.headroom:
                wait = 60.0 - self.wall() % 60
                raise RateLimited(f"request weight {self.used}+{weight} would pass "
                                  f"{self.headroom:.0%} of {self.limit}", wait)
            self.used += weight

    def observe(self, headers: Mapping[str, str]) -> None:
        """Take the exchange's own count from a response's headers."""
        for name, value in headers.items():
            if name.lower() == "x-mbx-used-weight-1m":
                try:
                    reported = int(value)
                except ValueError:
                    return
                with self._lock:
                    self._roll()
                    self.used = max(self.used, reported)
                return

    def ban(self, status: int, retry_after: str | None) -> float:
        """Record a 429/418; returns the seconds to wait (``Retry-After``, else a guess)."""
        try:
            wait = float(retry_after) if retry_after is not None else 0.0
        except ValueError:
            wait = 0.0
        if wait <= 0:
            wait = 120.0 if status == 418 else 60.0 - self.wall() % 60
        with self._lock:
            self.banned_until = max(self.banned_until, self.clock() + wait)
            self.bans += 1
        return wait
