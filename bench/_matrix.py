"""What the two fault matrices share (``_faults``: the fleet as processes; ``_faultmatrix``:
one service on the runner): the outcome of a fault and the loop that runs every scenario."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Outcome:
    fault: str
    tried: int = 1
    survived: bool = False
    orders_lost: int = 0
    orders_duplicated: int = 0
    entries_dead_lettered_wrongly: int = 0
    refused_entries_filled: int = 0
    seconds_to_recover: float | None = None
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # what the tests assert on

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Scenario = Callable[[Path, bool], Outcome]


def run_matrix(scenarios: Sequence[Scenario], quick: bool, prefix: str) -> list[dict[str, Any]]:
    """Every scenario in a fresh directory; one that breaks is a row too (a figure, not a
    crash of the benchmark)."""
    rows = []
    for scenario in scenarios:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            try:
                row = scenario(Path(tmp), quick).as_dict()
            except Exception as e:  # noqa: BLE001
                row = Outcome(scenario.__name__, survived=False,
                              notes=[f"scenario failed: {e!r}"]).as_dict()
        row["scenario_seconds"] = round(time.monotonic() - started, 1)
        rows.append(row)
    return rows
