"""The feature-publisher on a real Redis, fed by the replay source (ticks, then klines, bar
time by bar time): its vectors are the ones the backtest primes it with
(:func:`quantum.features.stream_tables`), funding, basis and the cross-symbol features
included, and a restarted publisher warms up from what it handled and carries on with them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

from quantum.bus.runner import publish
from quantum.contracts.streams import FEATURES
from quantum.features import FEATURE_NAMES, SCHEMA_HASH, WARMUP_BARS, stream_tables
from quantum.market.replay import ReplaySource

SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT")
BARS = 760
CHUNK = 40  # steps published before the publisher drains them (the replay's barrier is 1)


def source(sample_dir: Path) -> ReplaySource:
    start = 1_756_684_800_000  # the sample's first bar
    return ReplaySource(sample_dir, SYMBOLS, start_ms=start, end_ms=start + BARS * 300_000)


def feed(r: redis.Redis, publisher: Any, replay: ReplaySource, times: list[int]) -> None:
    for first in range(0, len(times), CHUNK):
        for open_time in times[first:first + CHUNK]:
            step = replay.step(open_time)
            publish(r, step.ticks + step.klines)
        publisher.runner.run(max_idle_turns=1)


def vectors(r: redis.Redis) -> dict[tuple[str, int], dict[str, Any]]:
    out = {}
    for _, fields in r.xrange(FEATURES.key):
        payload = orjson.loads(fields[b"payload"])
        out[(payload["symbol"], payload["open_time"])] = payload
    return out


def assert_close(got: dict[str, float], want: dict[str, float] | None, where: Any) -> None:
    """Equal to 1e-9 (relative, absolute below 1): each ``run`` of the runner starts it
    again, and a start warms the publisher up from the bars it handled (``restore``), which
    reproduces the features to that tolerance (``test_features.py``)."""
    assert want is not None and list(got) == list(want), where
    bad = {n: (v, want[n]) for n, v in got.items()
           if not abs(v - want[n]) <= 1e-9 * max(1.0, abs(want[n]))}
    assert not bad, (where, bad)


def test_publisher_on_the_bus_emits_the_primed_tables_and_resumes_after_a_restart(
        r: redis.Redis, on_bus: Callable[..., Any], sample_dir: Path) -> None:
    replay = source(sample_dir)
    expected = stream_tables(replay.data)
    times = replay.times.tolist()
    settings = {"restore_bars": 600, "block_ms": 20}
    publisher = on_bus("feature-publisher", **settings)
    restart_at = 700
    feed(r, publisher, replay, times[:restart_at])
    first = vectors(r)
    assert len(first) == len(SYMBOLS) * (restart_at - WARMUP_BARS + 1)
    for (symbol, open_time), payload in first.items():
        assert payload["schema_hash"] == SCHEMA_HASH
        assert list(payload["values"]) == list(FEATURE_NAMES)
        assert_close(payload["values"], expected[symbol][open_time], (symbol, open_time))
    # From the second warmed bar on (the first has no warmed previous bar to rank against),
    # every input is there: funding and mark from the ticks, BTC and the cross-section.
    flags = ("funding_available", "basis_available", "btc_available", "beta_available",
             "xs_available")
    assert all(p["values"][flag] == 1.0 for (_, t), p in first.items()
               if t > times[WARMUP_BARS - 1] for flag in flags)

    restarted = on_bus("feature-publisher", **settings)  # restores from what it handled
    feed(r, restarted, replay, times[restart_at:])
    after = {key: p for key, p in vectors(r).items() if key not in first}
    assert len(after) == len(SYMBOLS) * (BARS - restart_at)
    for (symbol, open_time), payload in after.items():
        assert_close(payload["values"], expected[symbol][open_time], (symbol, open_time))
