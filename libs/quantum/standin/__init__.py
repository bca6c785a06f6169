"""Local stand-ins for external venues, so tests and local runs need no internet.

:mod:`quantum.standin.binance_ws` plays recorded bars as the Binance USDⓈ-M futures
market: the WebSocket market streams and the REST market data python-binance calls.
:mod:`quantum.standin.bybit` and :mod:`quantum.standin.coinbase` play the same bars as Bybit's
v5 linear and Coinbase Exchange's public market data (WebSocket and REST), for the
cross-exchange-aggregator.
"""

from quantum.standin.binance_ws import BinanceStandIn, MarketTape

__all__ = ["BinanceStandIn", "MarketTape"]
