"""The ai-engine's bias supervisor on the bus: every bar it is handed reaches the supervisor,
its window and closes are committed with the acks and restored by a new instance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import redis
from tests.integration.ai_engine.test_ai_engine_ensemble import feature_events

from quantum.registry.fleet import AI_ENGINE_KEY


def test_supervisor_state_is_committed_and_restored(r: redis.Redis,
                                                    on_bus: Callable[..., Any]) -> None:
    settings = {"min_confidence": 0.0, "bias_window": 5, "bias_horizon_bars": 3}
    first = on_bus("ai-engine", **settings)
    events = feature_events("ETHUSDT", 40)
    first.commit(first.deliver(*events))
    supervisor = first.service.supervisor
    assert supervisor.rule.window == 5 and supervisor.rule.horizon_bars == 3
    assert [t for t, _ in supervisor.closes["ETHUSDT"]] == [
        e.payload.close_time for e in events[-4:]]
    stored = orjson.loads(r.get(AI_ENGINE_KEY))
    assert stored["supervisor"] == orjson.loads(orjson.dumps(supervisor.state()))
    restarted = on_bus("ai-engine", **settings)  # restores from the committed state
    assert restarted.service.supervisor.state() == stored["supervisor"]
    assert restarted.service.supervisor.verdict() == supervisor.verdict()
