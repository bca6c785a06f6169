"""Other venues' public market data (Bybit linear perpetuals, Coinbase spot) as fleet events
on ``exchange.normalized``: the cross-exchange-aggregator's feeds (docs/CROSS_EXCHANGE.md)."""
