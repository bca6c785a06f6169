"""The replay market source of the market-publisher: data files stepped in event time.

The live source of each venue lives with the venue (``quantum.exchange.venues.binance.
market``); both publish identical ``market.kline`` and ``market.tick`` events (same ids,
times and values for the same bar), so every downstream service runs unchanged on either.
"""
