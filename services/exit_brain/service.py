"""exit-brain: follows every open position's exit plan and emits reduce-only harvests.

Positions are learnt from execution's fills (``execution.result``); prices from
``market.tick``. A position is evaluated on the bars after the one it was filled in. Each
exit goes to ``harvest.intent`` with its reason; harvests never pass the risk layers, so an
emergency stop can never keep a position open. When the emergency stop trips
(``risk.events``), the exit-brain carries out the policy's actions: close the losing
positions, and cut the rest by the policy's share; on an ``exposure_rebalance`` proposal (the
governor's balancer) it cuts the named position by the share proposed. An operator's forced
exit of one position (:mod:`quantum.exits.manual`: ``quantumctl exit``, the dashboard) is
picked up from its request key within a second and closed the same way, on this service's
clock.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Gauge

from quantum.bus.envelope import Envelope, derive_id, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import (
    EndOfData,
    ExecutionReport,
    ExitLevels,
    HarvestIntent,
    RiskEvent,
    Tick,
)
from quantum.contracts.streams import HARVEST_INTENT
from quantum.exits import manual
from quantum.exits.brain import ExitOrder, TrackedPosition
from quantum.registry.fleet import EXIT_BRAIN_KEY, EXIT_REQUESTS_KEY
from services.exit_brain.config import Settings

NAME = "exit-brain"
REQUEST_POLL_S = 1.0
REBALANCE_REASON = "rebalance"  # a cut proposed by the governor's exposure balancer
log = structlog.get_logger(service=NAME)

HARVESTS = Counter("quantum_exit_harvests_total", "Harvest intents", ["reason"])
TRACKED = Gauge("quantum_exit_tracked_positions", "Positions the exit-brain follows")


class ExitBrain(ServiceBase):
    name = NAME

    def __init__(self, settings: Settings, ports: Ports) -> None:
        self.state = ports.state
        self.clock = ports.clock  # the runner advances it with every event's time
        self.last_request_poll = 0.0
        self.evaluate_entry_bar = settings.evaluate_entry_bar
        self.positions: dict[str, TrackedPosition] = {}  # by symbol
        self.last_tick_ts: dict[str, int] = {}
        self.last_close: dict[str, float] = {}
        self.levels_sent: dict[str, list[float | None]] = {}  # position id → [stop, tp]
        self._dirty = False

    def restore(self) -> None:
        raw = self.state.get(EXIT_BRAIN_KEY)
        state = orjson.loads(raw) if raw else {}
        self.positions = {s: TrackedPosition(**p) for s, p in state.get("positions", {}).items()}
        self.last_tick_ts = state.get("last_tick_ts", {})
        self.last_close = state.get("last_close", {})
        self.levels_sent = state.get("levels_sent", {})
        self.clock.observe(max(self.last_tick_ts.values(), default=0))

    def _emit(self, out: Outbox, cause: Envelope[Any] | None, position: TrackedPosition,
              orders: list[ExitOrder], ts: int, key: str = "") -> None:
        for order in orders:
            intent = HarvestIntent(
                harvest_id=derive_id(NAME, position.position_id, order.reason, ts),
                position_id=position.position_id, symbol=position.symbol,
                side=position.side,  # type: ignore[arg-type]
                fraction=order.fraction, price=order.price, reason=order.reason, ts=ts,
            )
            out.emit(HARVEST_INTENT, new_envelope(intent, ts=ts, source=NAME, cause=cause,
                                                  key=key + order.reason))
            HARVESTS.labels(order.reason).inc()
        if orders:
            self._dirty = True

    def _emit_levels(self, out: Outbox, cause: Envelope[Any], position: TrackedPosition,
                     ts: int) -> None:
        """Publish the protective levels when they differ from the last ones sent."""
        if position.closing or position.remaining <= 0:
            self.levels_sent.pop(position.position_id, None)
            return
        stop, take_profit = position.protective_levels()
        if self.levels_sent.get(position.position_id) == [stop, take_profit] or stop <= 0:
            return
        self.levels_sent[position.position_id] = [stop, take_profit]
        levels = ExitLevels(position_id=position.position_id, symbol=position.symbol,
                            side=position.side,  # type: ignore[arg-type]
                            stop=stop, stop_reason=position.stop_reason, take_profit=take_profit,
                            remaining_quantity=position.remaining, ts=ts)
        out.emit(HARVEST_INTENT, new_envelope(levels, ts=ts, source=NAME, cause=cause,
                                              key=f"levels:{position.position_id}"))
        self._dirty = True

    def _on_report(self, report: ExecutionReport, event: Envelope[Any], out: Outbox) -> None:
        if report.kind != "fill" or report.position_id is None:
            return
        if not report.reduce_only and report.exit_plan is not None:
            tracked = self.positions.get(report.symbol)
            if tracked is not None and tracked.position_id == report.position_id:
                # Another partial fill of the same entry order: the position grows.
                grown = report.position_quantity - tracked.remaining
                tracked.entry_price = ((tracked.entry_price * tracked.remaining
                                        + report.price * grown) / report.position_quantity
                                       if report.position_quantity > 0 else tracked.entry_price)
                tracked.initial_quantity += max(0.0, grown)
                tracked.remaining = report.position_quantity
            else:
                tracked = TrackedPosition.from_fill(report.model_dump(mode="json"))
                self.positions[report.symbol] = tracked
            self._emit_levels(out, event, tracked, report.ts)
        elif report.reduce_only:
            position = self.positions.get(report.symbol)
            if position is not None and position.position_id == report.position_id:
                position.remaining = report.position_quantity
                if report.position_quantity <= 0:
                    del self.positions[report.symbol]
                    self.levels_sent.pop(position.position_id, None)
        self._dirty = True

    def _on_tick(self, tick: Tick, event: Envelope[Any], out: Outbox) -> None:
        if tick.ts <= self.last_tick_ts.get(tick.symbol, -1):
            return
        self.last_tick_ts[tick.symbol] = tick.ts
        self.last_close[tick.symbol] = tick.close
        position = self.positions.get(tick.symbol)
        if position is None:
            return
        if tick.ts <= position.entry_ts and not self.evaluate_entry_bar:
            return
        orders = position.evaluate(tick.ts, tick.open, tick.high, tick.low, tick.close)
        self._emit(out, event, position, orders, tick.ts)
        self._emit_levels(out, event, position, tick.ts)
        self._dirty = True

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        payload = event.payload
        if isinstance(payload, Tick):
            self._on_tick(payload, event, out)
        elif isinstance(payload, ExecutionReport):
            self._on_report(payload, event, out)
        elif isinstance(payload, EndOfData):
            for symbol, position in sorted(self.positions.items()):
                price = self.last_close.get(symbol, position.entry_price)
                self._emit(out, event, position, position.close_now(price, "end_of_replay"),
                           payload.last_ts)
        elif isinstance(payload, RiskEvent) and payload.kind == "ess_tripped":
            self._on_emergency_stop(payload, event, out)
        elif isinstance(payload, RiskEvent) and payload.kind == "exposure_rebalance":
            self._on_rebalance(payload, event, out)

    def _on_rebalance(self, proposal: RiskEvent, event: Envelope[Any], out: Outbox) -> None:
        """The governor's exposure balancer asks for a reduce-only cut of one position
        (:mod:`quantum.risk.portfolio`); it is carried out like any other exit. A position
        this service does not follow (or no longer) is left alone and logged: the balancer
        proposes again from the book if the breach persists."""
        data = proposal.data
        symbol, position_id = str(data.get("symbol")), str(data.get("position_id"))
        fraction = float(data.get("fraction") or 0.0)
        position = self.positions.get(symbol)
        if position is None or position.position_id != position_id or fraction <= 0:
            log.warning("rebalance of a position not followed", position_id=position_id,
                        symbol=symbol)
            return
        price = self.last_close.get(symbol, position.entry_price)
        orders = position.reduce_now(min(fraction, 1.0), price, REBALANCE_REASON)
        self._emit(out, event, position, orders, event.ts, key=f"{position_id}:")

    def _on_emergency_stop(self, trip: RiskEvent, event: Envelope[Any], out: Outbox) -> None:
        """The policy's actions on a trip: close losers, then cut what remains by a share."""
        close_losing = bool(trip.data.get("close_losing_positions"))
        cut = float(trip.data.get("cut_exposure_share") or 0.0)
        for symbol, position in sorted(self.positions.items()):
            price = self.last_close.get(symbol, position.entry_price)
            if close_losing and position.unrealised(price) < 0:
                orders = position.close_now(price, "ess_close_losing")
            else:
                orders = position.reduce_now(cut, price, "ess_cut_exposure")
            self._emit(out, event, position, orders, event.ts)

    def on_idle(self, out: Outbox, now: float) -> None:
        """Operators' forced exits, once a second."""
        if now - self.last_request_poll < REQUEST_POLL_S:
            return
        self.last_request_poll = now
        raw = self.state.get(EXIT_REQUESTS_KEY)
        if raw is None or raw == b"[]":
            return
        requests = manual.pending(raw)
        if not requests:
            log.error("unreadable forced-exit requests cleared", value=raw[:200].decode(
                errors="replace"))
        ts = self.clock.now_ms() or int(now * 1000)  # event clock before any event: wall
        for request in requests:
            self._force_exit(request, out, ts)
        out.compare_and_set(EXIT_REQUESTS_KEY, raw, b"[]")  # STALE if one was added meanwhile

    def _force_exit(self, request: manual.ExitRequest, out: Outbox, ts: int) -> None:
        price = self.last_close.get(request.symbol, request.mark_price)
        key = f"{request.request_id}:"
        position = self.positions.get(request.symbol)
        if position is not None and position.position_id == request.position_id:
            orders = position.close_now(price, manual.REASON)
            self._emit(out, None, position, orders, ts, key)
            log.warning("forced exit", position_id=request.position_id, by=request.by,
                        reason=request.reason, harvests=len(orders))
            return
        # Not followed here (e.g. this service's state was lost): the exit still goes out,
        # and execution refuses it if the position is gone. Exits are never blocked.
        intent = HarvestIntent(
            harvest_id=derive_id(NAME, request.position_id, manual.REASON, request.request_id),
            position_id=request.position_id, symbol=request.symbol,
            side=request.side,  # type: ignore[arg-type]
            fraction=1.0, price=price, reason=manual.REASON, ts=ts)
        out.emit(HARVEST_INTENT, new_envelope(intent, ts=ts, source=NAME,
                                              key=key + manual.REASON))
        HARVESTS.labels(manual.REASON).inc()
        log.warning("forced exit of a position this service does not follow",
                    position_id=request.position_id, by=request.by, reason=request.reason)

    def on_batch_end(self, out: Outbox) -> None:
        if not self._dirty:
            return
        self._dirty = False
        TRACKED.set(len(self.positions))
        out.put_state(EXIT_BRAIN_KEY, {
            "positions": {s: p.to_dict() for s, p in self.positions.items()},
            "last_tick_ts": self.last_tick_ts, "last_close": self.last_close,
            "levels_sent": self.levels_sent,
        })


def build(settings: Settings, ports: Ports) -> ExitBrain:
    return ExitBrain(settings, ports)
