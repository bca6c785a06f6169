"""The fault matrix of issue 10 at full length (Redis down 20 s, CLIENT PAUSE 20000): the
execution service on the real runner survives each fault in the same thread, and no order
is lost, doubled, wrongly dead-lettered or filled past the emergency stop."""

from __future__ import annotations

import pytest

from bench._faultmatrix import SCENARIOS, Outcome


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_fault(scenario, tmp_path) -> None:  # type: ignore[no-untyped-def]
    outcome: Outcome = scenario(tmp_path, False)
    assert outcome.survived, outcome
    assert outcome.orders_lost == 0, outcome
    assert outcome.orders_duplicated == 0, outcome
    assert outcome.entries_dead_lettered_wrongly == 0, outcome
    assert outcome.refused_entries_filled == 0, outcome
    assert outcome.seconds_to_recover is not None, outcome
    if scenario.__name__ == "restart_empty":
        assert any("state_lost" in note for note in outcome.notes), outcome
        assert "book: rebuilt_from_local_record" in outcome.notes, outcome
