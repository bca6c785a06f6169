"""execution settings: which exchange, the paper exchange's economics, Binance access."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantum.exchange.venues.binance.config import BinanceAccessSettings


class Settings(BinanceAccessSettings):
    """Attributes:
    initial_balance: paper wallet balance in USDT.
    taker_fee: fee rate per fill (paper; live fills known only from REST assume it).
    maker_fee: fee rate of a paper maker entry's fill (a post-only limit order that rested).
    slippage_bps: adverse slippage on paper market fills, in basis points.
    maintenance_margin_rate: for the liquidation price.
    binance_ws_url: user data stream base URL; empty: Binance's (testnet or mainnet).
    binance_margin_type: ``ISOLATED`` or ``CROSSED``.
    binance_poll_interval_s: REST polling of open orders while the user stream is healthy.
    binance_weight_limit: request weight per minute of the account.
    binance_unknown_order_margin_s: beyond ``recvWindow``, how long an order the exchange
        says it does not know stays uncertain (queried again) before it is declared not
        placed; covers clock skew and a request still in flight (a takeover's, too).
    protective_orders: keep reduce-only stop and take-profit orders on the exchange.
    approval_max_age_seconds: an entry order whose approval (its plan's bar time) is older
        than this is refused; the same key and bound as the apply-layer's.
    book_record_dir: where the paper book keeps its durable local record (rebuilt from it
        when the state key is lost); empty: ``$STATE_DIRECTORY/execution`` under systemd,
        else ``var/state``. Not used on the event clock (replays start from a fresh book).
    """

    initial_balance: float = Field(10_000.0, gt=0)
    taker_fee: float = Field(0.0004, ge=0, le=0.01)
    maker_fee: float = Field(0.0002, ge=0, le=0.01)
    slippage_bps: float = Field(2.0, ge=0, le=100)
    maintenance_margin_rate: float = Field(0.004, gt=0, lt=1)
    binance_ws_url: str = ""
    binance_margin_type: Literal["ISOLATED", "CROSSED"] = "ISOLATED"
    binance_poll_interval_s: float = Field(5.0, gt=0)
    binance_weight_limit: int = Field(2400, ge=1)
    binance_unknown_order_margin_s: float = Field(60.0, ge=0, le=3600)
    protective_orders: bool = True
    approval_max_age_seconds: int = Field(600, ge=1)
    book_record_dir: str = ""
