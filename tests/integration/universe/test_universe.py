"""The universe service on real data, against the Binance stand-in, through quantumctl.

Real bars from ``data/sample`` and ``/work/shared/data/futures``; a real Redis (the session's
private server); python-binance against the local REST stand-in. Nothing is mocked.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from typer.testing import CliRunner

from quantum import localredis
from quantum.bus.runner import Outbox
from quantum.bus.streams import DLQ
from quantum.contracts.streams import MARKET_KLINES, UNIVERSE_UPDATED
from quantum.ctl.main import app
from quantum.engine.engine import Engine
from quantum.engine.memory import MemoryBus
from quantum.market.replay import ReplaySource
from quantum.registry.fleet import POLICY_KEY, UNIVERSE_KEY, UNIVERSE_RANKING_KEY, service
from quantum.replay import report as reporting
from quantum.replay.data import load_symbol
from quantum.risk import policy
from quantum.risk.policy import Policy, UniversePolicy
from quantum.standin.binance_rest import FuturesVenue
from quantum.universe.bars import BarBook
from quantum.universe.ranking import from_bars, rank
from services.universe.config import Settings
from services.universe.service import build

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "data" / "sample"
FUTURES = Path("/work/shared/data/futures")
SAMPLE_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")
DAY_MS = 86_400_000
BAR_MS = 300_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def measured(data_dir: Path, symbols: tuple[str, ...], start: str, end: str) -> BarBook:
    book = BarBook(BAR_MS)
    for symbol in symbols:
        data = load_symbol(data_dir, symbol, start_ms=ms(start), end_ms=ms(end))
        for open_time, (_, high, low, close, volume) in zip(
                data.open_time.tolist(), data.ohlcv.tolist(), strict=True):
            book.observe(symbol, open_time, high, low, close, volume)
    return book


def test_ranking_and_filters_on_the_sample_data() -> None:
    book = measured(SAMPLE, SAMPLE_SYMBOLS, "2025-10-20", "2025-10-25")
    candidates = from_bars(book.measures(), {}, ms("2025-10-25"))
    everything = rank(candidates, UniversePolicy())
    assert set(everything.symbols) == set(SAMPLE_SYMBOLS)
    assert all(m.reasons[0].startswith("selected: rank") for m in everything.members)
    by = {m.symbol: m for m in everything.members}
    # the figures are the data's: BTC trades more than BNB; spreads are a few bps
    assert by["BTCUSDT"].quote_volume_24h > by["BNBUSDT"].quote_volume_24h > 1e8
    assert all(0 <= (m.spread_bps or 0) < 50 for m in everything.members)
    assert all(m.completeness == 1.0 and m.history_bars >= 288 for m in everything.members)

    volumes = sorted(m.quote_volume_24h for m in everything.members)
    threshold = (volumes[-2] + volumes[-3]) / 2  # between the second and third largest
    strict = rank(candidates, UniversePolicy(min_quote_volume_24h=threshold,
                                             blacklist=("ETHUSDT",), size=1))
    kept = [m for m in strict.members if m.quote_volume_24h >= threshold]
    assert len(kept) == 2 and len(strict.symbols) == 1
    for m in strict.members:
        if m.symbol == "ETHUSDT":
            assert "blacklisted" in m.reasons
        elif m.quote_volume_24h < threshold:
            assert any(r.startswith("quote_volume_24h_below_min") for r in m.reasons)
    ranks = [m.rank for m in strict.members]
    assert ranks == sorted(ranks) == list(range(1, len(SAMPLE_SYMBOLS) + 1))


def test_profile_size_and_history_on_the_futures_data() -> None:
    symbols = tuple(sorted(p.name.split("-")[0] for p in FUTURES.glob("*-5m.csv.gz")))
    assert len(symbols) >= 9
    week = measured(FUTURES, symbols, "2025-10-01", "2025-10-08")
    top = rank(from_bars(week.measures(), {}, ms("2025-10-08")), UniversePolicy(size=5))
    assert len(top.symbols) == 5
    outside = [m for m in top.members if not m.selected]
    assert len(outside) == len(symbols) - 5
    assert all(m.reasons[0].startswith("outside_profile_size") for m in outside)
    assert min(m.score for m in top.members if m.selected) >= max(m.score for m in outside)
    young = measured(FUTURES, symbols, "2025-10-01", "2025-10-01T12:00")  # 144 bars
    none = rank(from_bars(young.measures(), {}, ms("2025-10-01T12:00")), UniversePolicy())
    assert none.symbols == ()
    assert all("insufficient_history: 144 < 288 bars" in m.reasons for m in none.members)


def test_realised_results_filter_and_score() -> None:
    book = measured(SAMPLE, SAMPLE_SYMBOLS, "2025-10-20", "2025-10-25")
    results = {"SOLUSDT": (-250.0, 12), "BTCUSDT": (80.0, 12)}
    policy_ = UniversePolicy(min_realised_pnl_usd=-100.0, results_min_trades=10)
    ranked = rank(from_bars(book.measures(), results, ms("2025-10-25")), policy_)
    by = {m.symbol: m for m in ranked.members}
    assert "SOLUSDT" not in ranked.symbols
    assert by["SOLUSDT"].reasons == ("realised_pnl_below_min: -250.00 < -100 over 12 trades",)
    assert by["BTCUSDT"].trades == 12 and by["BTCUSDT"].realised_pnl == 80.0


def _late_listing(tmp_path: Path, symbol: str, listed: str) -> None:
    """The real file of ``symbol`` as if the exchange had listed it at ``listed``."""
    cut = ms(listed)
    with gzip.open(FUTURES / f"{symbol}-5m.csv.gz", "rt") as src, \
            gzip.open(tmp_path / f"{symbol}-5m.csv.gz", "wt") as dst:
        header = src.readline()
        dst.write(header)
        for line in src:
            if int(line.split(",", 1)[0]) >= cut:
                dst.write(line)


def run_universe(data_dir: Path, symbols: tuple[str, ...], start: str, end: str,
                 universe: UniversePolicy) -> tuple[list[dict[str, Any]], float]:
    """The universe service alone on the in-process engine over real bars, as a replay
    hosts it; its ``universe.updated`` payloads and the seconds it took."""
    bus = MemoryBus()
    bus.record(UNIVERSE_UPDATED)
    bus.set(POLICY_KEY, Policy(version=1, universe=universe).model_dump_json().encode())
    engine = Engine(bus)
    settings = Settings(source="replay", clock="event")
    engine.add(service("universe"), lambda ports: build(settings, ports))
    source = ReplaySource(data_dir, list(symbols), start_ms=ms(start), end_ms=ms(end))
    started = time.perf_counter()
    for open_time in source.times.tolist():
        engine.publish(source.step(open_time).klines)
        engine.drain()
    seconds = time.perf_counter() - started
    return [e.payload.model_dump(mode="json") for e in bus.recorded[UNIVERSE_UPDATED.key]], \
        seconds


def test_replay_universe_changes_over_time_without_survivorship(tmp_path: Path) -> None:
    symbols = ("ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ZECUSDT", "BTCUSDT")
    for symbol in symbols[:-1]:
        (tmp_path / f"{symbol}-5m.csv.gz").symlink_to(FUTURES / f"{symbol}-5m.csv.gz")
    listed = "2025-09-20"  # BTC, the most traded, as if listed ten days into the replay
    _late_listing(tmp_path, "BTCUSDT", listed)
    updates, seconds = run_universe(tmp_path, symbols, "2025-09-10", "2025-10-20",
                                    UniversePolicy(size=3))
    changes = reporting.universe_changes(updates)
    # the first ranking has no symbol with a day of history; a day later they enter
    assert updates[0]["symbols"] == []
    assert all("insufficient_history" in m["reasons"][0] for m in updates[0]["members"])
    first = changes[0]
    assert first["ts"] >= ms("2025-09-11") - 1 and len(first["entered"]) == 3
    # no survivorship: BTC is not even a candidate before its first bar, and cannot enter
    # before it has a day of bars; then it does
    earliest = ms(listed) + DAY_MS - 1
    for update in updates:
        names = {m["symbol"] for m in update["members"]}
        if update["ts"] < ms(listed):
            assert "BTCUSDT" not in names
        if update["ts"] < earliest:
            assert "BTCUSDT" not in update["symbols"]
    # the universe moves with the data: symbols enter and leave over the month
    assert len(changes) >= 3
    assert any(c["left"] for c in changes)
    assert all(c["left_because"][s] for c in changes for s in c["left"])
    btc = next(c for c in changes if "BTCUSDT" in c["entered"])
    assert btc["ts"] >= earliest
    judged = next(u for u in updates if u["ts"] >= earliest + 3_600_000)
    (member,) = [m for m in judged["members"] if m["symbol"] == "BTCUSDT"]
    assert member["history_bars"] >= 288 and member["listing_age_days"] >= 1.0
    bars = len(symbols) * 40 * 288
    assert bars / seconds > 5_000, f"{bars / seconds:.0f} bars/s"


def test_backtest_report_lists_what_entered_and_left(tmp_path: Path) -> None:
    from quantum.engine.backtest import BacktestRequest, run_backtest

    request = BacktestRequest(
        data_dir=SAMPLE, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"),
        start=datetime(2025, 10, 20, tzinfo=UTC), end=datetime(2025, 10, 25, tzinfo=UTC),
        report_path=tmp_path / "report.json",
        policy=(("universe.size", 2), ("universe.rank_interval_minutes", 30)),
    )
    report = run_backtest(request, processes=1)
    changes = report["universe_changes"]
    assert changes, "the report lists the universe's changes"
    assert len(changes[0]["entered"]) == 2 and changes[0]["ts"] >= ms("2025-10-21") - 1
    assert report["events"]["universe.updated"] >= len(changes)
    written = orjson.loads((tmp_path / "report.json").read_bytes())
    assert written["universe_changes"] == changes


def _market(venue: FuturesVenue, now_ms: int) -> None:
    venue.set_market("BTCUSDT", quote_volume=9e9, high=61_000, low=59_000, bid=60_000.0,
                     ask=60_000.1, onboard_ms=now_ms - 900 * DAY_MS)
    venue.set_market("ETHUSDT", quote_volume=5e9, high=3_100, low=2_950, bid=3_000.0,
                     ask=3_000.01, onboard_ms=now_ms - 900 * DAY_MS)
    venue.set_market("SOLUSDT", quote_volume=2e9, high=160, low=140, bid=150.0, ask=150.2,
                     onboard_ms=now_ms - 700 * DAY_MS)  # 13 bps wide
    venue.set_market("NEWUSDT", quote_volume=3e9, high=1.2, low=0.9, bid=1.0, ask=1.0001,
                     onboard_ms=now_ms - 2 * DAY_MS)  # listed two days ago
    venue.set_market("THINUSDT", quote_volume=2e5, high=1.1, low=1.0, bid=1.0, ask=1.0001,
                     onboard_ms=now_ms - 300 * DAY_MS)
    venue.set_market("HALTUSDT", quote_volume=8e9, high=1.1, low=1.0, bid=1.0, ask=1.0001,
                     onboard_ms=now_ms - 300 * DAY_MS, status="SETTLING")


def test_python_binance_path_against_the_standin(r: redis.Redis,
                                                 on_bus: Callable[..., Any]) -> None:
    policy.write(r, {"universe.max_spread_bps": 10.0, "universe.min_listing_age_days": 7.0,
                     "universe.blacklist": ["XRPUSDT"]}, by="op", reason="test filters")
    now = time.time()
    with FuturesVenue() as venue:
        _market(venue, int(now * 1000))
        bus = on_bus("universe", source="binance", binance_rest_url=venue.rest_url)
        out = Outbox(bus.runner.sub.produces)
        bus.service.on_idle(out, now)
        bus.commit(out)
    selection = orjson.loads(r.get(UNIVERSE_KEY))
    assert selection["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert selection["source"] == "binance"
    ranking = orjson.loads(r.get(UNIVERSE_RANKING_KEY))
    why = {m["symbol"]: m["reasons"] for m in ranking["members"]}
    assert "HALTUSDT" not in why  # not trading: not a candidate
    assert why["SOLUSDT"][0].startswith("spread_above_max: 13.")
    assert why["NEWUSDT"][0].startswith("listed_too_recently: 2.0 < 7 days")
    assert why["THINUSDT"][0].startswith("quote_volume_24h_below_min")
    assert why["XRPUSDT"][0] == "blacklisted"  # listed by the stand-in, no ticker set
    (_, fields), = r.xrange(UNIVERSE_UPDATED.key)
    event = orjson.loads(fields[b"payload"])
    assert event["entered"] == ["BTCUSDT", "ETHUSDT"] and event["left"] == []
    assert {m["spread_source"] for m in event["members"] if m["symbol"] == "BTCUSDT"} == \
        {"book"}


def test_no_route_to_the_exchange_retries_and_keeps_running(
        r: redis.Redis, on_bus: Callable[..., Any]) -> None:
    port = localredis.free_port()  # nothing listens there
    bus = on_bus("universe", source="binance", binance_rest_url=f"http://127.0.0.1:{port}",
                 binance_timeout_s=1.0, block_ms=50)
    now = time.time()
    out = Outbox(bus.runner.sub.produces)
    bus.service.on_idle(out, now)  # refused: logged, not raised
    assert out.empty and bus.service.next_attempt == pytest.approx(now + 5.0)
    bus.service.on_idle(out, now + 1)  # not yet due: nothing asked
    bus.service.on_idle(out, now + 6)
    assert bus.service.next_attempt == pytest.approx(now + 6 + 10.0)  # the wait doubled
    bus.runner.run(max_idle_turns=3)  # the loop turns, heartbeats, and ends when told
    assert not r.exists(UNIVERSE_KEY)


def _ranked(r: redis.Redis, on_bus: Callable[..., Any]) -> None:
    now = time.time()
    with FuturesVenue() as venue:
        _market(venue, int(now * 1000))
        bus = on_bus("universe", source="binance", binance_rest_url=venue.rest_url)
        out = Outbox(bus.runner.sub.produces)
        bus.service.on_idle(out, now)
        bus.commit(out)


def test_cli_show_diff_apply(r: redis.Redis, redis_url: str,
                             on_bus: Callable[..., Any]) -> None:
    _ranked(r, on_bus)
    cli = CliRunner()
    url = ["--redis-url", redis_url]
    shown = cli.invoke(app, ["universe", "show", *url])
    assert shown.exit_code == 0, shown.output
    assert "symbols in force" in shown.output and "SOLUSDT" in shown.output
    before = orjson.loads(r.get(UNIVERSE_KEY))["symbols"]
    assert before == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "NEWUSDT"] or len(before) >= 3

    diff = cli.invoke(app, ["universe", "diff", "size=1", "blacklist=[\"BTCUSDT\"]", *url])
    assert diff.exit_code == 0, diff.output
    assert "- BTCUSDT: blacklisted" in diff.output
    assert policy.load(r).version == 0  # diff writes nothing

    as_json = cli.invoke(app, ["universe", "diff", "size=1", "--json", *url])
    found = orjson.loads(as_json.output)
    assert len(found["after"]) == 1 and set(found["left"]) == set(before) - set(found["after"])

    applied = cli.invoke(app, ["universe", "apply", "universe.size=2", "--reason",
                               "two symbols while testing", *url])
    assert applied.exit_code == 0, applied.output
    assert "policy version 1 in force" in applied.output
    assert policy.load(r).universe.size == 2
    (entry,) = policy.history(r, 5)
    assert entry["changes"] == {"universe.size": 2}
    assert entry["reason"] == "two symbols while testing"

    for args, expected in (
        (["universe", "apply", "size=2", "--reason", " ", *url], "--reason must not be empty"),
        (["universe", "diff", "risk.max_leverage=3", *url], "unknown universe policy key"),
        (["universe", "diff", "size=0", *url], "policy refused: universe.size"),
        (["universe", "diff", "size", *url], "expected KEY=VALUE"),
        (["universe", "apply", "size=3", *url], "Missing option '--reason'"),
    ):
        bad = cli.invoke(app, args)
        assert bad.exit_code == 2, (args, bad.output)
        lines = bad.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("quantumctl: error:"), bad.output
        assert expected in lines[0], (args, lines)
    assert policy.load(r).version == 1


def test_malformed_klines_go_to_the_dlq_and_the_service_carries_on(
        r: redis.Redis, on_bus: Callable[..., Any]) -> None:
    source = ReplaySource(SAMPLE, ["BTCUSDT"], start_ms=ms("2025-10-20"),
                          end_ms=ms("2025-10-20T01:00"))
    good = [e for t in source.times.tolist() for _, e in source.step(t).klines]
    from quantum.bus.runner import publish

    publish(r, [(MARKET_KLINES, good[0])])
    r.xadd(MARKET_KLINES.key, {"garbage": "yes"})
    bad = {k: v for k, v in r.xrange(MARKET_KLINES.key)[0][1].items()}
    bad[b"payload"] = bad[b"payload"].replace(b'"BTCUSDT"', b'"btc usdt"')
    r.xadd(MARKET_KLINES.key, bad)
    publish(r, [(MARKET_KLINES, e) for e in good[1:]])
    bus = on_bus("universe", source="replay", clock="event", block_ms=50)
    bus.runner.run(max_idle_turns=2)
    dead = [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(DLQ.key)]
    assert len(dead) == 2 and all(d["group"] == "universe" for d in dead)
    assert "missing envelope fields" in dead[0]["reason"]
    assert "symbol" in dead[1]["reason"]
    assert r.xpending(MARKET_KLINES.key, "universe")["pending"] == 0
    assert bus.service.book.symbols["BTCUSDT"].history_bars == len(good)


def test_a_restart_keeps_the_history_counters(r: redis.Redis,
                                              on_bus: Callable[..., Any]) -> None:
    """Counters survive in the ranking key; the day of bars is read back from the handled
    klines, so a restarted service ranks as the one before it would have."""
    from quantum.bus.runner import publish

    source = ReplaySource(SAMPLE, ["BTCUSDT", "ETHUSDT"], start_ms=ms("2025-10-20"),
                          end_ms=ms("2025-10-21T06:00"))
    for open_time in source.times.tolist():
        publish(r, source.step(open_time).klines)
    first = on_bus("universe", source="replay", clock="event", block_ms=50)
    first.runner.run(max_idle_turns=2)
    counted = {s: b.history_bars for s, b in first.service.book.symbols.items()}
    assert counted == {"BTCUSDT": 360, "ETHUSDT": 360}
    selection = orjson.loads(r.get(UNIVERSE_KEY))
    assert set(selection["symbols"]) == {"BTCUSDT", "ETHUSDT"}
    again = on_bus("universe", source="replay", clock="event", block_ms=50)
    restored = again.service
    assert {s: b.history_bars for s, b in restored.book.symbols.items()} == counted
    assert restored.selected == tuple(selection["symbols"])
    assert restored.book.measures()["BTCUSDT"].quote_volume_24h == pytest.approx(
        first.service.book.measures()["BTCUSDT"].quote_volume_24h)


def test_the_live_market_publisher_follows_the_universe_without_a_restart(
        r: redis.Redis) -> None:
    """Streams added and dropped on one running source as the universe key changes."""
    import structlog

    from quantum.bus.runner import publish
    from quantum.exchange.venues.binance.market import LiveSource
    from quantum.standin.binance_ws import BinanceStandIn
    from services.market_publisher.__main__ import UniverseFollower

    two_am = 1_756_684_800_000 + 2 * 3_600_000
    with BinanceStandIn(SAMPLE, ("BTCUSDT", "ETHUSDT", "SOLUSDT"), "5m",
                        start_ms=two_am) as standin:
        source = LiveSource(["BTCUSDT"], "5m", ws_url=standin.ws_url,
                            rest_url=standin.rest_url)
        follower = UniverseFollower(r, source, structlog.get_logger(), period_s=0.1)
        stop = threading.Event()
        thread = threading.Thread(target=source.run, daemon=True,
                                  args=(lambda items: publish(r, items), stop, follower.poll))
        thread.start()

        def published() -> dict[str, set[int]]:
            out: dict[str, set[int]] = {}
            for _, fields in r.xrange(MARKET_KLINES.key):
                kline = orjson.loads(fields[b"payload"])
                out.setdefault(kline["symbol"], set()).add(kline["open_time"])
            return out

        def wait(condition: Callable[[], bool], what: str) -> None:
            deadline = time.monotonic() + 30
            while not condition():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                time.sleep(0.05)

        try:
            standin.wait_for_connections(1)
            standin.advance(1)
            wait(lambda: "BTCUSDT" in published(), "BTC's first candle")
            r.set(UNIVERSE_KEY, orjson.dumps({"ts": 1, "symbols": ["BTCUSDT", "ETHUSDT"],
                                              "policy_version": 1, "source": "bars"}))
            standin.wait_for_connections(2)
            standin.advance(2)
            wait(lambda: len(published().get("ETHUSDT", ())) >= 1
                 and len(published()["BTCUSDT"]) >= 3, "ETH added, BTC continued")
            r.set(UNIVERSE_KEY, orjson.dumps({"ts": 2, "symbols": ["ETHUSDT"],
                                              "policy_version": 1, "source": "bars"}))
            standin.wait_for_connections(3)
            btc_before = set(published()["BTCUSDT"])
            standin.advance(2)
            wait(lambda: len(published()["ETHUSDT"]) >= 3, "ETH streamed alone")
            assert published()["BTCUSDT"] == btc_before  # dropped: nothing more of it
            assert "SOLUSDT" not in published()
            assert source.symbols == ("ETHUSDT",) and thread.is_alive()
        finally:
            stop.set()
            thread.join(30)
        assert not thread.is_alive()


def test_malformed_exchange_rows_are_skipped_and_counted() -> None:
    from quantum.universe import exchange

    listing = [{"symbol": "BTCUSDT", "status": "TRADING", "contractType": "PERPETUAL",
                "onboardDate": 1}, {"symbol": 5}, "junk",
               {"symbol": "BTCUSDT_251226", "status": "TRADING", "contractType": "CURRENT_QUARTER"},
               {"symbol": "ETHUSDT", "status": "TRADING", "contractType": "PERPETUAL"}]
    tickers = [{"symbol": "BTCUSDT", "quoteVolume": "1e9", "highPrice": "2", "lowPrice": "1"},
               {"symbol": "ETHUSDT", "quoteVolume": "not a number"}, None]
    books = [{"symbol": "BTCUSDT", "bidPrice": "10", "askPrice": "9"},  # crossed
             {"symbol": "ETHUSDT", "bidPrice": "100", "askPrice": "100.1"}]
    snapshot = exchange.parse(listing, tickers, books, 2 * DAY_MS)
    assert set(snapshot.listed) == {"BTCUSDT", "ETHUSDT"}
    assert snapshot.quote_volume == {"BTCUSDT": 1e9}
    assert set(snapshot.spread_bps) == {"ETHUSDT"}
    assert snapshot.skipped == 5  # two listing rows, two tickers, one book
