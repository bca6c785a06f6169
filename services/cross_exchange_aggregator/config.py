"""cross-exchange-aggregator settings (``QT_*``; env file
``etc/quantum/cross-exchange-aggregator.env``)."""

from __future__ import annotations

from pydantic import Field

from quantum.config import FleetSettings
from quantum.crossexchange import bybit, coinbase


class Settings(FleetSettings):
    """Attributes:
    venues: comma-separated venues to stream, of ``bybit`` and ``coinbase``; empty (the
        default) runs the service idle: healthy, heartbeat, no connection anywhere.
    symbols: fleet symbols whose other-venue prices are wanted, e.g. ``BTCUSDT,ETHUSDT``
        (Bybit's perpetual of the same name; Coinbase's ``<BASE>-<coinbase_quote>`` spot).
    interval: candle interval, one of 1m, 5m, 15m, 1h, 6h, 1d.
    bybit_ws_url: Bybit's public linear WebSocket (a local stand-in in tests).
    bybit_rest_url: Bybit's REST base URL for the kline and funding back-fill.
    coinbase_ws_url: Coinbase Exchange's public WebSocket feed.
    coinbase_rest_url: Coinbase Exchange's REST base URL for candles.
    coinbase_quote: the quote currency of the Coinbase spot products (``USD``).
    """

    venues: str = ""
    symbols: str = "BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT,XRPUSDT"
    interval: str = "5m"
    bybit_ws_url: str = bybit.WS_URL
    bybit_rest_url: str = bybit.REST_URL
    coinbase_ws_url: str = coinbase.WS_URL
    coinbase_rest_url: str = coinbase.REST_URL
    coinbase_quote: str = Field("USD", pattern=r"^[A-Z]{3,5}$")
