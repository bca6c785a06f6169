"""The symbol universe: what the fleet may trade, ranked from the market and its own results.

:mod:`~quantum.universe.bars` measures each symbol on the fleet's own closed bars (24 h
quote volume, a spread estimate, volatility, history, completeness);
:mod:`~quantum.universe.exchange` reads the exchange's listing, 24 h statistics and book
over python-binance; :mod:`~quantum.universe.ranking` applies the policy's filters and
profile size and says, per symbol, why it is in or out. The ``universe`` service
(``services/universe``) runs them and publishes ``universe.updated``.
"""
