"""execution settings: which exchange, and the paper exchange's economics."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    exchange: ``paper`` (simulated fills) or ``binance`` (USDⓈ-M futures).
    initial_balance: paper wallet balance in USDT.
    taker_fee: fee rate per fill.
    slippage_bps: adverse slippage on market fills, in basis points.
    maintenance_margin_rate: for the paper liquidation price.
    binance_api_key / binance_api_secret: required in binance mode; never logged.
    binance_testnet: trade on the futures testnet (default).
    binance_mainnet_opt_in: must be true to trade real money on mainnet.
    """

    exchange: Literal["paper", "binance"] = "paper"
    initial_balance: float = Field(10_000.0, gt=0)
    taker_fee: float = Field(0.0004, ge=0, le=0.01)
    slippage_bps: float = Field(2.0, ge=0, le=100)
    maintenance_margin_rate: float = Field(0.004, gt=0, lt=1)
    binance_api_key: SecretStr | None = None
    binance_api_secret: SecretStr | None = None
    binance_testnet: bool = True
    binance_mainnet_opt_in: bool = False
