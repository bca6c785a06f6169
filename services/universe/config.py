"""universe settings (``QT_*``; env file ``etc/quantum/universe.env``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """The filters, the profile size and the ranking interval are policy
    (``quantumctl universe``), not settings: they change without a restart, audited.

    Attributes:
        source: ``binance`` ranks the exchange's listing with its 24 h statistics and book
            (over python-binance) and the fleet's own bars; ``replay`` ranks on the
            fleet's bars alone, so a replay's universe is what its data could say then.
        interval: the kline interval of the bars it measures.
        binance_testnet: the futures testnet's public data (default) rather than mainnet's.
        binance_rest_url: REST base URL replacing python-binance's (a local stand-in).
        binance_timeout_s: bound of each request.
        retry_max_s: longest wait between attempts while the exchange cannot be reached
            (the wait doubles from 5 s); the service keeps running and reporting meanwhile.
    """

    source: Literal["replay", "binance"] = "binance"
    interval: str = "5m"
    binance_testnet: bool = True
    binance_rest_url: str = ""
    binance_timeout_s: float = Field(5.0, gt=0, le=60)
    retry_max_s: float = Field(300.0, ge=1, le=3600)
