"""The meta-regime's state key as other services read it (through their ``State`` port).

A regime is *usable* for a decision at ``at_ms`` when the bar it classified closed no more
than ``max_age_ms`` before; a missing key, a symbol not classified yet (warming up) or an
old call is no regime at all, and what that means is the reader's policy: sizing uses no
factor, the governor refuses an entry only when the policy asks it to act on regimes
(``regime_unavailable``: fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from quantum.registry.fleet import META_REGIME_KEY


@dataclass(frozen=True)
class RegimeView:
    """The current regimes: ``symbols`` and ``market`` as the state key holds them."""

    symbols: dict[str, dict[str, Any]]
    market: dict[str, Any] | None
    scores: dict[str, Any]

    @classmethod
    def parse(cls, raw: bytes | None) -> RegimeView:
        if raw is None:
            return cls({}, None, {})
        document = orjson.loads(raw)
        return cls(document.get("symbols", {}), document.get("market"),
                   document.get("scores", {}))

    def of(self, scope: str, at_ms: int, max_age_ms: int) -> dict[str, Any] | None:
        """The regime of a symbol (or ``MARKET``) usable at ``at_ms``, else None."""
        reading = self.market if scope == "MARKET" else self.symbols.get(scope)
        if reading is None or at_ms - int(reading["bar_time"]) > max_age_ms:
            return None
        return reading

    def labels(self, scope: str, at_ms: int, max_age_ms: int) -> tuple[str, ...] | None:
        """``(trend, volatility)`` of a scope usable at ``at_ms``, else None."""
        reading = self.of(scope, at_ms, max_age_ms)
        return None if reading is None else (reading["trend"], reading["volatility"])


def read(state: Any) -> RegimeView:
    """The view from a ``State`` port."""
    return RegimeView.parse(state.get(META_REGIME_KEY))
