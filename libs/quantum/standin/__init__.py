"""Local stand-ins for external venues, so tests and local runs need no internet.

:mod:`quantum.standin.binance_ws` plays recorded bars as the Binance USDⓈ-M futures
market: the WebSocket market streams and the REST market data python-binance calls.
"""

from quantum.standin.binance_ws import BinanceStandIn, MarketTape

__all__ = ["BinanceStandIn", "MarketTape"]
