"""The meta-regime service on a real Redis, over real bars of data/sample (BTC, ETH, SOL,
2025-10-06 to the crash of 2025-10-10 21:30 UTC): it publishes each change on
``meta.regime``, keeps the current regimes and the scorecards in its state key, comes back
from a restart with the same calls and without scoring any twice, sends a malformed bar to
the dead-letter stream and carries on; ``quantumctl regime`` shows what it holds."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from typer.testing import CliRunner

from quantum.bus.envelope import Envelope, decode, new_envelope
from quantum.bus.runner import publish
from quantum.contracts.events import EVENT_TYPES, Kline, MetaRegime
from quantum.contracts.streams import DLQ, MARKET_KLINES, META_REGIME
from quantum.ctl.main import app
from quantum.registry.fleet import META_REGIME_KEY
from quantum.replay.data import load_symbol

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def bars(sample_dir: Path, start: str, end: str) -> list[Envelope[Any]]:
    """Every symbol's bars in ``[start, end)``, as the replay publishes them (by time)."""
    series = {s: load_symbol(sample_dir, s, start_ms=ms(start), end_ms=ms(end)) for s in SYMBOLS}
    out = []
    for i, open_time in enumerate(series["BTCUSDT"].open_time):
        for symbol in SYMBOLS:
            o, h, low, c, v = (float(x) for x in series[symbol].ohlcv[i])
            kline = Kline(symbol=symbol, interval="5m", open_time=int(open_time),
                          close_time=int(open_time) + 299_999, open=o, high=h, low=low,
                          close=c, volume=v, source="replay")
            out.append(new_envelope(kline, ts=kline.close_time, source="market-publisher",
                                    key=f"{symbol}:{open_time}"))
    return out


def published(r: redis.Redis) -> list[MetaRegime]:
    return [decode(fields, EVENT_TYPES).payload for _, fields in r.xrange(META_REGIME.key)]


def test_the_crash_is_published_scored_restored_and_shown(
        r: redis.Redis, redis_url: str, on_bus: Callable[..., Any], sample_dir: Path) -> None:
    publish(r, [(MARKET_KLINES, e) for e in bars(sample_dir, "2025-10-06T00:00:00",
                                                 "2025-10-10T21:30:00")])
    r.xadd(MARKET_KLINES.key, {"type": "market.kline", "version": "1", "id": "bad",
                               "ts": "1", "source": "test", "trace_id": "bad",
                               "causation_id": "", "payload": b'{"symbol":"BTCUSDT"}'})
    first = on_bus("meta-regime", clock="event", block_ms=20)
    first.runner.run(max_idle_turns=2)

    ((_, dead),) = r.xrange(DLQ.key)
    assert dead[b"group"] == b"meta-regime" and b"interval" in dead[b"reason"]
    events = published(r)
    market = [e for e in events if e.scope == "MARKET"]
    assert market and market[-1].trend == "trend_down" and market[-1].volatility == "high_vol"
    # The market turned with the first leg down that afternoon (15:25 UTC) and is still
    # called a high-volatility down trend through the cascade at 21:00-21:30.
    assert ms("2025-10-10T15:00:00") <= market[-1].bar_time < ms("2025-10-10T21:30:00")
    assert market[-1].members == 3
    for event in events:  # only changes go out
        assert (event.trend, event.volatility) != (event.previous_trend,
                                                   event.previous_volatility)

    document = orjson.loads(r.get(META_REGIME_KEY) or b"{}")
    assert document["bar_time"] == ms("2025-10-10T21:25:00") + 299_999
    assert (document["market"]["trend"], document["market"]["volatility"]) == (
        "trend_down", "high_vol")
    for symbol in SYMBOLS:
        regime = document["symbols"][symbol]
        assert (regime["trend"], regime["volatility"]) == ("trend_down", "high_vol")
    scores = document["scores"]
    # 1410 bars: the first call on the 289th (288 returns), every call scored 48 bars later.
    assert scores["BTCUSDT"]["scored"] == 1410 - 288 - 48
    assert scores["MARKET"]["scored"] == scores["BTCUSDT"]["scored"]  # every bar complete

    second = on_bus("meta-regime", clock="event", block_ms=20)  # a restart
    restored = second.service.document()["symbols"]
    for symbol, regime in document["symbols"].items():  # the same calls (running sums
        again = restored[symbol]                        # rebuilt: equal up to rounding)
        assert (again["trend"], again["volatility"]) == (regime["trend"], regime["volatility"])
        assert again["trend_score"] == pytest.approx(regime["trend_score"], rel=1e-9)
        assert again["vol_ratio"] == pytest.approx(regime["vol_ratio"], rel=1e-9)
    assert second.service.document()["scores"] == scores  # restored, not re-scored
    publish(r, [(MARKET_KLINES, e) for e in bars(sample_dir, "2025-10-10T21:30:00",
                                                 "2025-10-10T21:40:00")])
    second.runner.run(max_idle_turns=2)
    after = orjson.loads(r.get(META_REGIME_KEY) or b"{}")
    assert after["scores"]["BTCUSDT"]["scored"] == scores["BTCUSDT"]["scored"] + 2

    shown = CliRunner().invoke(app, ["regime", "--redis-url", redis_url])
    assert shown.exit_code == 0, shown.output
    assert "MARKET" in shown.output and "trend_down" in shown.output
    assert "high_vol" in shown.output and "hit rate" in shown.output
    as_json = CliRunner().invoke(app, ["regime", "--json", "--redis-url", redis_url])
    assert orjson.loads(as_json.output)["symbols"]["BTCUSDT"]["trend"] == "trend_down"
