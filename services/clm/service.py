"""clm: continuous learning — retraining on schedule and on drift, shadow test, promotion
by backtest, rollback.

* Every ``retrain_interval_s`` (wall clock) a retraining run starts as a child process
  (:mod:`quantum.ml.job`) so this service keeps handling events; ``learning.retraining.
  started`` and ``…completed`` announce it. A successful run registers a candidate.
* **Drift** starts a run too: the CLM computes the PSI of the live feature vectors against
  the active version's training deciles (:mod:`quantum.ml.drift`, the same code and numbers
  as the ai-engine's monitor). It computes it itself rather than listening to the
  ai-engine's ``feature_drift`` events because the ai-engine only monitors drift while it
  serves the ensemble (the fleet's default is the baseline), while a registry version can
  drift from the market whatever is served; and the CLM already reads the vectors. A
  PSI above ``drift_threshold`` starts a run (trigger ``drift``) once
  ``drift_retrain_interval_s`` has passed since the last run of any kind.
* The candidate is shadow-tested against the active version on live bars
  (:mod:`quantum.ml.shadow`), on the metric declared in the settings when the test starts.
  The CLM consumes the served ``features`` stream, so drift and the shadow test judge the
  models on exactly the vectors the ai-engine is served (the cross-symbol, funding and
  basis features included, which one symbol's bars alone cannot give). A vector whose
  ``schema_hash`` is not the running code's is skipped with a warning and counted in
  ``quantum_clm_vectors_refused_total``. After a restart it rebuilds its return windows
  from the vectors its group already handled.
* When the shadow test has its rows, both versions are **backtested** over its window (the
  same bars, after the features' warm-up) through the in-process engine with full costs and
  the live policy, in a child process (:mod:`services.clm.judge`). The candidate is promoted
  only when its net return beats the active model's (by more than ``promotion_margin``) and
  its drawdown stays below the policy's brake (``risk.ess_brake_drawdown``); the log-loss
  comparison is reported beside it but does not decide. ``learning.shadow.completed`` and
  the candidate's ``decisions.json`` in the registry record both models' figures and why.
* Whenever the registry's active version changes — a promotion here, or an operator's
  ``quantumctl models promote|rollback`` — a ``policy.updated`` event tells the ai-engine,
  which swaps between two events. The CLM is the stream's one producer.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import structlog
from prometheus_client import Counter, Gauge

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import (
    FeatureVector,
    PolicyUpdated,
    RetrainingCompleted,
    RetrainingStarted,
    ShadowCompleted,
)
from quantum.contracts.streams import FEATURES, LEARNING_EVENTS, POLICY_UPDATED
from quantum.features import FEATURE_NAMES, SCHEMA_HASH
from quantum.ml.drift import DriftMonitor
from quantum.ml.registry import ModelRefused, ModelRegistry
from quantum.models.ensemble import ReturnWindows, ServedEnsemble
from quantum.registry.fleet import CLM_KEY
from quantum.risk.policy import PolicyCache

NAME = "clm"

RUNS = Counter("quantum_clm_retraining_runs_total", "Retraining runs", ["outcome"])
PROMOTIONS = Counter("quantum_clm_shadow_decisions_total", "Shadow test decisions", ["outcome"])
SHADOW_RESOLVED = Gauge("quantum_clm_shadow_resolved", "Resolved predictions in the shadow test")
DRIFT_PSI = Gauge("quantum_clm_feature_psi_max",
                  "Largest feature PSI of the live bars against the active version's training")
REFUSED = Counter("quantum_clm_vectors_refused_total",
                  "Feature vectors skipped: another schema hash, or names missing", ["reason"])
WARMUP_VECTORS = 5_000  # handled vectors read at restart: 64-bar return windows of ~50 symbols

log = structlog.get_logger(service=NAME)


class Clm(ServiceBase):
    name = NAME

    def __init__(self, settings: Any, ports: Ports, root: Path | None = None) -> None:
        self.settings = settings
        self.state = ports.state
        self.history = ports.history
        self.policies = PolicyCache(ports.state)
        self.registry = ModelRegistry(Path(settings.models_dir))
        self.workdir = root or Path(settings.models_dir)
        self.job: subprocess.Popen[bytes] | None = None
        self.job_info: dict[str, Any] | None = None
        self.next_run = time.time() + (0 if settings.retrain_on_start
                                       else settings.retrain_interval_s)
        self.announced: str | None = None
        self.shadow: Any = None
        self.judging: Any = None  # a shadow test whose window is being backtested
        self.judge: subprocess.Popen[bytes] | None = None
        self.judge_info: dict[str, Any] | None = None
        self.last_run: float | None = None  # wall time the last retraining run started
        self.drift: DriftMonitor | None = None
        self.drift_version: str | None = None
        self.drift_seen = 0
        self.drift_detail: str | None = None  # drift seen and not yet acted upon
        self.windows = ReturnWindows()
        self.last_open: dict[str, int] = {}
        self.foreign: set[str] = set()  # schema hashes already warned about
        self._last_ts = 0
        self._dirty = False

    @classmethod
    def from_settings(cls, settings: Any, ports: Ports) -> Clm:
        return cls(settings, ports)

    # --- runner hooks ---------------------------------------------------------------------

    def restore(self) -> None:
        raw = self.state.get(CLM_KEY)
        state = orjson.loads(raw) if raw else {}
        self.announced = state.get("announced")
        if state.get("next_run") is not None:
            self.next_run = float(state["next_run"])
        if state.get("last_run") is not None:
            self.last_run = float(state["last_run"])
        self._last_ts = int(state.get("last_ts", 0))
        self._warm_up()

    def _warm_up(self) -> None:
        """Rebuild the return windows from the vectors this group already acknowledged."""
        self.last_open.clear()
        self.windows = ReturnWindows()
        for event in self.history.handled(FEATURES, NAME, WARMUP_VECTORS):
            if isinstance(event.payload, FeatureVector):
                self._vector(event.payload, None)

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        if isinstance(event.payload, FeatureVector):
            self._last_ts = max(self._last_ts, event.ts)
            self._vector(event.payload, out)

    def _usable(self, vector: FeatureVector) -> bool:
        """A vector of the running code's feature schema, every feature present."""
        if vector.schema_hash != SCHEMA_HASH:
            REFUSED.labels("schema_hash").inc()
            if vector.schema_hash not in self.foreign:  # once per hash, not once per bar
                self.foreign.add(vector.schema_hash)
                log.warning("feature vectors skipped: another feature schema",
                            symbol=vector.symbol, schema_hash=vector.schema_hash,
                            running=SCHEMA_HASH)
            return False
        missing = [n for n in FEATURE_NAMES if n not in vector.values]
        if missing:
            REFUSED.labels("missing").inc()
            log.warning("feature vector skipped: features missing", symbol=vector.symbol,
                        open_time=vector.open_time, missing=",".join(missing[:5]))
            return False
        return True

    def _vector(self, vector: FeatureVector, out: Outbox | None) -> None:
        """One served feature vector: drift, then the shadow test (when one is running)."""
        if vector.open_time <= self.last_open.get(vector.symbol, -1):
            return  # a bar already seen (redelivery)
        if not self._usable(vector):
            return
        self.last_open[vector.symbol] = vector.open_time
        values = vector.values
        window = self.windows.update(vector.symbol, vector.close_time, values["log_ret_1"])
        self._watch_drift(values)
        if self.shadow is None or out is None:
            return
        self.shadow.observe(vector.symbol, vector.close_time, vector.close, values, window)
        SHADOW_RESOLVED.set(self.shadow.resolved)
        if self.shadow.done:  # the window is complete: backtest it (on_idle starts the job)
            self.judging, self.shadow = self.shadow, None
            self._dirty = True

    def on_batch_end(self, out: Outbox) -> None:
        self._save(out)

    def on_idle(self, out: Outbox, now: float) -> None:
        if self.job is None and now >= self.next_run:
            self.start_run(out, now, trigger="schedule")
        if (self.job is None and self.drift_detail is not None
                and self.settings.retrain_on_drift and (
                    self.last_run is None
                    or now - self.last_run >= self.settings.drift_retrain_interval_s)):
            self.start_run(out, now, trigger="drift", detail=self.drift_detail)
        if self.job is not None and self.job.poll() is not None:
            self._finish_run(out, now)
        if self.judging is not None and self.judge is None:
            self._start_judge(now)
        if self.judge is not None and self.judge.poll() is not None:
            self._finish_judge(out)
        self._announce_active(out, reason="registry active version changed")
        self._save(out)

    # --- drift ----------------------------------------------------------------------------

    def _watch_drift(self, values: dict[str, float]) -> None:
        """PSI of the live vectors against the active version's training deciles; a value
        above the threshold is remembered until a run is started for it."""
        monitor = self._drift_monitor()
        if monitor is None:
            return
        monitor.observe(np.array([values[n] for n in FEATURE_NAMES]))
        self.drift_seen += 1
        if self.drift_seen % self.settings.drift_every:
            return
        psi = monitor.compute()
        if not psi:
            return
        worst = max(psi, key=lambda name: psi[name])
        DRIFT_PSI.set(psi[worst])
        if psi[worst] > self.settings.drift_threshold:
            if self.drift_detail is None:
                log.warning("feature drift", feature=worst, psi=psi[worst],
                            version=self.drift_version)
            self.drift_detail = (f"PSI {psi[worst]:.3f} on {worst} against "
                                 f"{self.drift_version} exceeds {self.settings.drift_threshold}")
        else:
            self.drift_detail = None

    def _drift_monitor(self) -> DriftMonitor | None:
        try:
            active = self.registry.active()
        except ModelRefused:
            return None
        if active != self.drift_version:
            self.drift_version, self.drift, self.drift_seen = active, None, 0
            self.drift_detail = None
            if active is not None:
                try:
                    # a version of another feature schema has no comparable reference
                    self.registry.verify(active)
                    self.drift = DriftMonitor(self.registry.reference(active),
                                              self.settings.drift_window)
                except (ModelRefused, OSError, ValueError, KeyError) as e:
                    log.error("no drift reference", version=active, reason=str(e))
        return self.drift

    # --- retraining -----------------------------------------------------------------------

    def start_run(self, out: Outbox, now: float,
                  trigger: Literal["schedule", "manual", "drift"], detail: str = "") -> None:
        s = self.settings
        run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
        result = self.workdir / f".clm-run-{run_id}.json"
        command = [sys.executable, "-m", "quantum.ml.job", "--data", s.training_data_dir,
                   "--out", s.models_dir, "--result", str(result), "--symbols",
                   s.training_symbols, "--lookback-days", repr(s.training_lookback_days),
                   "--members", s.retrain_members, "--folds", str(s.retrain_folds),
                   "--neural-steps", str(s.retrain_neural_steps),
                   "--tree-rounds", str(s.retrain_tree_rounds)]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.job_info = {"run_id": run_id, "result": str(result), "started": now,
                         "trigger": trigger}
        self.next_run = now + s.retrain_interval_s
        self.last_run = now
        if trigger == "drift":
            self.drift_detail = None
        symbols = tuple(x for x in s.training_symbols.split(",") if x)
        self._emit(out, LEARNING_EVENTS, RetrainingStarted(
            run_id=run_id, trigger=trigger, data_dir=s.training_data_dir, symbols=symbols,
            ts=self._now_ms(now), detail=detail), key=run_id)
        log.info("retraining started", run_id=run_id, pid=self.job.pid, trigger=trigger,
                 detail=detail)

    def _finish_run(self, out: Outbox, now: float) -> None:
        assert self.job is not None and self.job_info is not None
        info, self.job, self.job_info = self.job_info, None, None
        result = _read_result(Path(info["result"]), lambda e: {
            "succeeded": False, "candidate": None,
            "detail": f"the run left no readable result: {e}"})
        RUNS.labels("succeeded" if result["succeeded"] else "failed").inc()
        self._emit(out, LEARNING_EVENTS, RetrainingCompleted(
            run_id=info["run_id"], succeeded=bool(result["succeeded"]),
            candidate=result.get("candidate"), detail=str(result.get("detail", ""))[:500],
            seconds=max(0.0, now - info["started"]), ts=self._now_ms(now)), key=info["run_id"])
        if result["succeeded"] and result.get("candidate"):
            self.begin_shadow(result["candidate"])

    # --- shadow test ----------------------------------------------------------------------

    def begin_shadow(self, candidate: str) -> bool:
        """Start testing ``candidate`` against the active version; False when impossible."""
        from quantum.ml.shadow import ShadowTest

        active = self.registry.active()
        if active is None:
            log.warning("no active model to shadow against; candidate waits for an operator",
                        candidate=candidate)
            self.registry.set_candidate(candidate)
            return False
        try:
            candidate_model = ServedEnsemble(self.registry.load(candidate))
            active_model = ServedEnsemble(self.registry.load(active))
            label = self.registry.manifest(candidate)["label"]
        except ModelRefused as e:
            log.error("shadow test not started", candidate=candidate, reason=str(e))
            return False
        self.registry.set_candidate(candidate)
        self.shadow = ShadowTest(candidate_model, active_model, self.settings.shadow_metric,
                                 self.settings.shadow_predictions, int(label["horizon"]),
                                 float(label["dead_zone"]), self.settings.shadow_margin)
        log.info("shadow test started", candidate=candidate, active=active,
                 metric=self.settings.shadow_metric, needed=self.settings.shadow_predictions)
        return True

    def _start_judge(self, now: float) -> None:
        """Backtest the candidate and the active version over the shadow window."""
        shadow, s = self.judging, self.settings
        current = self.policies.refresh()  # the live policy, whole: trade as the fleet would
        policy = {f"{section}.{key}": value
                  for section in ("risk", "sizing", "strategy") if hasattr(current, section)
                  for key, value in getattr(current, section).model_dump(mode="json").items()}
        result = self.workdir / f".clm-judge-{shadow.candidate.version}.json"
        command = [sys.executable, "-m", "services.clm.judge", "--data", s.training_data_dir,
                   "--models", s.models_dir, "--candidate", shadow.candidate.version,
                   "--active", shadow.active.version,
                   "--symbols", ",".join(sorted(shadow.symbols)),
                   "--first-ms", str(shadow.first_ms), "--last-ms", str(shadow.last_ms),
                   "--policy", orjson.dumps(policy).decode(),
                   "--brake", repr(current.risk.ess_brake_drawdown),
                   "--margin", repr(s.promotion_margin), "--result", str(result)]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.judge = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        self.judge_info = {"candidate": shadow.candidate.version, "result": str(result),
                           "started": now, "brake": current.risk.ess_brake_drawdown}
        log.info("promotion backtest started", candidate=shadow.candidate.version,
                 active=shadow.active.version, pid=self.judge.pid)

    def _finish_judge(self, out: Outbox) -> None:
        assert self.judge_info is not None
        info, self.judge, self.judge_info = self.judge_info, None, None
        result = _read_result(Path(info["result"]), lambda e: {
            "ran": False, "promote": False,
            "reason": f"no promotion: the backtest left no readable result: {e}"})
        result["brake"] = info["brake"]
        self._decide(out, result)

    def _decide(self, out: Outbox, judged: dict[str, Any]) -> None:
        shadow, self.judging = self.judging, None
        candidate_score, active_score = shadow.scores()
        promoted = bool(judged.get("promote"))
        reason = str(judged.get("reason", ""))
        evidence: dict[str, Any] = {
            "ran": bool(judged.get("ran")), "brake": judged.get("brake"),
            "start": judged.get("start"), "end": judged.get("end"),
            "symbols": ",".join(sorted(shadow.symbols)),
            "seconds": judged.get("seconds")}
        for role in ("candidate", "active"):
            for key, value in (judged.get(role) or {}).items():
                evidence[f"{role}_{key}"] = value
        PROMOTIONS.labels("promoted" if promoted else "kept").inc()
        self._emit(out, LEARNING_EVENTS, ShadowCompleted(
            candidate=shadow.candidate.version, active=shadow.active.version,
            metric=shadow.metric, candidate_score=candidate_score, active_score=active_score,
            predictions=shadow.resolved, promoted=promoted, ts=self._last_ts,
            backtest=evidence, reason=reason), key=shadow.candidate.version)
        self.registry.record_decision(shadow.candidate.version, {
            "against": shadow.active.version, "promoted": promoted, "reason": reason,
            "backtest": evidence, "metric": shadow.metric,
            "candidate_score": candidate_score, "active_score": active_score,
            "predictions": shadow.resolved})
        log.info("promotion decided", candidate=shadow.candidate.version, promoted=promoted,
                 reason=reason)
        if promoted:
            self.registry.promote(shadow.candidate.version)
            self._announce_active(out, reason=f"promotion backtest: {reason}")
        else:
            self.registry.set_candidate(None)
        self._dirty = True

    # --- announcements --------------------------------------------------------------------

    def _announce_active(self, out: Outbox, reason: str) -> None:
        try:
            active = self.registry.active()
        except ModelRefused as e:
            log.error("registry pointer unreadable", reason=str(e))
            return
        if active is None or active == self.announced:
            return
        previous, self.announced = self.announced, active
        self._emit(out, POLICY_UPDATED, PolicyUpdated(
            kind="model", version=active, previous=previous, reason=reason,
            ts=self._now_ms(time.time())), key=f"{active}:{previous}")
        self._dirty = True

    def _emit(self, out: Outbox, stream: Any, payload: Any, key: str) -> None:
        out.emit(stream, new_envelope(payload, ts=payload.ts, source=NAME,
                                      key=f"{payload.event_type}:{key}"))

    def _now_ms(self, now: float) -> int:
        return int(now * 1000)

    def _save(self, out: Outbox) -> None:
        if not self._dirty and out.empty:
            return
        out.put_state(CLM_KEY, {
            "announced": self.announced, "next_run": self.next_run, "last_ts": self._last_ts,
            "job": self.job_info, "last_run": self.last_run, "judge": self.judge_info,
            "drift": self.drift_detail,
            "shadow": None if self.shadow is None else {
                "candidate": self.shadow.candidate.version, "active": self.shadow.active.version,
                "metric": self.shadow.metric, "resolved": self.shadow.resolved,
                "needed": self.shadow.needed},
        })
        self._dirty = False


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def build(settings: Any, ports: Ports) -> Clm:
    return Clm.from_settings(settings, ports)


def _read_result(path: Path, unreadable: Callable[[Exception], dict[str, Any]]
                 ) -> dict[str, Any]:
    """A child job's JSON result file, consumed; ``unreadable(error)`` when there is none."""
    try:
        result: dict[str, Any] = orjson.loads(path.read_bytes())
        path.unlink()
    except (OSError, orjson.JSONDecodeError) as e:
        return unreadable(e)
    return result

