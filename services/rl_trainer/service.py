"""rl-trainer: retrain the sizing policy on a schedule and when enough new rewards arrived.

* It consumes ``rl_rewards`` only to count them: a run reads the whole stream itself (the
  fleet's closed trades join the simulated history, :mod:`quantum.rl.job`).
* A run starts every ``retrain_interval_s`` (wall clock) or once ``retrain_min_rewards`` new
  rewards arrived since the last run started, whichever comes first; one run at a time, as a
  child process (``python -m quantum.rl.job``), so the service keeps beating and counting.
* A run registers a new version and promotes it only if the walk-forward evaluation says it
  beats fixed 1.0× sizing out of sample; otherwise it stays a candidate and the verdict is
  logged and kept in the state key. On promotion a ``rl.policy.promoted`` event goes to
  ``policy.sizing`` and the intent-bridge reloads (it also notices the registry's pointer
  changing, so an operator's promotion works too).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Gauge

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.ports import Ports
from quantum.bus.runner import Outbox, ServiceBase
from quantum.contracts.events import SizingPolicyPromoted
from quantum.contracts.streams import SIZING_POLICY
from quantum.registry.fleet import RL_TRAINER_KEY

NAME = "rl-trainer"
STATE_KEY = RL_TRAINER_KEY

RUNS = Counter("quantum_rl_training_runs_total", "Sizing-policy training runs", ["outcome"])
NEW_REWARDS = Gauge("quantum_rl_rewards_since_run", "Rewards arrived since the last run began")

log = structlog.get_logger(service=NAME)


class RlTrainer(ServiceBase):
    name = NAME

    def __init__(self, settings: Any, ports: Ports) -> None:
        self.settings = settings
        self.committed = ports.state
        self.registry_dir = Path(settings.rl_policy_dir)
        self.new_rewards = 0
        self.next_run = time.time() + (0 if settings.retrain_on_start
                                       else settings.retrain_interval_s)
        self.job: subprocess.Popen[bytes] | None = None
        self.job_info: dict[str, Any] | None = None
        self.last_result: dict[str, Any] | None = None
        self._last_ts = 0
        self._dirty = False

    def restore(self) -> None:
        raw = self.committed.get(STATE_KEY)
        state = orjson.loads(raw) if raw else {}
        self.new_rewards = int(state.get("new_rewards", 0))
        if state.get("next_run") is not None:
            self.next_run = float(state["next_run"])
        self.last_result = state.get("last_result")
        self._last_ts = int(state.get("last_ts", 0))

    def handle(self, event: Envelope[Any], out: Outbox) -> None:
        self.new_rewards += 1
        self._last_ts = max(self._last_ts, event.ts)
        self._dirty = True
        NEW_REWARDS.set(self.new_rewards)

    def on_batch_end(self, out: Outbox) -> None:
        if self._dirty:
            out.put_state(STATE_KEY, self.state())
            self._dirty = False

    def state(self) -> dict[str, Any]:
        return {"new_rewards": self.new_rewards, "next_run": self.next_run,
                "running": self.job_info, "last_result": self.last_result,
                "last_ts": self._last_ts}

    def on_idle(self, out: Outbox, now: float) -> None:
        if self.job is None:
            due = now >= self.next_run
            enough = self.new_rewards >= self.settings.retrain_min_rewards
            if due or enough:
                self.start_run(now, "schedule" if due else "rewards")
        elif self.job.poll() is not None:
            self.finish_run(out, now)

    def command(self, result_path: Path) -> list[str]:
        s = self.settings
        return [sys.executable, "-m", "quantum.rl.job", "--data", s.training_data_dir,
                "--registry", str(self.registry_dir), "--result", str(result_path),
                "--symbols", s.training_symbols,
                "--lookback-days", str(s.training_lookback_days),
                "--redis-url", s.redis_url, "--timesteps", str(s.training_timesteps),
                "--folds", str(s.training_folds), "--seed", str(s.training_seed), "--promote"]

    def start_run(self, now: float, trigger: str) -> None:
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        result_path = self.registry_dir / f".run-{int(now * 1000)}.json"
        self.job = subprocess.Popen(self.command(result_path))
        self.job_info = {"trigger": trigger, "started": now, "result": str(result_path),
                         "rewards": self.new_rewards, "pid": self.job.pid}
        self.new_rewards = 0
        self.next_run = now + self.settings.retrain_interval_s
        self._dirty = True
        log.info("sizing-policy training started", trigger=trigger, pid=self.job.pid)

    def finish_run(self, out: Outbox, now: float) -> None:
        assert self.job is not None and self.job_info is not None
        path = Path(self.job_info["result"])
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            result = {"error": f"no result from the training run (exit {self.job.returncode}):"
                               f" {e}"}
        path.unlink(missing_ok=True)
        self.job, self.job_info = None, None
        summary = {k: result.get(k) for k in ("version", "promoted", "previous", "verdict",
                                              "return_difference", "sharpe_difference",
                                              "trades", "error")}
        self.last_result = {**summary, "finished": now}
        if result.get("error"):
            RUNS.labels("failed").inc()
            log.error("sizing-policy training failed", error=result["error"])
        elif result.get("promoted"):
            RUNS.labels("promoted").inc()
            promoted = SizingPolicyPromoted(
                version=result["version"], previous=result.get("previous"),
                reason=result["verdict"], return_difference=result.get("return_difference"),
                sharpe_difference=result.get("sharpe_difference"), ts=int(now * 1000))
            out.emit(SIZING_POLICY, new_envelope(promoted, ts=promoted.ts, source=NAME,
                                                 key=result["version"]))
            log.info("sizing policy promoted", version=result["version"],
                     verdict=result["verdict"])
        else:
            RUNS.labels("not_promoted").inc()
            log.warning("sizing policy kept as a candidate", version=result.get("version"),
                        verdict=result.get("verdict"))
        out.put_state(STATE_KEY, self.state())


def build(settings: Any, ports: Ports) -> RlTrainer:
    return RlTrainer(settings, ports)
