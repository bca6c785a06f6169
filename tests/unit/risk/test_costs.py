"""The cost model the ai-engine's gate uses: fees by entry order type, slippage, funding."""

from __future__ import annotations

import pytest

from quantum.risk.costs import CostModel

COSTS = CostModel(taker_fee=0.0004, maker_fee=0.0002, slippage_bps=2.0)


def test_a_taker_round_trip_pays_two_taker_fees_and_two_slippages() -> None:
    assert COSTS.fees("taker") == pytest.approx(2 * 0.0004 + 2 * 0.0002)


def test_a_maker_entry_pays_the_maker_fee_and_no_entry_slippage() -> None:
    assert COSTS.fees("maker") == pytest.approx(0.0002 + 0.0004 + 0.0002)
    assert COSTS.fees("maker") < COSTS.fees("taker")


def test_longs_pay_positive_funding_and_shorts_receive_it() -> None:
    # 96 bars = 8 hours = one settlement at 0.01 %
    assert COSTS.funding(+1, 96, 0.0001) == pytest.approx(0.0001)
    assert COSTS.funding(-1, 96, 0.0001) == pytest.approx(-0.0001)
    assert COSTS.cost(-1, 96, 0.0001) < COSTS.cost(+1, 96, 0.0001)


def test_the_edge_is_the_expected_return_on_the_side_net_of_the_full_cost() -> None:
    cost = COSTS.cost(+1, 48, 0.0002)
    assert COSTS.edge(0.005, +1, 48, 0.0002) == pytest.approx(0.005 - cost)
    assert COSTS.edge(0.005, -1, 48, 0.0002) < 0  # shorting an expected rise loses
