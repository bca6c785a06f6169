"""feature-publisher: the streaming features of the whole universe, one vector per closed bar.

Klines drive it; ``market.tick`` brings the mark price and funding settlements the funding
and basis features read (:class:`quantum.features.TickContext` says which tick belongs to
which bar). One :class:`quantum.features.UniverseFeatures` holds every symbol, because BTC's
state, the beta to BTC and the cross-sectional ranks read the other symbols' previous bar.

``exchange.normalized`` (the cross-exchange-aggregator, when enabled) brings other venues'
prices and funding; :class:`quantum.features.crossvenue.CrossVenue` turns them into the
vector's ``extras`` (outside the model schema), each absent one named in ``extras_missing``.
"""

from __future__ import annotations

from typing import Any

from quantum import features
from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import (
    FeatureVector,
    Kline,
    Tick,
    VenueFunding,
    VenueKline,
    VenueTick,
)
from quantum.contracts.streams import EXCHANGE_NORMALIZED, FEATURES, MARKET_KLINES, MARKET_TICK
from quantum.features.crossvenue import CrossVenue

VENUE_PAYLOADS = (VenueTick, VenueKline, VenueFunding)

NAME = "feature-publisher"


class FeaturePublisher(ServiceBase):
    name = NAME

    def __init__(self, restore_bars: int, ports: Ports) -> None:
        self.restore_bars = restore_bars
        self.history = ports.history
        self.universe = features.UniverseFeatures()
        self.last_open_time: dict[str, int] = {}
        self.primed: dict[str, dict[int, dict[str, float] | None]] = {}
        self.cross = CrossVenue()

    def prime(self, symbol: str, table: dict[int, dict[str, float] | None]) -> None:
        """The features of ``symbol``'s coming bars (open time → values, None in warm-up),
        computed ahead by the same streaming code over the whole universe: the in-process
        engine does it (:func:`quantum.features.stream_tables`). A primed symbol is never
        computed here; a bar missing from its table is an error, never a fallback."""
        self.primed[symbol] = table

    def _tick(self, tick: Tick) -> None:
        self.cross.observe_binance_funding(tick.symbol, tick.ts, tick.funding_rate)
        if tick.symbol not in self.primed:
            self.universe.observe_tick(tick.symbol, tick.ts, tick.mark_price,
                                       tick.funding_rate)

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
        return self.universe.update(kline.symbol, kline.open_time, kline.close_time,
                                    kline.open, kline.high, kline.low, kline.close,
                                    kline.volume)

    def restore(self) -> None:
        """Warm up from the bars (and ticks) this group already handled, in event-time order
        across symbols, as they were first handled (ticks of an instant before its klines)."""
        self.universe = features.UniverseFeatures()
        self.cross = CrossVenue()
        self.last_open_time.clear()
        self.cross.observe_all(
            event.payload for event in self.history.handled(EXCHANGE_NORMALIZED, NAME, 20_000))
        if self.restore_bars == 0:
            return
        bars: dict[str, list[Kline]] = {}
        for event in self.history.handled(MARKET_KLINES, NAME, self.restore_bars * 50):
            if isinstance(event.payload, Kline):
                bars.setdefault(event.payload.symbol, []).append(event.payload)
        klines = [k for symbol_bars in bars.values() for k in symbol_bars[-self.restore_bars:]]
        if not klines:
            return
        first = min(k.open_time for k in klines)
        ticks = [e.payload for e in self.history.handled(MARKET_TICK, NAME,
                                                         self.restore_bars * 50)
                 if isinstance(e.payload, Tick) and e.payload.ts >= first]
        order: list[tuple[int, int, str, Kline | Tick]] = [(t.ts, 0, t.symbol, t) for t in ticks]
        order += [(k.close_time, 1, k.symbol, k) for k in klines]
        order.sort(key=lambda item: item[:3])
        for _, _, _, payload in order:
            if isinstance(payload, Tick):
                self._tick(payload)
            else:
                self._update(payload)

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        if isinstance(event.payload, VENUE_PAYLOADS):
            self.cross.observe(event.payload)
            return
        if isinstance(event.payload, Tick):
            self._tick(event.payload)
            return
        if not isinstance(event.payload, Kline):
            return  # market.end_of_data and the like: nothing to compute
        kline: Kline = event.payload
        values = self._update(kline)
        if values is None:
            return
        extras, missing = self.cross.derive(kline.symbol, kline.close_time, kline.close)
        payload = FeatureVector(
            symbol=kline.symbol,
            interval=kline.interval,
            open_time=kline.open_time,
            close_time=kline.close_time,
            close=kline.close,
            schema_hash=features.SCHEMA_HASH,
            values=values,
            extras=extras,
            extras_missing=missing,
        )
        out.emit(FEATURES, new_envelope(payload, ts=event.ts, source=NAME, cause=event))


def build(settings: Any, ports: Ports) -> FeaturePublisher:
    return FeaturePublisher(settings.restore_bars, ports)
