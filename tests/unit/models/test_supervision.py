"""The direction-bias supervisor judged on real bars: a lean the market explains is not
blocked, the same lean against a flat, rising or opposite market is; its state survives a
round trip."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from quantum.models.supervision import BAR_MS, BiasRule, BiasSupervisor, BiasVerdict
from quantum.replay.data import load_symbol

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
HOUR_MS = 3_600_000


def mostly_short(k: int) -> str:
    return "LONG" if k % 7 == 0 else "SHORT"  # 6 of 7 SHORT: 86 %


def mostly_long(k: int) -> str:
    return "SHORT" if k % 7 == 0 else "LONG"


def judge(start: str, hours: int, pattern: object,
          supervisor: BiasSupervisor | None = None) -> list[BiasVerdict]:
    """Feed the real closes of BTC, ETH and SOL from two hours before ``start`` (so every
    symbol's horizon move is known), and from ``start`` on one signal per symbol and bar
    (``pattern`` gives its direction), judging the window before each signal joins it, as
    the ai-engine does."""
    begin = int(datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp() * 1000)
    data = {s: load_symbol(SAMPLE, s, start_ms=begin - 2 * HOUR_MS,
                           end_ms=begin + hours * HOUR_MS) for s in SYMBOLS}
    supervisor = supervisor or BiasSupervisor(BiasRule())
    verdicts: list[BiasVerdict] = []
    k = 0
    for i in range(len(data["BTCUSDT"].open_time)):
        for symbol, bars in data.items():
            close_time, close = int(bars.open_time[i]) + BAR_MS - 1, float(bars.ohlcv[i, 3])
            supervisor.observe_bar(symbol, close_time, close)
            if close_time >= begin:
                verdicts.append(supervisor.verdict())
                supervisor.observe(symbol, close_time, pattern(k), close)  # type: ignore[operator]
                k += 1
    return [v for v in verdicts if v.reason != "window_not_full"]


def test_mostly_short_signals_in_the_2025_10_10_sell_off_are_not_blocked() -> None:
    # 17:10-20:10 UTC on 2025-10-10: BTC 118.1k -> 116.6k, SOL and ETH falling with it
    verdicts = judge("2025-10-10T17:10", 3, mostly_short)
    assert len(verdicts) > 80
    # the old rule (more than 70 % one way) would have blocked every one of them
    assert all(v.model_share > 0.7 and v.side == "SHORT" for v in verdicts)
    assert [v for v in verdicts if v.blocked] == []
    assert all(v.reason == "explained_by_market" and v.market_share > 0.8 for v in verdicts)


def test_mostly_long_signals_in_the_same_sell_off_are_blocked() -> None:
    verdicts = judge("2025-10-10T17:10", 3, mostly_long)
    assert verdicts and all(v.blocked and v.reason == "not_explained_by_market"
                            for v in verdicts)
    first = verdicts[0]
    assert first.blocked_reason is not None
    assert first.blocked_reason.startswith("direction_bias:LONG:0.8")
    assert first.data()["market_share_up"] is not None and first.market_share < 0.2
    assert "not explained by the market" in first.explain(BiasRule())


def test_the_same_short_share_in_a_flat_or_rising_market_is_blocked() -> None:
    # 2025-10-02 00:00-03:00 UTC: the three symbols drift up (SOL +0.6 %, ETH +0.5 %)
    verdicts = judge("2025-10-02T00:00", 3, mostly_short)
    blocked = [v for v in verdicts if v.blocked]
    assert len(blocked) >= 0.7 * len(verdicts)
    assert all(v.reason == "not_explained_by_market" and v.model_share - v.market_share > 0.2
               for v in blocked)


def test_balanced_signals_are_never_blocked_and_an_unknown_market_counts_as_flat() -> None:
    assert not [v for v in judge("2025-10-02T00:00", 3, lambda k: ("LONG", "SHORT")[k % 2])
                if v.blocked]
    supervisor = BiasSupervisor(BiasRule(window=4))
    for k in range(4):  # no bars observed: no market move is known
        supervisor.observe("BTCUSDT", k * BAR_MS, "SHORT", 100.0)
    verdict = supervisor.verdict()
    assert verdict.blocked and verdict.reason == "market_unknown"
    assert verdict.market_share_up is None and verdict.market_share == 0.5


def test_a_signal_is_judged_by_its_own_horizon_once_it_has_passed() -> None:
    rule = BiasRule(window=2, horizon_bars=2)
    supervisor = BiasSupervisor(rule)
    for i, close in enumerate((100.0, 101.0, 102.0)):
        supervisor.observe_bar("BTCUSDT", i * BAR_MS, close)
    supervisor.observe("BTCUSDT", 2 * BAR_MS, "SHORT", 102.0)
    # not yet realised: the newest two-bar move (up) stands in for it
    assert supervisor.market_move(supervisor.recent[0]) == pytest.approx(0.0198, abs=1e-4)
    supervisor.observe_bar("BTCUSDT", 3 * BAR_MS, 99.0)
    supervisor.observe_bar("BTCUSDT", 4 * BAR_MS, 96.0)
    assert supervisor.recent[0][4] == pytest.approx(-0.0606, abs=1e-4)  # ln(96 / 102)
    supervisor.observe_bar("BTCUSDT", 5 * BAR_MS, 120.0)  # later bars do not change it
    assert supervisor.market_move(supervisor.recent[0]) == pytest.approx(-0.0606, abs=1e-4)
    supervisor.observe_bar("BTCUSDT", 7 * BAR_MS, 121.0)  # a gap: the newest move is unknown
    supervisor.observe("BTCUSDT", 7 * BAR_MS, "SHORT", 121.0)
    assert supervisor.market_move(supervisor.recent[1]) is None


def test_state_round_trip_gives_the_same_verdicts() -> None:
    supervisor = BiasSupervisor(BiasRule())
    judge("2025-10-10T17:10", 1, mostly_short, supervisor)
    state = orjson.loads(orjson.dumps(supervisor.state()))  # as the state key stores it
    restored = BiasSupervisor(BiasRule())
    restored.load(state)
    assert restored.state() == supervisor.state()
    assert restored.verdict() == supervisor.verdict()
    later = judge("2025-10-10T18:10", 1, mostly_short, supervisor)
    assert judge("2025-10-10T18:10", 1, mostly_short, restored) == later
    restored.load(None)
    assert restored.state() == {"signals": [], "closes": {}}


@pytest.mark.parametrize("field,value", [("window", 1), ("threshold", 0.5), ("tolerance", 0.6),
                                         ("horizon_bars", 0), ("dead_zone", -0.1)])
def test_a_bad_rule_is_refused_naming_the_parameter(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field.split("_")[0]):
        BiasRule(**{field: value})  # type: ignore[arg-type]
