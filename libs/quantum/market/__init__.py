"""Market sources of the market-publisher: replay of data files and the live Binance feed.

Both publish identical ``market.kline`` and ``market.tick`` events (same ids, times and
values for the same bar), so every downstream service runs unchanged on either.
"""
