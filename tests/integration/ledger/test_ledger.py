"""The ledger against real venues: the Binance stand-in through python-binance's
``futures_income_history`` (the venue code path), and the paper venue inside the real
execution service, each compared with a real SQLite journal on the test's real Redis.

Nothing differs: no event, the gauge at 0. An injected fee difference, a missing funding
fee and a PnL difference are each caught — one event per trade and per day, the gauge and
the counter — reported once, and resolved when the venue and journal agree again.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from prometheus_client import REGISTRY

from quantum.bus.envelope import Envelope, new_envelope
from quantum.bus.redisports import redis_ports
from quantum.bus.runner import Outbox
from quantum.contracts.events import (
    EVENT_TYPES,
    ExitPlan,
    HarvestIntent,
    LedgerDifference,
    OrderRequest,
    TakeProfit,
    Tick,
    TradeClosed,
)
from quantum.contracts.streams import LEDGER_EVENTS
from quantum.exchange.venues.binance.http import BinanceFutures
from quantum.journal.database import make_engine, upgrade
from quantum.journal.writer import Journal
from quantum.ledger.config import Settings
from quantum.registry.fleet import EXECUTION_INCOME_KEY, LEDGER_KEY, service
from quantum.standin.binance_rest import TAKER_FEE, FuturesVenue
from services.ledger.service import Ledger

BTC = "BTCUSDT"


def now_ms() -> int:
    return int(time.time() * 1000)


def journal_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def write_journal(url: str, *trades: TradeClosed) -> None:
    engine = make_engine(url)
    Journal(engine).write([new_envelope(t, ts=t.exit_ts, source="execution", key=t.trade_id)
                           for t in trades])
    engine.dispose()


def outbox() -> Outbox:
    return Outbox(frozenset(s.name for s in service("ledger").produces))


def published(out: Outbox) -> list[LedgerDifference]:
    assert all(stream == LEDGER_EVENTS for stream, _ in out.events)
    return [envelope.payload for _, envelope in out.events]


def kinds(events: list[LedgerDifference]) -> list[tuple[str, str]]:
    return sorted((e.kind, e.component) for e in events)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- Binance: the stand-in's income history through python-binance -------------------------


def binance_trade(venue: FuturesVenue) -> TradeClosed:
    """Open 0.01 BTC at 60,000, settle one funding, close at 61,000 — on the stand-in, through
    the adapter; returns the trade as the fleet's journal books it."""
    adapter = BinanceFutures(api_key=venue.account.api_key,
                             api_secret=venue.account.api_secret, rest_url=venue.rest_url)
    quantity = Decimal("0.010")
    entry_ts = now_ms()
    adapter.place_market(symbol=BTC, side="BUY", quantity=quantity, client_order_id="qp-e1",
                         reduce_only=False)
    funding = -venue.settle_funding(BTC, 0.0001)  # paid by the long
    venue.set_price(BTC, 61_000.0)
    adapter.place_market(symbol=BTC, side="SELL", quantity=quantity, client_order_id="qx-x1",
                         reduce_only=True)
    exit_ts = now_ms()
    fees = float(quantity * Decimal(60_000) * TAKER_FEE + quantity * Decimal(61_000) * TAKER_FEE)
    return TradeClosed(trade_id="plan-btc-1", symbol=BTC, side="LONG", quantity=0.01,
                       entry_price=60_000.0, exit_price=61_000.0, entry_ts=entry_ts,
                       exit_ts=exit_ts, gross_pnl=10.0, fees=fees, funding=funding,
                       net_pnl=10.0 - fees - funding, r_multiple=None, exit_reason="take_profit",
                       holding_seconds=(exit_ts - entry_ts) / 1000, leverage=5)


def binance_ledger(r: redis.Redis, venue: FuturesVenue, url: str) -> Ledger:
    settings = Settings(exchange="binance", binance_api_key=venue.account.api_key,
                        binance_api_secret=venue.account.api_secret,
                        binance_rest_url=venue.rest_url, database_url=url, ledger_settle_s=0)
    return Ledger(settings, redis_ports(r, EVENT_TYPES, event_clock=False))


INJECTIONS = {
    "fee": (lambda v: v.shift_income("COMMISSION", -0.5, symbol=BTC), "fees", 0.5),
    "missing funding": (lambda v: v.drop_income("FUNDING_FEE", symbol=BTC), "funding", -0.06),
    "pnl": (lambda v: v.shift_income("REALIZED_PNL", 1.5, symbol=BTC), "realised_pnl", 1.5),
}


@pytest.mark.parametrize("injection", list(INJECTIONS))
def test_binance_income_matches_then_an_injected_difference_is_caught(
        r: redis.Redis, tmp_path: Path, injection: str) -> None:
    inject, component, expected = INJECTIONS[injection]
    url = journal_url(tmp_path)
    with FuturesVenue(prices={BTC: 60_000.0}) as venue:
        trade = binance_trade(venue)
        write_journal(url, trade)
        assert sorted(row["incomeType"] for row in venue.income()) == [
            "COMMISSION", "COMMISSION", "FUNDING_FEE", "REALIZED_PNL"]
        ledger = binance_ledger(r, venue, url)

        first = outbox()
        assert ledger.run_pass(first, now_ms()) == [] and first.events == []
        summary = orjson.loads(first.state[LEDGER_KEY])["summary"]
        assert summary["trades"] == 1 and summary["differences"] == 0
        assert ledger.last is not None and ledger.last.trades[0]["income_records"] == 4
        assert sample("quantum_ledger_open_differences") == 0
        assert ("GET", "/fapi/v1/income") in venue.snapshot()["requests"]

        before = sample("quantum_ledger_differences_total", kind="trade", component=component)
        inject(venue)
        second = outbox()
        events = ledger.run_pass(second, now_ms())
        assert kinds(events) == [("day", component), ("trade", component)]
        assert published(second) == events
        by_trade = next(e for e in events if e.kind == "trade")
        assert by_trade.scope == trade.trade_id and by_trade.symbol == BTC
        assert by_trade.difference == pytest.approx(expected, abs=1e-6)
        assert sample("quantum_ledger_open_differences") == 2
        assert sample("quantum_ledger_largest_difference_usdt") == pytest.approx(
            abs(expected), abs=1e-6)
        assert sample("quantum_ledger_differences_total", kind="trade",
                      component=component) == before + 1
        by_day = next(e for e in events if e.kind == "day")
        assert orjson.loads(second.state[LEDGER_KEY])["open"].keys() == {
            f"trade:{trade.trade_id}:{component}", f"day:{by_day.scope}:{component}"}
        assert ledger.run_pass(outbox(), now_ms()) == []  # reported once


def test_an_unreachable_venue_is_a_difference_until_it_answers(
        r: redis.Redis, tmp_path: Path) -> None:
    url = journal_url(tmp_path)
    with FuturesVenue(prices={BTC: 60_000.0}) as venue:
        write_journal(url, binance_trade(venue))
        ledger = binance_ledger(r, venue, url)
        venue.fail_next(503, -1001, "Internal error; unable to process your request.")
        events = ledger.run_pass(outbox(), now_ms())
        assert kinds(events) == [("unavailable", "")] and events[0].scope == "binance"
        assert sample("quantum_ledger_open_differences") == 1
        assert kinds(ledger.run_pass(outbox(), now_ms())) == [("resolved", "")]
        assert sample("quantum_ledger_open_differences") == 0


# --- paper: the income trail execution writes with its book ---------------------------------


PRICE = 60_000.0


def _envelope(payload: Any, ts: int, key: object) -> Envelope[Any]:
    return new_envelope(payload, ts=ts, source="test", key=key)


def paper_trade(execution: Any, plan_id: str, start: int) -> list[TradeClosed]:
    """An entry, a funding tick and an exit through the real execution service (committed
    through its runner); returns the trades it closed."""
    plan = ExitPlan(profile="DEFAULT", stop_loss=PRICE * 0.98,
                    take_profits=(TakeProfit(price=PRICE * 1.02, fraction=1.0),), atr=300.0)
    order = OrderRequest(client_order_id="qt-" + plan_id.replace("-", ""), plan_id=plan_id,
                         symbol=BTC, side="BUY", position_side="LONG", quantity=0.02,
                         reference_price=PRICE, leverage=5, reduce_only=False, reason="entry",
                         bar_time=start, exit_plan=plan)

    def bar(ts: int, close: float, funding: float | None = None) -> Tick:
        return Tick(symbol=BTC, ts=ts, open=close, high=close * 1.001, low=close * 0.999,
                    close=close, mark_price=close, funding_rate=funding, source="binance")

    trades: list[TradeClosed] = []
    harvest = HarvestIntent(harvest_id=f"h-{plan_id}", position_id=plan_id, symbol=BTC,
                            side="LONG", fraction=1.0, price=PRICE * 1.01, reason="manual",
                            ts=start + 3_000)
    steps = [_envelope(order, start, f"{plan_id}-o"),
             _envelope(bar(start + 1_000, PRICE), start + 1_000, f"{plan_id}-t1"),
             _envelope(bar(start + 2_000, PRICE * 1.005, 0.0001), start + 2_000, f"{plan_id}-t2"),
             _envelope(harvest, start + 3_000, f"{plan_id}-h")]
    for step in steps:
        out = execution.deliver(step)
        trades += [e.payload for _, e in out.events if isinstance(e.payload, TradeClosed)]
        execution.commit(out)
    return trades


def test_the_paper_fleet_checks_its_journal_against_the_paper_venue(
        r: redis.Redis, on_bus: Any, redis_url: str, tmp_path: Path) -> None:
    url = journal_url(tmp_path)
    execution = on_bus("execution", redis_url=redis_url, book_record_dir=str(tmp_path),
                       metrics_port=0)
    start = now_ms() - 120_000
    first = paper_trade(execution, "plan-paper-1", start)
    assert len(first) == 1
    trail = [orjson.loads(raw) for raw in r.lrange(EXECUTION_INCOME_KEY, 0, -1)]
    assert sorted(t["income_type"] for t in trail) == [
        "COMMISSION", "COMMISSION", "FUNDING_FEE", "REALIZED_PNL"]
    assert {t["trade_id"] for t in trail} == {"plan-paper-1"}
    write_journal(url, *first)

    ledger = Ledger(Settings(exchange="paper", database_url=url, ledger_settle_s=0),
                    redis_ports(r, EVENT_TYPES, event_clock=False))
    assert ledger.run_pass(outbox(), now_ms()) == []
    assert ledger.last is not None and ledger.last.trades[0]["status"] == "match"
    assert ledger.last.trades[0]["venue"]["funding"] == pytest.approx(first[0].funding)

    # a second trade the journal never wrote (its trade.closed lost): the venue's income
    # for it matches no journal trade and the day differs
    second = paper_trade(execution, "plan-paper-2", start + 10_000)
    assert len(second) == 1
    events = ledger.run_pass(outbox(), now_ms())
    assert {e.kind for e in events} == {"day"}
    assert {e.component for e in events} == {"realised_pnl", "fees", "funding"}
    assert ledger.last is not None and len(ledger.last.unattributed) == 4
    fees = next(e for e in events if e.component == "fees")
    assert fees.difference == pytest.approx(second[0].fees)
    # the journal catches up: resolved
    write_journal(url, *second)
    assert {e.kind for e in ledger.run_pass(outbox(), now_ms())} == {"resolved"}
    assert sample("quantum_ledger_open_differences") == 0


# --- quantumctl ledger ----------------------------------------------------------------------


def ledger_ctl(*args: str, env: dict[str, str] | None = None) -> Any:
    from typer.testing import CliRunner

    from quantum.ctl.main import app

    return CliRunner(env=env or {}).invoke(app, ["ledger", *args])


def test_quantumctl_ledger_shows_the_paper_comparison_per_day_and_trade(
        r: redis.Redis, on_bus: Any, redis_url: str, tmp_path: Path) -> None:
    url = journal_url(tmp_path)
    execution = on_bus("execution", redis_url=redis_url, book_record_dir=str(tmp_path),
                       metrics_port=0)
    trades = paper_trade(execution, "plan-ctl-1", now_ms() - 120_000)
    write_journal(url, *trades)
    common = ("--exchange", "paper", "--database-url", url, "--redis-url", redis_url)
    done = ledger_ctl(*common, "--json")
    assert done.exit_code == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["venue"] == "paper" and document["differences"] == []
    assert [t["trade_id"] for t in document["trades"]] == ["plan-ctl-1"]
    assert document["trades"][0]["status"] == "match"
    assert document["trades"][0]["venue"]["fees"] == pytest.approx(trades[0].fees)
    assert [d["status"] for d in document["days"]] == ["match"]
    assert document["summary"]["trades"] == 1 and document["summary"]["differences"] == 0

    table = ledger_ctl(*common)
    assert table.exit_code == 0 and "Ledger by day" in table.stdout
    assert "Ledger by trade (1)" in table.stdout and "plan-ctl-1" in table.stdout


def test_quantumctl_ledger_on_binance_reports_a_difference_with_exit_code_1(
        tmp_path: Path) -> None:
    url = journal_url(tmp_path)
    with FuturesVenue(prices={BTC: 60_000.0}) as venue:
        trade = binance_trade(venue)
        write_journal(url, trade)
        venue.shift_income("COMMISSION", -0.25, symbol=BTC)
        env = {"QT_BINANCE_API_KEY": venue.account.api_key,
               "QT_BINANCE_API_SECRET": venue.account.api_secret,
               "QT_BINANCE_REST_URL": venue.rest_url, "QT_LEDGER_SETTLE_S": "0"}
        done = ledger_ctl("--exchange", "binance", "--database-url", url, "--json",
                          "--differences", env=env)
    assert done.exit_code == 1, done.stderr
    document = json.loads(done.stdout)
    assert {(d["kind"], d["component"]) for d in document["differences"]} == {
        ("trade", "fees"), ("day", "fees")}
    assert [t["trade_id"] for t in document["trades"]] == [trade.trade_id]
    assert venue.account.api_secret not in done.stdout + done.stderr


@pytest.mark.parametrize("arguments, message", [
    (("--days", "0"), "--days"),
    (("--days", "x"), "--days"),
    (("--exchange", "kraken"), "choose one of paper, binance"),
    (("--symbol", "BT C"), "is not a symbol"),
    (("--database-url", "nonsense://"), "is not a database URL"),
    (("--exchange", "binance"), "needs QT_BINANCE_API_KEY"),
    (("--redis-url", "redis://127.0.0.1:9/0"), "cannot reach Redis"),
])
def test_bad_ledger_arguments_are_one_line(tmp_path: Path, arguments: tuple[str, ...],
                                           message: str) -> None:
    base = ("--database-url", journal_url(tmp_path))
    done = ledger_ctl(*base, *arguments)
    assert done.exit_code in (1, 2)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quantumctl: error:"), done.stderr
    assert message in lines[0]
    assert done.exit_code == (1 if message.startswith(("needs", "cannot")) else 2)


def test_the_ledger_on_the_bus_compares_after_a_closed_trade_and_commits_its_events(
        r: redis.Redis, on_bus: Any, redis_url: str, tmp_path: Path) -> None:
    from quantum.replay.report import payloads

    url = journal_url(tmp_path)
    exit_ts = now_ms() - 60_000
    lost = TradeClosed(trade_id="plan-bus-1", symbol=BTC, side="SHORT", quantity=0.01,
                       entry_price=60_000.0, exit_price=59_000.0, entry_ts=exit_ts - 60_000,
                       exit_ts=exit_ts, gross_pnl=10.0, fees=0.48, funding=0.0, net_pnl=9.52,
                       r_multiple=None, exit_reason="take_profit", holding_seconds=60.0,
                       leverage=5)
    write_journal(url, lost)  # the journal has it; the paper venue's trail has nothing
    ledger = on_bus("ledger", redis_url=redis_url, database_url=url, ledger_settle_s=0,
                    metrics_port=0)
    out = ledger.deliver(_envelope(lost, exit_ts, "closed"))
    assert ledger.service.next_pass <= time.time() + 1.0
    ledger.service.on_idle(out, time.time() + 1.0)
    ledger.commit(out)
    events = payloads(r, LEDGER_EVENTS.key)
    assert {(e["kind"], e["component"]) for e in events} == {
        ("trade", "realised_pnl"), ("trade", "fees"), ("day", "realised_pnl"), ("day", "fees")}
    from quantum.ledger.compare import day_of

    assert {e["scope"] for e in events if e["kind"] == "trade"} == {"plan-bus-1"}
    assert {e["scope"] for e in events if e["kind"] == "day"} == {day_of(exit_ts)}
    state = orjson.loads(r.get(LEDGER_KEY) or b"{}")
    assert state["venue"] == "paper" and len(state["open"]) == 4
    assert state["summary"]["trades_differing"] == 1
