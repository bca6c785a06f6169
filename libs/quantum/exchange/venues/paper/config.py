"""The paper exchange's economics: what a fresh paper book starts from.

Read from execution's settings (``QT_INITIAL_BALANCE``, ``QT_TAKER_FEE``, ``QT_MAKER_FEE``,
``QT_SLIPPAGE_BPS``, ``QT_MAINTENANCE_MARGIN_RATE``) by the paper factory. A restored book
keeps the economics its snapshot holds; only the duplicate guard's retention follows the
running service.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ORDER_RETENTION_MS = 3_600_000


@dataclass(frozen=True, kw_only=True)
class PaperConfig:
    """Attributes:
    initial_balance: wallet balance in USDT of a fresh book.
    taker_fee: fee rate of a fill that takes liquidity (market entries, every exit).
    maker_fee: fee rate of a resting limit entry's fill (post-only maker entries).
    slippage_bps: adverse slippage on market fills, in basis points.
    maintenance_margin_rate: for the liquidation price.
    order_retention_ms: how long (event time) a client order id is kept as the duplicate
        guard; execution sets it longer than the approval freshness bound.
    """

    initial_balance: float = 10_000.0
    taker_fee: float = 0.0004
    maker_fee: float = 0.0002
    slippage_bps: float = 2.0
    maintenance_margin_rate: float = 0.004
    order_retention_ms: int = DEFAULT_ORDER_RETENTION_MS
