"""The in-process engine: every replay service of the registry, one process, causal order.

The fleet gets its determinism from the replay barrier (a bar's consequences are handled
before the next bar is published) and from :class:`~quantum.replay.barrier.Settlement`
(sizing and risk act on a bar only once its fills, funding and exits are settled). Here
both are delivery order:

* a step (one bar time: every symbol's tick, then its kline) is published, then delivered
  until no service has anything left, before the next step;
* among services with work, the settling ones (execution, exit-brain) always go first, so
  whenever sizing or risk handle anything, the bar's settlement is complete — exactly the
  condition ``Clock.settle()`` waits for on the bus, which is therefore a no-op here.

A service is handed a batch (up to ``batch_size`` entries of its streams, in the order its
registry entry lists them), handles it, and its outbox is committed to the
:class:`~quantum.engine.memory.MemoryBus` at once: state is visible per handled batch, as
after a Redis commit. A handler that raises ends the run with the event named (a backtest
has no operator to read a dead-letter queue), and so does a refused commit.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from quantum.bus.envelope import Envelope
from quantum.bus.ports import Clock, Ports
from quantum.bus.runner import CommitRefused, Outbox, Service
from quantum.bus.streams import StreamSpec
from quantum.engine.memory import MemoryBus, MemoryStream
from quantum.observability.heartbeat import heartbeat_key
from quantum.registry.fleet import SETTLEMENT_SERVICES, ServiceSpec


class EngineError(RuntimeError):
    """The run cannot go on: a handler raised or a commit was refused. Names the event."""


@dataclass
class Hosted:
    """One service in the engine: its registry entry, the object and its ports."""

    spec: ServiceSpec
    service: Service
    clock: Clock
    produces: frozenset[str]
    streams: tuple[StreamSpec, ...]
    inputs: tuple[MemoryStream, ...] = ()  # its streams on the bus, in registry order
    seconds: float = 0.0  # time spent in its handlers and commits (profile)
    events: int = 0


@dataclass
class EngineStats:
    steps: int = 0
    batches: int = 0
    events: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))


class Engine:
    """Builds and runs services on one :class:`MemoryBus`."""

    def __init__(self, bus: MemoryBus, batch_size: int = 100) -> None:
        self.bus = bus
        self.batch_size = batch_size
        self.hosted: list[Hosted] = []
        self.stats = EngineStats()

    def ports(self) -> Ports:
        """A service's ports on this engine: the bus's state and history, an event clock
        whose settlement is delivery order, and an alarm that trips the in-memory ESS."""
        return Ports(state=self.bus, clock=Clock(event=True), history=self.bus,
                     alarm=self._alarm)

    def _alarm(self, service: str, detail: str) -> None:
        from quantum.registry.fleet import ESS_KEY
        from quantum.risk import ess, fleetstate

        new, _ = ess.tripped(self.bus.get(ESS_KEY), f"{fleetstate.STATE_LOST}: {detail}",
                             service, evaluator=fleetstate.STATE_LOST, at=0)
        self.bus.set(ESS_KEY, new.model_dump_json().encode())

    def add(self, spec: ServiceSpec, build: Callable[[Ports], Service]) -> Service:
        """Build the service on its ports, restore it, and schedule it: settling services
        first, then in registry order."""
        ports = self.ports()
        service = build(ports)
        hosted = Hosted(spec, service, ports.clock,
                        frozenset(s.name for s in spec.produces), spec.consumes,
                        tuple(self.bus.stream(stream) for stream in spec.consumes))
        self.bus.set(heartbeat_key(spec.name), {"service": spec.name, "engine": "in-process"})
        service.restore()
        self.hosted.append(hosted)
        self.hosted.sort(key=lambda h: h.spec.name not in SETTLEMENT_SERVICES)
        self.bus.consumers = {}  # stream key -> ranks of the services that consume it
        for rank, entry in enumerate(self.hosted):
            for stream in entry.streams:
                self.bus.consumers.setdefault(stream.key, []).append(rank)
        return service

    def get(self, name: str) -> Any:
        """The hosted service called ``name``."""
        for hosted in self.hosted:
            if hosted.spec.name == name:
                return hosted.service
        raise KeyError(f"{name} is not in this engine")

    def publish(self, items: Sequence[tuple[StreamSpec, Envelope[Any]]]) -> None:
        self.bus.publish(items)

    def drain(self) -> None:
        """Deliver until no service has anything left; settling services always first.

        Only services whose streams received entries are looked at (``bus.touched``, kept
        by the bus's publish), highest priority first."""
        bus = self.bus
        touched = bus.touched
        hosted_by_rank = self.hosted
        while touched:
            rank = min(touched)
            hosted = hosted_by_rank[rank]
            batch = self._take(hosted, bus)
            if not batch:
                touched.discard(rank)
                continue
            self._run(hosted, batch)

    def idle(self, now: float | None = None) -> None:
        """Each service's timer hook once (the fleet calls it every loop turn), committed."""
        wall = time.time() if now is None else now
        for hosted in self.hosted:
            out = Outbox(hosted.produces)
            hosted.service.on_idle(out, wall)
            hosted.service.on_batch_end(out)
            if not out.empty:
                self._commit(hosted, out, None)

    def _take(self, hosted: Hosted, bus: MemoryBus) -> list[Envelope[Any]]:
        group = hosted.spec.group
        room = self.batch_size
        batch: list[Envelope[Any]] = []
        for found in hosted.inputs:
            if found.added == found.cursors.get(group, 0):
                continue
            batch += found.take(group, room - len(batch))
            if len(batch) >= room:
                break
        return batch

    def _run(self, hosted: Hosted, batch: list[Envelope[Any]]) -> None:
        started = time.perf_counter()
        service = hosted.service
        clock = hosted.clock
        out = Outbox(hosted.produces)
        for event in batch:
            clock.observe(event.ts)
            try:
                service.handle(event, out)
            except Exception as e:
                raise EngineError(
                    f"{hosted.spec.name} failed on {event.type} {event.id} (ts {event.ts}): "
                    f"{type(e).__name__}: {e}"
                ) from e
        service.on_batch_end(out)
        self._commit(hosted, out, batch[-1])
        hosted.seconds += time.perf_counter() - started
        hosted.events += len(batch)
        self.stats.batches += 1
        self.stats.events += len(batch)

    def _commit(self, hosted: Hosted, out: Outbox, last: Envelope[Any] | None) -> None:
        try:
            self.bus.commit(out)
        except CommitRefused as e:
            where = f" after {last.type} {last.id}" if last is not None else ""
            raise EngineError(f"{hosted.spec.name}: commit refused{where}: {e}") from None
        after = getattr(hosted.service, "after_commit", None)
        if after is not None:
            after()

    def profile(self) -> dict[str, dict[str, float]]:
        """Seconds and events per service (handlers, state building and commit)."""
        return {h.spec.name: {"seconds": round(h.seconds, 4), "events": h.events}
                for h in self.hosted}
