"""``faults``: the bus-fault matrix of issue 10, at two levels.

* ``fleet`` (``bench/_faults.py``): risk-governor, apply-layer, execution and exit-brain as
  real processes under the supervisor, orders driven through ``risk.decision`` →
  apply-layer → ``apply.result`` → execution; "survived" means the same pids, no restart,
  and a new order afterwards filled once. The same scenarios are
  ``tests/integration/test_bus_faults.py``.
* ``service`` (``bench/_faultmatrix.py``): the execution service alone on the real runner,
  in a thread; the same scenarios are ``tests/integration/test_fault_matrix.py``.

Per fault: tried, survived, orders lost, orders duplicated, entries dead-lettered wrongly,
refused entries that filled anyway, and seconds to recover. ``quick`` shortens the outage
and the pause from 20 s to 5 s.
"""

from __future__ import annotations

from typing import Any

from bench import _faults
from bench._faultmatrix import run_matrix

COUNTS = ("orders_lost", "orders_duplicated", "entries_dead_lettered_wrongly",
          "refused_entries_filled")


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "faults": rows,
        "all_survived": all(row["survived"] for row in rows),
        **{name: sum(row[name] for row in rows) for name in COUNTS},
    }


def run(quick: bool) -> dict[str, Any]:
    fleet = _summary(_faults.run_matrix(quick))
    service = _summary(run_matrix(quick))
    return {
        "fleet": fleet,
        "service": service,
        "all_survived": fleet["all_survived"] and service["all_survived"],
        **{name: fleet[name] + service[name] for name in COUNTS},
    }
