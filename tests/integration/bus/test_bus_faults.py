"""The bus failing under the real fleet (issue 10): risk-governor, apply-layer, execution and
exit-brain as real processes under the supervisor, each test on a private ``redis-server``
that it restarts (empty, or with the shipped AOF configuration), stops for 20 s, pauses
with ``CLIENT PAUSE 20000`` or feeds bad bytes; two instances of a group with one
SIGSTOPped past ``claim_idle_ms``; the ESS tripping under a queued order.

Every process must be the very one started (same pid, never restarted), no order may be
lost or doubled (one entry order per plan on ``apply.result``, one ack and one fill per
client order id on ``execution.result``), no valid entry dead-lettered, and no entry that
the emergency stop forbids may fill. The harness is ``bench/_faults.py``; the same
scenarios are the ``faults`` benchmark (``python -m bench faults``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import _faults
from bench._faults import Outcome
from quantum import localredis

pytestmark = pytest.mark.skipif(localredis.server_binary() is None,
                                reason="needs a redis-server binary (the tests stop it)")


def assert_clean(outcome: Outcome) -> None:
    """What every fault must leave: the same processes, handling, nothing lost or doubled."""
    assert outcome.survived, outcome
    assert outcome.orders_lost == 0, outcome
    assert outcome.orders_duplicated == 0, outcome
    assert outcome.entries_dead_lettered_wrongly == 0, outcome
    assert outcome.refused_entries_filled == 0, outcome
    assert outcome.seconds_to_recover is not None, outcome
    assert not any(note.startswith("processes:") for note in outcome.notes), outcome


def test_restart_without_persistence_keeps_the_stop_tripped_and_rebuilds_the_book(
        tmp_path: Path) -> None:
    outcome = _faults.restart_empty(tmp_path, False)
    facts = outcome.facts
    assert facts["ess_tripped"], outcome  # never clear after state loss
    assert facts["ess_reason"].startswith("state_lost") or facts["ess_reason"] == "fault drill"
    assert facts["state_lost_declared"], outcome
    # A fresh approval after the restart does not become an order, and an entry order put
    # straight on apply.result is refused by execution: nothing reaches the venue.
    assert not facts["new_approval_became_order"], outcome
    assert facts["direct_order_reject"] in ("ess_tripped", "state_unknown"), outcome
    assert facts["fills_after_restart"] == 0, outcome
    # Execution rebuilt its paper book from its local record, positions included.
    assert facts["book_source"] == "rebuilt_from_local_record", outcome
    assert set(facts["positions_before"]) <= set(facts["book_positions"]), outcome
    assert_clean(outcome)


def test_restart_with_the_shipped_aof_configuration_loses_nothing(tmp_path: Path) -> None:
    assert localredis.DURABLE_CONFIG.is_file()  # the server runs with deploy/redis/redis.conf
    outcome = _faults.restart_persistent(tmp_path, False)
    facts = outcome.facts
    assert facts["ess_tripped"] and facts["ess_reason"] == "fault drill", outcome
    assert facts["positions_after"] == facts["positions_before"] != [], outcome
    assert facts["books_not_fresh"] == [], outcome  # the book was there: nothing rebuilt
    assert facts["filled_after"], outcome  # after the reset, a new approval is filled once
    assert_clean(outcome)


def test_redis_down_20_seconds_is_survived_by_the_same_processes(tmp_path: Path) -> None:
    outcome = _faults.redis_down(tmp_path, False)
    assert outcome.facts["alive_while_down"], outcome
    assert outcome.facts["filled_after"], outcome
    assert_clean(outcome)  # orders in flight at the stop filled exactly once


def test_client_pause_20000_is_waited_out(tmp_path: Path) -> None:
    outcome = _faults.client_pause(tmp_path, False)
    assert outcome.facts["filled_after"], outcome
    assert_clean(outcome)


def test_two_instances_one_paused_past_claim_idle_give_one_order_per_plan(
        tmp_path: Path) -> None:
    outcome = _faults.two_instances(tmp_path, False)
    facts = outcome.facts
    # The active instance of each was stopped holding entries it had read but not
    # committed; the standby took the lease over and claimed them; when the paused one woke,
    # its commit was refused (the lease had moved: NOTLEADER).
    assert facts["apply-layer_held"] > 0 and facts["execution_held"] > 0, outcome
    for name, consumer in zip(("apply-layer", "execution"), facts["paused"], strict=True):
        assert facts["refusals"].get(f"{consumer}:NOTLEADER", 0) >= 1, outcome
        assert f"{name}-{facts[name + '_active_after']}" != consumer, outcome  # taken over
    assert_clean(outcome)  # exactly one order, one ack and one fill per plan


def test_malformed_entries_stay_alone(tmp_path: Path) -> None:
    outcome = _faults.poison(tmp_path, False)
    assert outcome.facts["dead_letters"] == outcome.facts["expected_dead_letters"], outcome
    assert_clean(outcome)


def test_orders_queued_when_the_stop_trips_are_not_filled(tmp_path: Path) -> None:
    outcome = _faults.ess_trip_queued(tmp_path, False)
    assert outcome.facts["reject_reasons"] == ["ess_tripped"], outcome
    assert_clean(outcome)
