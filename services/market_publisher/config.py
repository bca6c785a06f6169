"""market-publisher settings (``QT_*``; env file ``etc/quantum/market-publisher.env``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """Attributes:
    source: ``replay`` reads data files; ``binance`` streams USDⓈ-M futures over WebSocket.
    data_dir: directory of ``<SYMBOL>-5m.csv.gz`` (and optional funding and mark files).
    symbols: comma-separated universe, e.g. ``BTCUSDT,ETHUSDT``.
    replay_start / replay_end: ISO times bounding the replay (inclusive / exclusive).
    replay_speed: ``max`` (as fast as the fleet drains) or a factor of real time.
    interval: kline interval.
    binance_testnet: stream from the futures testnet (default) rather than mainnet.
    binance_ws_url: override the WebSocket base URL (a local stand-in in tests).
    binance_rest_url: override the REST base URL used to back-fill candles after a drop.
    max_stream_lag: live backpressure bound: pause publishing while any group lags more.
    follow_universe: live: stream the universe service's selection
        (``quantum:state:universe``) instead of ``symbols`` once it has published one,
        adding and dropping symbol streams without a restart (``symbols`` until then).
    """

    source: Literal["replay", "binance"] = "replay"
    data_dir: str = "data/sample"
    symbols: str = "BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT,XRPUSDT"
    replay_start: str | None = None
    replay_end: str | None = None
    replay_speed: str = "max"
    interval: str = "5m"
    binance_testnet: bool = True
    binance_ws_url: str | None = None
    binance_rest_url: str | None = None
    max_stream_lag: int = Field(10_000, ge=1)
    follow_universe: bool = True
