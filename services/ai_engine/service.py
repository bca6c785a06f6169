"""ai-engine: predict every feature vector, publish the signal, act on confident ones.

Every prediction goes to ``ai.signal_generated`` with the members' votes. A signal becomes
a decision and a ``trade.intent`` only when it is directional, at least ``min_confidence``,
and the supervisor does not block it.

The model is the transparent baseline or a registry version of the four-member ensemble
(``QT_MODEL``). Feature events are collected during a runner batch and predicted together
at its end (the trees score all rows at once, each network runs one forward pass); a
``policy.updated`` event naming a new model version first flushes the events before it
with the old model, then swaps, so no event is dropped or predicted twice, and the served
version is committed with the acks (a restart serves the same version).

With the ensemble, an event for which fewer than the quorum of members can vote (members
missing or corrupt, or a symbol's 64-bar window not yet full) gets no signal at all; health
(the state key, metrics, ``ai.supervisor`` events) says why. Nothing stands in for a member.

The supervisor watches direction bias (:mod:`quantum.models.supervision`: new intents are
blocked when the recent directional signals lean one way further than the market's realised
moves over the same signals' horizons explain, and an event says both shares and why) and
feature drift (PSI of recent vectors against the model's training distribution).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import structlog
from prometheus_client import Counter, Gauge, Histogram

from quantum.bus.envelope import Envelope, derive_id, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import (
    Decision,
    FeatureVector,
    MemberVote,
    PolicyUpdated,
    Signal,
    SupervisorEvent,
    TradeIntent,
)
from quantum.contracts.streams import AI_DECISION, AI_SIGNAL, AI_SUPERVISOR, TRADE_INTENT
from quantum.features import FEATURE_NAMES
from quantum.models.baseline import BaselineMomentum, Prediction
from quantum.models.ensemble import ReturnWindows, Row
from quantum.models.momentum import MomentumRule
from quantum.models.supervision import BiasRule, BiasSupervisor, BiasVerdict
from quantum.registry.fleet import AI_ENGINE_KEY
from quantum.risk.costs import CostModel
from quantum.risk.policy import PolicyCache

REGISTRY_KINDS = ("ensemble", "edge")  # models served from a registry version
BAR_SECONDS = 300
FUNDING_FEATURE = "funding_rate"  # the last settled funding rate, when the set has it

NAME = "ai-engine"

SIGNALS = Counter("quantum_ai_signals_total", "Predictions made", ["direction"])
INTENTS = Counter("quantum_ai_intents_total", "Trade intents emitted", ["side"])
BLOCKED = Counter("quantum_ai_blocked_total", "Intents blocked by the supervisor", ["reason"])
BIAS = Gauge("quantum_ai_direction_bias", "Direction shares over the supervisor's window: "
             "share=model (LONG among the signals), share=market (up-moves of their symbols "
             "over the signals' horizons)", ["share"])
BIAS_BLOCKED = Gauge("quantum_ai_direction_bias_blocked",
                     "1 while the supervisor blocks intents: the model's lean is not explained "
                     "by the market", ["reason"])
for _share in ("model", "market"):
    BIAS.labels(_share).set(0.5)  # exported from the start: no lean known yet
for _reason in ("not_explained_by_market", "market_unknown"):
    BIAS_BLOCKED.labels(_reason).set(0)
NO_QUORUM = Counter("quantum_ai_no_quorum_total",
                    "Feature events with no prediction: fewer members than the quorum")
MEMBER_LOADED = Gauge("quantum_ai_member_loaded", "1 when an ensemble member is loaded",
                      ["member"])
MODEL_LOADED = Gauge("quantum_ai_model_loaded",
                     "1 when a model is being served (an ensemble below its quorum is not)")
PSI = Gauge("quantum_ai_feature_psi", "PSI of a feature against the training set", ["feature"])
PSI_MAX = Gauge("quantum_ai_feature_psi_max", "Largest feature PSI against the training set")
INFERENCE = Histogram("quantum_ai_inference_seconds", "Prediction time per batch of events",
                      buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
SWAPS = Counter("quantum_ai_model_swaps_total", "Model swaps", ["outcome"])

log = structlog.get_logger(service=NAME)


class AiEngine(ServiceBase):
    name = NAME

    def __init__(self, min_confidence: float, bias_window: int, bias_threshold: float, *,
                 model: str = "baseline", models_dir: Path | None = None,
                 model_version: str = "", drift_window: int = 500, drift_every: int = 100,
                 drift_threshold: float = 0.25, bias_rule: BiasRule | None = None,
                 momentum_lookback: int = 48, momentum_hold: int | None = None,
                 costs: CostModel | None = None,
                 ports: Ports) -> None:
        self.state = ports.state
        self.min_confidence = min_confidence
        self.supervisor = BiasSupervisor(bias_rule or BiasRule(bias_window, bias_threshold))
        self.model_kind = model
        self.models_dir = Path(models_dir or "models")
        self.configured_version = model_version
        self.drift_window = drift_window
        self.drift_every = drift_every
        self.drift_threshold = drift_threshold
        self.predictor: Any = (
            BaselineMomentum() if model == "baseline" else
            MomentumRule(momentum_lookback, momentum_hold) if model == "momentum" else None)
        self.costs = costs or CostModel()
        self.policies = PolicyCache(ports.state)
        if self.predictor is not None:  # the baseline serves from the start (issue 14)
            MODEL_LOADED.set(1)
        self.load_error: str | None = None
        self.drift: Any = None
        self.windows = ReturnWindows()
        self.pending: list[Envelope[Any]] = []
        self.notices: list[SupervisorEvent] = []
        self.seen = 0
        self.drift_alerted = False
        self.bias_alerted = False
        self._last_event: Envelope[Any] | None = None
        self._dirty = False

    @classmethod
    def from_settings(cls, settings: Any, ports: Ports) -> AiEngine:
        return cls(settings.min_confidence, settings.bias_window, settings.bias_threshold,
                   model=settings.model, models_dir=Path(settings.models_dir),
                   model_version=settings.model_version, drift_window=settings.drift_window,
                   drift_every=settings.drift_every, drift_threshold=settings.drift_threshold,
                   bias_rule=BiasRule(settings.bias_window, settings.bias_threshold,
                                      settings.bias_tolerance, settings.bias_horizon_bars,
                                      settings.bias_dead_zone),
                   momentum_lookback=settings.momentum_lookback,
                   momentum_hold=settings.momentum_hold_bars,
                   costs=CostModel(settings.taker_fee, settings.maker_fee,
                                   settings.slippage_bps),
                   ports=ports)

    # --- model ----------------------------------------------------------------------------

    @property
    def model_label(self) -> str:
        if self.predictor is None:
            return "none"
        return f"{self.predictor.name}@{self.predictor.version}"

    def _load(self, version: str | None) -> bool:
        """Load a registry version of the served kind (None: the registry's active one);
        False if refused."""
        if self.model_kind == "edge":
            return self._load_edge(version)
        from quantum.ml.drift import DriftMonitor
        from quantum.ml.registry import ModelRefused, ModelRegistry
        from quantum.models.ensemble import ServedEnsemble

        registry = ModelRegistry(self.models_dir)
        try:
            ensemble = registry.load(version or None)
            reference = registry.reference(ensemble.version)
        except (ModelRefused, OSError, ValueError, KeyError) as e:
            return self._refused(version, e)
        self._serve(ServedEnsemble(ensemble), DriftMonitor(reference, self.drift_window),
                    ensemble.quorate)  # below the quorum nothing is served
        for member in ensemble.expected:
            MEMBER_LOADED.labels(member).set(1 if member in ensemble.members else 0)
        if ensemble.missing:
            detail = "; ".join(f"{n}: {r}" for n, r in sorted(ensemble.missing.items()))
            quorate = ("" if ensemble.quorate else
                       f" (below the quorum of {ensemble.quorum}: no intents)")
            self.notices.append(SupervisorEvent(
                kind="members_missing", severity="warning" if ensemble.quorate else "critical",
                detail=detail + quorate, model_version=ensemble.version,
                data={"loaded": len(ensemble.members), "quorum": ensemble.quorum}))
        log.info("model loaded", version=ensemble.version, members=list(ensemble.loaded),
                 missing=ensemble.missing)
        return True

    def _load_edge(self, version: str | None) -> bool:
        from quantum.ml.drift import DriftMonitor
        from quantum.ml.registry import ModelRefused, ModelRegistry
        from quantum.models.edge import ServedEdge

        registry = ModelRegistry(self.models_dir)
        try:
            chosen, model, _ = registry.load_edge(version or None)
            reference = registry.reference(chosen)
        except (ModelRefused, OSError, ValueError, KeyError) as e:
            return self._refused(version, e)
        self._serve(ServedEdge(model, chosen), DriftMonitor(reference, self.drift_window), True)
        log.info("model loaded", version=chosen, kind="edge", horizon=model.horizon)
        return True

    def _refused(self, version: str | None, error: Exception) -> bool:
        self.load_error = str(error)
        log.error("model refused", reason=self.load_error)
        self.notices.append(SupervisorEvent(
            kind="model_refused", severity="critical", detail=self.load_error,
            model_version=str(version or "active")))
        return False

    def _serve(self, predictor: Any, drift: Any, serving: bool) -> None:
        """Serve a loaded registry version; ``serving`` False: loaded but below its quorum."""
        self.predictor = predictor
        self.load_error = None
        self.drift = drift
        self.drift_alerted = False
        MODEL_LOADED.set(1 if serving else 0)

    def health(self) -> dict[str, Any]:
        status: dict[str, Any] = {"model": self.model_kind, "model_version": self.model_label,
                                  "load_error": self.load_error}
        if self.model_kind == "ensemble" and self.predictor is not None:
            ensemble = self.predictor.ensemble
            status.update(members_loaded=list(ensemble.loaded), members_missing=ensemble.missing,
                          quorum=ensemble.quorum, quorate=ensemble.quorate)
        return status

    # --- runner hooks ---------------------------------------------------------------------

    def restore(self) -> None:
        self.pending.clear()
        raw = self.state.get(AI_ENGINE_KEY)
        state = orjson.loads(raw) if raw is not None else {}
        self.supervisor.load(state.get("supervisor"))
        self.windows.load(state)
        if self.model_kind in REGISTRY_KINDS:
            wanted = state.get("ensemble_version") or self.configured_version or None
            current = getattr(self.predictor, "version", None)
            if self.predictor is None or (wanted is not None and wanted != current):
                self._load(wanted)

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        self._last_event = event
        if isinstance(event.payload, FeatureVector):
            self.pending.append(event)
        elif isinstance(event.payload, PolicyUpdated) and event.payload.kind == "model":
            self._flush(out)
            self._swap(event, out)

    def on_batch_end(self, out: Outbox) -> None:
        self._flush(out)
        self._emit_notices(out)
        if self._dirty:
            out.put_state(AI_ENGINE_KEY, {
                "supervisor": self.supervisor.state(),
                **self.windows.state(),
                "ensemble_version": getattr(self.predictor, "version", None)
                if self.model_kind in REGISTRY_KINDS else None,
                "health": self.health(),
            })
            self._dirty = False

    # --- internals ------------------------------------------------------------------------

    def _swap(self, event: Envelope[Any], out: Outbox) -> None:
        update: PolicyUpdated = event.payload
        if self.model_kind not in REGISTRY_KINDS:
            log.info("model policy ignored: serving a rule", model=self.model_kind,
                     version=update.version)
            return
        previous = self.model_label
        if getattr(self.predictor, "version", None) == update.version:
            return
        if self._load(update.version):
            SWAPS.labels("swapped").inc()
            self.notices.append(SupervisorEvent(
                kind="model_swapped", severity="info",
                detail=f"{previous} -> {self.model_label}: {update.reason}",
                model_version=update.version))
        else:
            SWAPS.labels("refused").inc()
        self._dirty = True
        self._emit_notices(out)

    def _emit_notices(self, out: Outbox) -> None:
        cause = self._last_event
        if cause is None:
            return
        for index, notice in enumerate(self.notices):
            out.emit(AI_SUPERVISOR, new_envelope(notice, ts=cause.ts, source=NAME, cause=cause,
                                                 key=f"{notice.kind}:{index}"))
        self.notices.clear()

    def _predict(self, vectors: list[FeatureVector]) -> list[Prediction | None]:
        windows = [self.windows.update(v.symbol, v.close_time, v.values["log_ret_1"])
                   for v in vectors]
        if self.predictor is None:
            return [None] * len(vectors)
        if isinstance(self.predictor, BaselineMomentum | MomentumRule):
            return [self.predictor.predict(v.values) for v in vectors]
        return list(self.predictor.predict_batch(
            [Row(v.values, w) for v, w in zip(vectors, windows, strict=True)]))

    def _flush(self, out: Outbox) -> None:
        if not self.pending:
            return
        events, self.pending = self.pending, []
        vectors: list[FeatureVector] = [e.payload for e in events]
        started = time.perf_counter()
        predictions = self._predict(vectors)
        INFERENCE.observe(time.perf_counter() - started)
        self._dirty = True
        for event, vector, prediction in zip(events, vectors, predictions, strict=True):
            self._watch_drift(vector, event)
            self.supervisor.observe_bar(vector.symbol, vector.close_time, vector.close)
            if prediction is None:
                NO_QUORUM.inc()
                continue
            self._act(event, vector, prediction, out)
        self._emit_notices(out)

    def _watch_drift(self, vector: FeatureVector, event: Envelope[Any]) -> None:
        if self.drift is None:
            return
        self.drift.observe(np.array([vector.values[n] for n in FEATURE_NAMES]))
        self.seen += 1
        if self.seen % self.drift_every:
            return
        values = self.drift.compute()
        if not values:
            return
        for feature, value in values.items():
            PSI.labels(feature).set(value)
        worst = max(values, key=lambda name: values[name])
        PSI_MAX.set(values[worst])
        drifting = values[worst] > self.drift_threshold
        if drifting and not self.drift_alerted:
            top = sorted(values.items(), key=lambda item: -item[1])[:5]
            self.notices.append(SupervisorEvent(
                kind="feature_drift", severity="warning",
                detail=f"PSI {values[worst]:.3f} on {worst} exceeds {self.drift_threshold}",
                model_version=self.model_label, data={k: v for k, v in top}))
        self.drift_alerted = drifting

    def _judge_bias(self, vector: FeatureVector, direction: str) -> str | None:
        """The supervisor's verdict on the window before this signal joins it; the first
        blocked verdict of a stretch is announced with both shares and why."""
        verdict: BiasVerdict = self.supervisor.verdict()
        self.supervisor.observe(vector.symbol, vector.close_time, direction, vector.close)
        blocked = verdict.blocked_reason
        BIAS.labels("model").set(verdict.model_share_long)
        BIAS.labels("market").set(0.5 if verdict.market_share_up is None
                                  else verdict.market_share_up)
        for reason in ("not_explained_by_market", "market_unknown"):
            BIAS_BLOCKED.labels(reason).set(1 if verdict.blocked and verdict.reason == reason
                                            else 0)
        if blocked is not None and not self.bias_alerted:
            self.notices.append(SupervisorEvent(
                kind="direction_bias", severity="warning",
                detail=f"new intents blocked: {verdict.explain(self.supervisor.rule)}",
                model_version=self.model_label, data=verdict.data()))
        return blocked

    def _cost_gate(self, vector: FeatureVector, prediction: Prediction,
                   ) -> tuple[bool, float, float | None]:
        """(actionable, confidence, cost) of a prediction that knows its move: act only when
        the expected return beats the full cost by the policy's margin; the confidence is
        then the chance of beating that cost. Rules and classifiers: their own threshold."""
        if prediction.expected_return is None or prediction.direction == "FLAT":
            return (prediction.direction != "FLAT"
                    and prediction.confidence >= self.min_confidence,
                    prediction.confidence, None)
        policy = self.policies.refresh()
        side = 1 if prediction.direction == "LONG" else -1
        hold = prediction.horizon_bars or 1
        funding = vector.values.get(FUNDING_FEATURE, 0.0)
        if not math.isfinite(funding):
            funding = 0.0
        entry = policy.sizing.entry_order
        cost = self.costs.cost(side, hold, funding, entry)
        edge = side * prediction.expected_return - cost
        spread = prediction.spread or 1.0
        beats = 0.5 * math.erfc((cost - side * prediction.expected_return)
                                / (spread * math.sqrt(2.0)))
        return edge > policy.strategy.cost_margin, min(1.0, max(0.0, beats)), cost

    def _act(self, event: Envelope[Any], vector: FeatureVector, prediction: Prediction,
             out: Outbox) -> None:
        SIGNALS.labels(prediction.direction).inc()
        actionable, confidence, cost = self._cost_gate(vector, prediction)
        blocked = self._judge_bias(vector, prediction.direction) if actionable else None
        if actionable:
            self.bias_alerted = blocked is not None
        signal = Signal(
            symbol=vector.symbol, bar_time=vector.close_time, model=self.predictor.name,
            model_version=self.predictor.version, direction=prediction.direction,
            confidence=prediction.confidence, prob_long=prediction.prob_long,
            prob_short=prediction.prob_short,
            votes=tuple(MemberVote(member=v.member, direction=v.direction, confidence=v.confidence)
                        for v in prediction.votes),
            price=vector.close, atr=vector.values["atr_14"], blocked_reason=blocked,
            expected_return=prediction.expected_return, cost=cost,
            horizon_bars=prediction.horizon_bars,
        )
        out.emit(AI_SIGNAL, new_envelope(signal, ts=event.ts, source=NAME, cause=event))
        if not actionable or prediction.direction == "FLAT":
            return
        if blocked is not None:
            BLOCKED.labels(blocked.split(":")[0]).inc()
            return
        side: Literal["LONG", "SHORT"] = prediction.direction
        intent_id = derive_id(NAME, "intent", vector.symbol, vector.close_time)
        decision = Decision(symbol=vector.symbol, bar_time=vector.close_time, direction=side,
                            confidence=confidence, intent_id=intent_id,
                            model_version=self.model_label)
        out.emit(AI_DECISION, new_envelope(decision, ts=event.ts, source=NAME, cause=event))
        horizon = (prediction.horizon_bars * BAR_SECONDS
                   if prediction.horizon_bars is not None else None)
        intent = TradeIntent(intent_id=intent_id, symbol=vector.symbol, side=side,
                             confidence=confidence, price=vector.close,
                             atr=vector.values["atr_14"], bar_time=vector.close_time,
                             model_version=decision.model_version, horizon_seconds=horizon,
                             expected_return=prediction.expected_return)
        out.emit(TRADE_INTENT, new_envelope(intent, ts=event.ts, source=NAME, cause=event))
        INTENTS.labels(side).inc()


def build(settings: Any, ports: Ports) -> AiEngine:
    return AiEngine.from_settings(settings, ports)
