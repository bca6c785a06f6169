"""ai-engine: predict every feature vector, publish the signal, act on confident ones.

Every prediction goes to ``ai.signal_generated`` with the members' votes. A signal becomes
a decision and a ``trade.intent`` only when it is directional, at least ``min_confidence``,
and the supervisor does not block it. The supervisor watches direction bias: when more than
``bias_threshold`` of the last ``bias_window`` directional signals point one way, new
intents are blocked (the signal carries ``blocked_reason``) until the mix recovers.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import orjson
import redis
from prometheus_client import Counter, Gauge

from quantum.bus.envelope import Envelope, derive_id, new_envelope
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import Decision, FeatureVector, MemberVote, Signal, TradeIntent
from quantum.contracts.streams import AI_DECISION, AI_SIGNAL, TRADE_INTENT
from quantum.models.baseline import BaselineMomentum
from quantum.registry.fleet import AI_ENGINE_KEY

NAME = "ai-engine"

SIGNALS = Counter("quantum_ai_signals_total", "Predictions made", ["direction"])
INTENTS = Counter("quantum_ai_intents_total", "Trade intents emitted", ["side"])
BLOCKED = Counter("quantum_ai_blocked_total", "Intents blocked by the supervisor", ["reason"])
BIAS = Gauge("quantum_ai_direction_bias", "Share of LONG among recent directional signals")


class BiasSupervisor:
    def __init__(self, window: int, threshold: float) -> None:
        self.window = window
        self.threshold = threshold
        self.recent: deque[str] = deque(maxlen=window)

    def observe(self, direction: str) -> None:
        if direction in ("LONG", "SHORT"):
            self.recent.append(direction)
            BIAS.set(self.share_long())

    def share_long(self) -> float:
        return sum(d == "LONG" for d in self.recent) / len(self.recent) if self.recent else 0.5

    def blocked(self) -> str | None:
        if len(self.recent) < self.window:
            return None
        share = self.share_long()
        if max(share, 1 - share) > self.threshold:
            side = "LONG" if share > 0.5 else "SHORT"
            return f"direction_bias:{side}:{max(share, 1 - share):.2f}"
        return None


class AiEngine(ServiceBase):
    name = NAME

    def __init__(self, min_confidence: float, bias_window: int, bias_threshold: float) -> None:
        self.model = BaselineMomentum()
        self.min_confidence = min_confidence
        self.supervisor = BiasSupervisor(bias_window, bias_threshold)
        self._dirty = False

    def restore(self, client: redis.Redis) -> None:
        self.supervisor.recent.clear()
        raw = client.get(AI_ENGINE_KEY)
        if raw is not None:
            self.supervisor.recent.extend(orjson.loads(raw).get("recent_directions", []))

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        vector: FeatureVector = event.payload
        prediction = self.model.predict(vector.values)
        SIGNALS.labels(prediction.direction).inc()
        actionable = (prediction.direction != "FLAT"
                      and prediction.confidence >= self.min_confidence)
        blocked = self.supervisor.blocked() if actionable else None
        if actionable:
            self.supervisor.observe(prediction.direction)
            self._dirty = True
        signal = Signal(
            symbol=vector.symbol, bar_time=vector.close_time, model=self.model.name,
            model_version=self.model.version, direction=prediction.direction,
            confidence=prediction.confidence, prob_long=prediction.prob_long,
            prob_short=prediction.prob_short,
            votes=tuple(MemberVote(member=v.member, direction=v.direction, confidence=v.confidence)
                        for v in prediction.votes),
            price=vector.close, atr=vector.values["atr_14"], blocked_reason=blocked,
        )
        out.emit(AI_SIGNAL, new_envelope(signal, ts=event.ts, source=NAME, cause=event))
        if not actionable:
            return
        if blocked is not None:
            BLOCKED.labels(blocked.split(":")[0]).inc()
            return
        side = prediction.direction
        intent_id = derive_id(NAME, "intent", vector.symbol, vector.close_time)
        decision = Decision(symbol=vector.symbol, bar_time=vector.close_time, direction=side,
                            confidence=prediction.confidence, intent_id=intent_id,
                            model_version=f"{self.model.name}@{self.model.version}")
        out.emit(AI_DECISION, new_envelope(decision, ts=event.ts, source=NAME, cause=event))
        intent = TradeIntent(intent_id=intent_id, symbol=vector.symbol, side=side,
                             confidence=prediction.confidence, price=vector.close,
                             atr=vector.values["atr_14"], bar_time=vector.close_time,
                             model_version=decision.model_version)
        out.emit(TRADE_INTENT, new_envelope(intent, ts=event.ts, source=NAME, cause=event))
        INTENTS.labels(side).inc()

    def on_batch_end(self, out: Outbox) -> None:
        if self._dirty:
            out.put_state(AI_ENGINE_KEY, {"recent_directions": list(self.supervisor.recent)})
            self._dirty = False
