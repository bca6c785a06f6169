"""reconcile settings: how often, and what to do with a position the fleet does not know."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from quantum.config import ConfigError, FleetSettings


class Settings(FleetSettings):
    """Attributes:
    exchange: ``paper`` (the book is its own exchange: nothing to compare) or ``binance``.
    binance_api_key: API key (binance mode); never logged.
    binance_api_secret: API secret (binance mode); never logged.
    binance_testnet: use the futures testnet (the default).
    binance_mainnet_opt_in: must be true to act on mainnet with binance_testnet false.
    binance_rest_url: REST base URL replacing python-binance's (a local stand-in).
    binance_recv_window_ms: ``recvWindow`` of signed requests.
    binance_timeout_s: bound of every HTTP call.
    reconcile_interval_s: seconds between passes (one also runs at start).
    reconcile_settle_s: after a fill, wait this long before an extra pass.
    unknown_position_policy: ``protect`` (rest a close-position stop) or ``close`` it.
    unknown_position_stop_pct: distance of that stop from the entry price.
    """

    exchange: Literal["paper", "binance"] = "paper"
    binance_api_key: SecretStr = SecretStr("")
    binance_api_secret: SecretStr = SecretStr("")
    binance_testnet: bool = True
    binance_mainnet_opt_in: bool = False
    binance_rest_url: str = ""
    binance_recv_window_ms: int = Field(5000, ge=1, le=60_000)
    binance_timeout_s: float = Field(5.0, gt=0, le=60)
    reconcile_interval_s: float = Field(60.0, gt=0)
    reconcile_settle_s: float = Field(2.0, ge=0)
    unknown_position_policy: Literal["protect", "close"] = "protect"
    unknown_position_stop_pct: float = Field(0.02, gt=0, lt=0.5)

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
