"""``faults``: the bus-fault matrix of issue 10 (see ``bench/_faultmatrix.py``).

Per fault: tried, survived, orders lost, orders duplicated, entries dead-lettered wrongly,
refused entries that filled anyway, and seconds to recover. ``quick`` shortens the outage
and the pause from 20 s to 5 s.
"""

from __future__ import annotations

from typing import Any

from bench._faultmatrix import run_matrix


def run(quick: bool) -> dict[str, Any]:
    rows = run_matrix(quick)
    return {
        "faults": rows,
        "all_survived": all(row["survived"] for row in rows),
        "orders_lost": sum(row["orders_lost"] for row in rows),
        "orders_duplicated": sum(row["orders_duplicated"] for row in rows),
        "entries_dead_lettered_wrongly": sum(row["entries_dead_lettered_wrongly"] for row in rows),
        "refused_entries_filled": sum(row["refused_entries_filled"] for row in rows),
    }
