"""meta-regime: the trend and volatility regime of every symbol and of the market."""
