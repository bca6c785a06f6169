"""execution settings: which exchange, the paper exchange's economics, Binance access."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from quantum.config import ConfigError, FleetSettings


class Settings(FleetSettings):
    """Attributes:
    exchange: ``paper`` (simulated fills in event time) or ``binance`` (USDⓈ-M futures).
    initial_balance: paper wallet balance in USDT.
    taker_fee: fee rate per fill (paper; live fills known only from REST assume it).
    slippage_bps: adverse slippage on paper market fills, in basis points.
    maintenance_margin_rate: for the liquidation price.
    binance_api_key: API key (binance mode); never logged.
    binance_api_secret: API secret (binance mode); never logged.
    binance_testnet: use the futures testnet (the default).
    binance_mainnet_opt_in: must be true to trade real money with binance_testnet false.
    binance_rest_url: REST base URL replacing python-binance's (a local stand-in).
    binance_ws_url: user data stream base URL; empty: Binance's (testnet or mainnet).
    binance_recv_window_ms: ``recvWindow`` of signed requests.
    binance_timeout_s: bound of every HTTP call.
    binance_margin_type: ``ISOLATED`` or ``CROSSED``.
    binance_poll_interval_s: REST polling of open orders while the user stream is healthy.
    binance_weight_limit: request weight per minute of the account.
    protective_orders: keep reduce-only stop and take-profit orders on the exchange.
    """

    exchange: Literal["paper", "binance"] = "paper"
    initial_balance: float = Field(10_000.0, gt=0)
    taker_fee: float = Field(0.0004, ge=0, le=0.01)
    slippage_bps: float = Field(2.0, ge=0, le=100)
    maintenance_margin_rate: float = Field(0.004, gt=0, lt=1)
    binance_api_key: SecretStr = SecretStr("")
    binance_api_secret: SecretStr = SecretStr("")
    binance_testnet: bool = True
    binance_mainnet_opt_in: bool = False
    binance_rest_url: str = ""
    binance_ws_url: str = ""
    binance_recv_window_ms: int = Field(5000, ge=1, le=60_000)
    binance_timeout_s: float = Field(5.0, gt=0, le=60)
    binance_margin_type: Literal["ISOLATED", "CROSSED"] = "ISOLATED"
    binance_poll_interval_s: float = Field(5.0, gt=0)
    binance_weight_limit: int = Field(2400, ge=1)
    protective_orders: bool = True

    @model_validator(mode="after")
    def _binance_access(self) -> Settings:
        """Binance mode needs both keys; mainnet needs an explicit opt-in."""
        if self.exchange != "binance":
            return self
        for name in ("binance_api_key", "binance_api_secret"):
            if not getattr(self, name).get_secret_value():
                raise ConfigError(f"missing setting QT_{name.upper()}: required when "
                                  "QT_EXCHANGE=binance")
        if not self.binance_testnet and not self.binance_mainnet_opt_in:
            raise ConfigError("QT_BINANCE_TESTNET=false trades real money: set "
                              "QT_BINANCE_MAINNET_OPT_IN=true to confirm")
        return self
