"""How the services build the Binance venue from their settings (``QT_EXCHANGE=binance``).

Keys read: the access settings (:class:`BinanceAccessSettings`: keys, testnet, REST URL,
``recvWindow``, timeout), read here and nowhere else; and, for execution's live book,
``binance_ws_url``, ``binance_margin_type``, ``binance_poll_interval_s``,
``binance_weight_limit``, ``protective_orders``, ``taker_fee`` and
``maintenance_margin_rate``.
"""

from __future__ import annotations

from typing import Any

from quantum.exchange.venues.binance.config import (
    MAINNET_WS,
    TESTNET_WS,
    BinanceAccessSettings,
    LiveConfig,
)
from quantum.exchange.venues.binance.execution import LiveExchange
from quantum.exchange.venues.binance.http import BinanceFutures
from quantum.exchange.venues.binance.weights import WeightBudget


def http_client(settings: BinanceAccessSettings, *,
                budget: WeightBudget | None = None) -> BinanceFutures:
    """The REST adapter from settings (keys read here and nowhere else); ``budget`` None:
    the adapter's own default budget."""
    return BinanceFutures(
        api_key=settings.binance_api_key.get_secret_value(),
        api_secret=settings.binance_api_secret.get_secret_value(),
        testnet=settings.binance_testnet, rest_url=settings.binance_rest_url or None,
        recv_window_ms=settings.binance_recv_window_ms, timeout_s=settings.binance_timeout_s,
        budget=budget,
    )


def live_config(settings: Any, *, intent_retention_ms: int) -> LiveConfig:
    """The live book's config from execution's settings."""
    return LiveConfig(
        margin_type=settings.binance_margin_type, taker_fee=settings.taker_fee,
        poll_interval_s=settings.binance_poll_interval_s,
        maintenance_margin_rate=settings.maintenance_margin_rate,
        ws_url=settings.binance_ws_url or (TESTNET_WS if settings.binance_testnet
                                           else MAINNET_WS),
        protective_orders=settings.protective_orders,
        recv_window_ms=settings.binance_recv_window_ms,
        unknown_order_margin_s=settings.binance_unknown_order_margin_s,
        intent_retention_ms=intent_retention_ms,
    )


class BinanceVenueFactory:
    """Binance USDⓈ-M futures, by the name ``binance``."""

    name = "binance"

    def create(self, settings: Any, *, order_retention_ms: int) -> LiveExchange:
        """The live book over a REST adapter whose weight budget is the account's limit."""
        adapter = http_client(settings, budget=WeightBudget(limit=settings.binance_weight_limit))
        return LiveExchange(adapter, live_config(settings, intent_retention_ms=order_retention_ms))

    def local_record(self, settings: Any) -> None:
        """None: a book lost with its state key is rebuilt from the exchange."""
        return None
