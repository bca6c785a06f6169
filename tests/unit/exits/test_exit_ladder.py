"""The exit ladder replayed on real bars: each level fires at the bar an independent scan
of the same bars says it must, with break-even after TP1 and the trailing stop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantum.exits.brain import TrackedPosition
from quantum.exits.profiles import exit_plan
from quantum.replay.data import load_symbol

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"


def first_bar(condition: np.ndarray, start: int) -> int | None:
    hits = np.flatnonzero(condition[start:])
    return int(hits[0]) + start if hits.size else None


def tracked(plan_price: float, stop_distance: float, atr: float, ts: int,
            profile: str = "DEFAULT") -> TrackedPosition:
    plan = exit_plan(profile, "LONG", plan_price, stop_distance, atr)
    return TrackedPosition.from_fill({
        "position_id": "p", "symbol": "BTCUSDT", "position_side": "LONG", "price": plan_price,
        "ts": ts, "quantity": 1.0, "position_quantity": 1.0, "liquidation_price": 0.0,
        "exit_plan": plan.model_dump(mode="json")})


@pytest.mark.parametrize("entry_index", [600, 2400, 5000, 9000])
def test_default_ladder_hits_each_level_at_the_right_bar(entry_index: int) -> None:
    data = load_symbol(SAMPLE, "BTCUSDT")
    opens, highs, lows, closes = (data.ohlcv[:, i] for i in range(4))
    entry = float(closes[entry_index])
    distance = entry * 0.004
    position = tracked(entry, distance, atr=distance / 2, ts=int(data.open_time[entry_index]))
    tp1, tp2, stop = entry + distance, entry + 1.5 * distance, entry - distance
    start = entry_index + 1
    stop_bar = first_bar(lows <= stop, start)
    tp1_bar = first_bar(highs >= tp1, start)
    seen: dict[str, int] = {}
    for i in range(start, min(start + 3000, len(closes))):
        for order in position.evaluate(int(data.open_time[i]), float(opens[i]), float(highs[i]),
                                       float(lows[i]), float(closes[i])):
            seen.setdefault(order.reason, i)
        if position.closing:
            break
    if stop_bar is not None and (tp1_bar is None or stop_bar <= tp1_bar):
        assert seen == {"stop_loss": stop_bar}  # the stop wins a bar touching both
        return
    assert tp1_bar is not None
    assert seen["take_profit_1"] == tp1_bar
    # After TP1: stop at break-even, trailing 2 x ATR below the best high (from the next
    # bar); the stop is checked before the take-profit on every bar.
    expected: dict[str, int] = {"take_profit_1": tp1_bar}
    if highs[tp1_bar] >= tp2:
        expected["take_profit_2"] = tp1_bar
    for i in range(tp1_bar + 1, min(start + 3000, len(closes))):
        best = float(highs[start:i].max())
        trail = best - 2 * (distance / 2)
        level = max(entry, trail)
        if lows[i] <= level:
            expected["trailing_stop" if trail > entry else "break_even_stop"] = i
            break
        if "take_profit_2" not in expected and highs[i] >= tp2:
            expected["take_profit_2"] = i
    assert seen == expected

def test_challenge_time_stop_closes_after_two_hours_of_bars() -> None:
    data = load_symbol(SAMPLE, "ETHUSDT")
    i = 1000
    entry = float(data.ohlcv[i, 3])
    position = tracked(entry, entry * 0.5, atr=0.0, ts=int(data.open_time[i]),
                       profile="CHALLENGE_100")  # levels far away: only time can close it
    for j in range(i + 1, i + 40):
        orders = position.evaluate(int(data.open_time[j]), *map(float, data.ohlcv[j, :4]))
        if orders:
            assert [o.reason for o in orders] == ["time_stop"]
            assert j - i == 24  # 24 bars of 5 minutes
            return
    raise AssertionError("the time stop never fired")


def test_callback_trailing_follows_the_best_price() -> None:
    position = tracked(100.0, 1.0, atr=0.0, ts=0)
    position.trailing_atr_multiple = None
    position.trailing_callback_pct = 0.01
    assert [o.reason for o in position.evaluate(1, 100.0, 101.2, 99.9, 101.0)] == [
        "take_profit_1"]
    position.evaluate(2, 101.0, 110.0, 101.0, 109.0)
    assert position.stop == pytest.approx(110.0 * 0.99)
    assert position.protective_levels()[0] == pytest.approx(108.9)
