"""feature-publisher: one streaming feature state per symbol, one vector per closed bar."""

from __future__ import annotations

from typing import Any

from quantum import features
from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import FeatureVector, Kline
from quantum.contracts.streams import FEATURES, MARKET_KLINES

NAME = "feature-publisher"


class FeaturePublisher(ServiceBase):
    name = NAME

    def __init__(self, restore_bars: int, ports: Ports) -> None:
        self.restore_bars = restore_bars
        self.history = ports.history
        self.states: dict[str, features.StreamingFeatures] = {}
        self.last_open_time: dict[str, int] = {}
        self.primed: dict[str, dict[int, dict[str, float] | None]] = {}

    def prime(self, symbol: str, table: dict[int, dict[str, float] | None]) -> None:
        """The features of ``symbol``'s coming bars (open time → values, None in warm-up),
        computed ahead by the same streaming code: the in-process engine does it for every
        symbol in parallel (:func:`quantum.features.stream_table`). A primed symbol is never
        computed here; a bar missing from its table is an error, never a fallback."""
        self.primed[symbol] = table

    def _update(self, kline: Kline) -> dict[str, float] | None:
        """Feed one bar; bars at or before the last one seen are ignored (redelivery)."""
        if kline.open_time <= self.last_open_time.get(kline.symbol, -1):
            return None
        self.last_open_time[kline.symbol] = kline.open_time
        primed = self.primed.get(kline.symbol)
        if primed is not None:
            try:
                return primed.pop(kline.open_time)
            except KeyError:
                raise RuntimeError(f"{kline.symbol} {kline.open_time}: not in the primed "
                                   "features") from None
        state = self.states.get(kline.symbol)
        if state is None:
            state = self.states[kline.symbol] = features.StreamingFeatures()
        return state.update(kline.open, kline.high, kline.low, kline.close, kline.volume)

    def restore(self) -> None:
        """Warm up from bars this group already handled (acked) in ``market.klines``."""
        self.states.clear()
        self.last_open_time.clear()
        if self.restore_bars == 0:
            return
        bars: dict[str, list[Kline]] = {}
        for event in self.history.handled(MARKET_KLINES, NAME, self.restore_bars * 50):
            if isinstance(event.payload, Kline):
                bars.setdefault(event.payload.symbol, []).append(event.payload)
        for symbol_bars in bars.values():
            for kline in symbol_bars[-self.restore_bars :]:
                self._update(kline)

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        kline: Kline = event.payload
        values = self._update(kline)
        if values is None:
            return
        payload = FeatureVector(
            symbol=kline.symbol,
            interval=kline.interval,
            open_time=kline.open_time,
            close_time=kline.close_time,
            close=kline.close,
            schema_hash=features.SCHEMA_HASH,
            values=values,
        )
        out.emit(FEATURES, new_envelope(payload, ts=event.ts, source=NAME, cause=event))


def build(settings: Any, ports: Ports) -> FeaturePublisher:
    return FeaturePublisher(settings.restore_bars, ports)
