"""``quantum_ai_model_loaded`` is 1 for whatever model serves: the baseline too, from the
moment the service is built (QuantumModelNotServing must not fire on the default)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY

from services.ai_engine.service import MODEL_LOADED


def test_the_baseline_counts_as_a_served_model(on_bus: Callable[..., Any]) -> None:
    MODEL_LOADED.set(0)
    built = on_bus("ai-engine", model="baseline")
    assert built.service.predictor is not None
    assert REGISTRY.get_sample_value("quantum_ai_model_loaded") == 1.0
