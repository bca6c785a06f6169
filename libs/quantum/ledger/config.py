"""The ledger's settings (the service's and `quantumctl ledger`'s): which journal, how often, how
far back, and what counts as rounding."""

from __future__ import annotations

from pydantic import Field

from quantum.config import SecretStr
from quantum.exchange.venues.binance.config import BinanceAccessSettings


class Settings(BinanceAccessSettings):
    """Attributes:
    database_url: SQLAlchemy URL of the journal (the journal service's setting, shared;
        read only); empty = its default SQLite file. A secret: it may hold a password.
    ledger_interval_s: seconds between comparisons (one also follows each closed trade,
        once it has settled).
    ledger_settle_s: trades and income younger than this wait for a later comparison, so
        that the journal has written what the venue booked.
    ledger_lookback_days: UTC days compared, today included.
    ledger_tolerance_usdt: a difference up to this many units of the asset is rounding.
    ledger_tolerance_ratio: or up to this share of the larger amount (per trade and day).
    ledger_match_slack_s: an income record belongs to a trade whose entry-to-exit time,
        widened by this on each side, holds its time (venue and fleet clocks differ).
    ledger_asset: the settlement asset compared (income in other assets is counted apart).
    """

    database_url: SecretStr = SecretStr("")
    ledger_interval_s: float = Field(300.0, gt=0)
    ledger_settle_s: float = Field(60.0, ge=0)
    ledger_lookback_days: int = Field(7, ge=1, le=90)
    ledger_tolerance_usdt: float = Field(0.01, ge=0)
    ledger_tolerance_ratio: float = Field(0.0005, ge=0, lt=1)
    ledger_match_slack_s: float = Field(5.0, ge=0, le=3600)
    ledger_asset: str = Field("USDT", min_length=1, max_length=10)
