"""The Binance venue: USDⓈ-M futures, for execution, reconcile and the market-publisher.

``config`` (access settings and the live book's config), ``http`` (the REST adapter over
python-binance), ``ws`` (the user data stream), ``execution`` (:class:`LiveExchange`, the
fleet's book kept against the exchange), ``market`` (the live market data source),
``filters`` (symbol filters and order rounding), ``weights`` (request weight and back-off)
and ``factory`` (how execution and reconcile build them from settings, by the name
``binance``).
"""
