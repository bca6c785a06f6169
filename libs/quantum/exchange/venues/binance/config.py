"""The Binance venue's configuration: access settings and the live book's config.

:class:`BinanceAccessSettings` are the ``QT_*`` keys shared by the services that talk to
the exchange (execution and reconcile inherit them); :class:`LiveConfig` is what the live
venue (:mod:`quantum.exchange.venues.binance.execution`) runs with, built from execution's
settings by :mod:`quantum.exchange.venues.binance.factory`.
"""

from __future__ import annotations

from dataclasses import dataclass
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


TESTNET_WS = "wss://stream.binancefuture.com/"
MAINNET_WS = "wss://fstream.binance.com/"


@dataclass
class LiveConfig:
    """Attributes:
        margin_type: ``ISOLATED`` or ``CROSSED`` for every traded symbol.
        taker_fee: fee rate assumed when a fill is known only from REST (no commission).
        poll_interval_s: REST polling of open orders while the user stream is healthy.
        keepalive_interval_s: listen key keep-alive (Binance expires a key after 60 min).
        maintenance_margin_rate: for the liquidation price reported to the exit-brain.
        ws_url: user data stream base URL.
        protective_orders: keep stop and take-profit orders resting on the exchange.
        recv_window_ms: the adapter's ``recvWindow`` (for declaring an order not placed).
        unknown_order_margin_s: beyond ``recvWindow``, how long an order queried as unknown
            stays uncertain before it is declared not placed.
        intent_retention_ms: how long (event time) a done intent is kept as the duplicate
            guard; longer than the approval freshness bound.
    """

    margin_type: str = "ISOLATED"
    taker_fee: float = 0.0004
    poll_interval_s: float = 5.0
    keepalive_interval_s: float = 1800.0
    maintenance_margin_rate: float = 0.004
    ws_url: str = ""
    protective_orders: bool = True
    recv_window_ms: int = 5000
    unknown_order_margin_s: float = 60.0
    intent_retention_ms: int = 3_600_000
