"""Binance access settings shared by the services that talk to the exchange."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from quantum.config import ConfigError, FleetSettings


class BinanceAccessSettings(FleetSettings):
    """Attributes:
    exchange: ``paper`` (simulated fills in event time) or ``binance`` (USDⓈ-M futures).
    binance_api_key: API key (binance mode); never logged.
    binance_api_secret: API secret (binance mode); never logged.
    binance_testnet: use the futures testnet (the default).
    binance_mainnet_opt_in: must be true to trade real money with binance_testnet false.
    binance_rest_url: REST base URL replacing python-binance's (a local stand-in).
    binance_recv_window_ms: ``recvWindow`` of signed requests.
    binance_timeout_s: bound of every HTTP call.
    """

    exchange: Literal["paper", "binance"] = "paper"
    binance_api_key: SecretStr = SecretStr("")
    binance_api_secret: SecretStr = SecretStr("")
    binance_testnet: bool = True
    binance_mainnet_opt_in: bool = False
    binance_rest_url: str = ""
    binance_recv_window_ms: int = Field(5000, ge=1, le=60_000)
    binance_timeout_s: float = Field(5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _binance_access(self) -> BinanceAccessSettings:
        """Binance mode needs both keys; mainnet needs an explicit opt-in."""
        if self.exchange != "binance":
            return self
        for name in ("binance_api_key", "binance_api_secret"):
            if not getattr(self, name).get_secret_value():
                raise ConfigError(
                    f"missing setting QT_{name.upper()}: required when QT_EXCHANGE=binance"
                )
        if not self.binance_testnet and not self.binance_mainnet_opt_in:
            raise ConfigError(
                "QT_BINANCE_TESTNET=false trades real money: set "
                "QT_BINANCE_MAINNET_OPT_IN=true to confirm"
            )
        return self
