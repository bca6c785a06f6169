"""Income: what a venue booked to the wallet, one record per booking, as Binance keeps it.

Binance USDⓈ-M futures reports every change of the wallet in its income history
(``GET /fapi/v1/income``): ``REALIZED_PNL`` per closing fill, ``COMMISSION`` per fill
(negative: paid), ``FUNDING_FEE`` per funding settlement of an open position (negative when
paid), and other types (transfers, rebates, insurance clear) the ledger does not compare.
The paper venue books the same records, with the same signs, from its own fills and funding
(:mod:`quantum.exchange.venues.paper.execution`), so the ledger compares the journal with
either venue the same way (:mod:`quantum.ledger`).

``trade_id`` is the venue's trade the record belongs to: the fleet's position id on the paper
venue, Binance's numeric trade id (as text, empty for funding) on Binance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

REALIZED_PNL = "REALIZED_PNL"
COMMISSION = "COMMISSION"
FUNDING_FEE = "FUNDING_FEE"
COMPARED_TYPES = (REALIZED_PNL, COMMISSION, FUNDING_FEE)


@dataclass(frozen=True, slots=True)
class IncomeRecord:
    """One booking: ``amount`` in ``asset``, signed as the wallet saw it (+ received)."""

    symbol: str
    income_type: str
    amount: float
    asset: str
    time_ms: int
    tran_id: str
    trade_id: str = ""

    def document(self) -> dict[str, Any]:
        """As JSON-able data (the paper venue's income trail)."""
        return asdict(self)

    @classmethod
    def from_document(cls, data: dict[str, Any]) -> IncomeRecord:
        return cls(symbol=str(data["symbol"]), income_type=str(data["income_type"]),
                   amount=float(data["amount"]), asset=str(data["asset"]),
                   time_ms=int(data["time_ms"]), tran_id=str(data["tran_id"]),
                   trade_id=str(data.get("trade_id", "")))
