"""The dashboard API over a real journal (SQLite) and a real Redis: reads, filters and
pagination, health, auth on control endpoints (401/403 without leaks), 422 naming the field,
the live WebSocket, /metrics, the OpenAPI contract (schemathesis) and the web page in
headless Chromium with a screenshot artifact."""

from __future__ import annotations

import base64
import contextlib
import math
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import schemathesis
import uvicorn
import websockets.sync.client
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from starlette.websockets import WebSocketDisconnect

from quantum.bus.envelope import new_envelope
from quantum.bus.runner import publish
from quantum.contracts.events import Kline, PortfolioState, SupervisorEvent, Tick, TradeClosed
from quantum.contracts.streams import AI_SUPERVISOR, MARKET_KLINES, MARKET_TICK
from quantum.ctl.main import app as quantumctl
from quantum.dashboard.app import create_app
from quantum.dashboard.backend import DashboardOptions
from quantum.exits import manual
from quantum.journal.database import make_engine, upgrade
from quantum.journal.synthetic import round_trips
from quantum.journal.writer import Journal
from quantum.localredis import free_port
from quantum.observability.heartbeat import heartbeat_key
from quantum.registry.fleet import (
    AI_ENGINE_KEY,
    EXIT_REQUESTS_KEY,
    JOURNAL_KEY,
    PORTFOLIO_KEY,
    RL_SIZING_KEY,
)
from quantum.replay.report import assemble
from quantum.risk import ess, fleetstate

ROOT = Path(__file__).resolve().parents[3]
BARS = 170
ARTIFACTS = ROOT / "var" / "artifacts"
CONTROL = "control-token-for-tests-0123456789"
READ = "read-token-for-tests-9876543210"


def seed(client: redis.Redis, database_url: str) -> None:
    """A journal of 40 trades (the last open), the live portfolio, prices, candles,
    heartbeats and the journal's health, as a running fleet would leave them."""
    client.flushdb()
    fleetstate.initialise(client, "pytest")
    engine = make_engine(database_url)
    upgrade(engine)
    events = list(round_trips(40, open_last=True))
    Journal(engine).write(events)
    engine.dispose()
    last_state = [e for e in events if isinstance(e.payload, PortfolioState)][-1]
    client.set(PORTFOLIO_KEY, orjson.dumps(last_state.payload.model_dump(mode="json")))
    client.set(JOURNAL_KEY, orjson.dumps({"healthy": True, "reason": None,
                                          "checked_at": time.time(), "backend": "sqlite"}))
    for name in ("execution", "journal", "ai-engine"):
        client.set(heartbeat_key(name), orjson.dumps({"service": name, "pid": os.getpid(),
                                                      "ts": time.time()}), ex=60)
    items = []
    for i in range(BARS):  # the synthetic trades' prices and times, so the chart shows them
        for symbol, base in (("BTCUSDT", 100.0), ("ETHUSDT", 200.0)):
            price = base * (1 + 0.02 * math.sin(i / 9))
            t = 1_756_684_800_000 + i * 300_000
            kline = Kline(symbol=symbol, interval="5m", open_time=t, close_time=t + 299_999,
                          open=price, high=price * 1.002, low=price * 0.998, close=price * 1.001,
                          volume=10.0, source="replay")
            tick = Tick(symbol=symbol, ts=t + 299_999, open=price, high=price * 1.002,
                        low=price * 0.998, close=price * 1.001, mark_price=price,
                        source="replay")
            items.append((MARKET_KLINES, new_envelope(kline, ts=t, source="market-publisher",
                                                      key=f"k{symbol}{i}")))
            items.append((MARKET_TICK, new_envelope(tick, ts=t, source="market-publisher",
                                                    key=f"t{symbol}{i}")))
    items.append((AI_SUPERVISOR, new_envelope(SupervisorEvent(
        kind="feature_drift", severity="warning", detail="PSI 0.31 on rsi_14 (bound 0.25)",
        model_version="v1"), ts=1_756_684_800_000, source="ai-engine", key="drift")))
    publish(client, items)
    client.set(AI_ENGINE_KEY, orjson.dumps({
        "recent_directions": [["BTCUSDT", 1, "LONG", 100.0, None],
                              ["ETHUSDT", 2, "SHORT", 200.0, None],
                              ["BTCUSDT", 3, "LONG", 101.0, None]],
        "health": {"model": "ensemble", "model_version": "ensemble@v1", "load_error": None,
                   "members_loaded": ["xgboost", "lightgbm", "nhits"],
                   "members_missing": {"patchtst": "file missing"}, "quorum": 3,
                   "quorate": True}}))
    client.set(RL_SIZING_KEY, orjson.dumps({
        "mode": "shadow", "policy_version": None, "policy_loaded": False,
        "reason": "no promoted sizing policy", "sizing_effect": "none: sizing at 1.0x",
        "peak_equity": 10_000.0, "suggestions": 0, "registry": "models/rl", "updated_ts": 1}))


def write_report(directory: Path) -> str:
    """A backtest report as ``quantumctl backtest`` writes it (the same assembly), of
    synthetic trades inside the sample data's range, so its candles are real bars."""
    events = list(round_trips(12))
    trades = [e.payload.model_dump(mode="json") for e in events
              if isinstance(e.payload, TradeClosed)]
    states = [{"ts": e.payload.ts, "equity": e.payload.equity} for e in events
              if isinstance(e.payload, PortfolioState)]
    report = assemble(trades=trades, states=states, final=None, events={}, latency=None,
                      initial_balance=10_000.0, klines=600, wall_seconds=1.0,
                      run={"engine": "in-process"})
    start = 1_756_684_800_000
    report.update(engine="backtest", symbols=["BTCUSDT", "ETHUSDT"],
                  data_dir=str(ROOT / "data" / "sample"), start_ms=start,
                  end_ms=start + 60 * 300_000)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "backtest.json").write_bytes(orjson.dumps(report))
    (directory / "broken.json").write_bytes(b"[1, 2]")
    return "backtest.json"


@pytest.fixture
def seeded(r: redis.Redis, redis_url: str, tmp_path: Path) -> tuple[str, str]:
    database_url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    seed(r, database_url)
    return redis_url, database_url


def make_client(seeded: tuple[str, str], **options: Any) -> TestClient:
    redis_url, database_url = seeded
    app = create_app(DashboardOptions(redis_url=redis_url, database_url=database_url,
                                      ws_interval_s=0.05, **options), heartbeat=False)
    return TestClient(app)


@pytest.fixture
def api(seeded: tuple[str, str]) -> Iterator[TestClient]:
    with make_client(seeded, control_token=CONTROL) as client:
        yield client


def test_reads_page_and_filter(api: TestClient) -> None:
    page = api.get("/api/trades", params={"limit": 5, "offset": 2}).json()
    assert page["total"] == 39 and len(page["items"]) == 5 and page["offset"] == 2
    exits = [t["exit_ts"] for t in page["items"]]
    assert exits == sorted(exits, reverse=True)
    eth = api.get("/api/trades", params={"symbol": "ETHUSDT", "limit": 1000}).json()
    assert eth["total"] == len(eth["items"]) > 0
    assert {t["symbol"] for t in eth["items"]} == {"ETHUSDT"}
    since = exits[0]
    assert all(t["exit_ts"] >= since for t in
               api.get("/api/trades", params={"since": since}).json()["items"])

    signals = api.get("/api/signals", params={"limit": 3}).json()
    assert signals["total"] == 40
    assert [len(s["votes"]) for s in signals["items"]] == [4, 4, 4]
    assert {v["member"] for v in signals["items"][0]["votes"]} == {
        "xgboost", "lightgbm", "nhits", "patchtst"}

    positions = api.get("/api/positions").json()
    assert positions["source"] == "live" and positions["total"] == 1
    position = positions["items"][0]
    assert position["position_id"] == "position-39"
    assert position["stop_loss"] > 0 and len(position["take_profits"]) == 2

    prices = api.get("/api/prices", params={"symbols": "BTCUSDT"}).json()
    assert [p["symbol"] for p in prices] == ["BTCUSDT"]
    candles = api.get("/api/candles", params={"symbol": "ETHUSDT", "limit": 10}).json()
    assert len(candles) == 10
    assert [c["open_time"] for c in candles] == sorted(c["open_time"] for c in candles)

    stats = api.get("/api/stats").json()
    assert stats["trades"] == 39 and stats["wins"] + stats["losses"] == 39
    assert {s["symbol"] for s in stats["by_symbol"]} == {"BTCUSDT", "ETHUSDT"}
    equity = api.get("/api/equity", params={"points": 20}).json()
    assert 2 <= len(equity) <= 20
    risk = api.get("/api/risk").json()
    assert risk["ess"]["tripped"] is False and risk["open_positions"] == 1
    assert risk["exposure_ratio"] is not None and risk["drawdown"] is not None


def test_health_documents(api: TestClient, r: redis.Redis) -> None:
    health = api.get("/api/health").json()
    assert health["status"] == "down"  # required services have no heartbeat here
    assert any(f["kind"] == "missing_heartbeat" for f in health["flags"])
    assert {s["name"] for s in health["services"]} >= {"journal", "dashboard-api"}

    v2 = api.get("/api/v2/health").json()
    dependencies = v2["dependencies"]
    assert dependencies["redis"]["status"] == "ok"
    assert dependencies["journal_database"]["status"] == "ok"
    assert dependencies["journal_database"]["data"]["revision"] == "0002"
    assert dependencies["journal_service"]["status"] == "ok"
    assert dependencies["ess"]["status"] == "ok"
    assert dependencies["service:execution"]["status"] == "ok"
    assert dependencies["service:risk-governor"]["status"] == "down"
    assert dependencies["stream:market.tick"]["data"]["length"] == BARS * 2

    r.set(JOURNAL_KEY, orjson.dumps({"healthy": False, "reason": "OperationalError: refused",
                                     "checked_at": time.time()}))
    journal = api.get("/api/v2/health").json()["dependencies"]["journal_service"]
    assert journal["status"] == "down" and "refused" in journal["detail"]


def test_security_headers_and_metrics(api: TestClient) -> None:
    response = api.get("/api/stats")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    metrics = api.get("/metrics").text
    assert "quantum_ess_tripped 0.0" in metrics
    assert f'quantum_stream_length{{stream="market.tick"}} {BARS * 2}.0' in metrics
    assert "quantum_portfolio_drawdown_ratio" in metrics
    requests = 'quantum_dashboard_requests_total{method="GET",route="/api/stats",status="200"}'
    assert requests in metrics


def test_control_needs_the_bearer_token(api: TestClient, r: redis.Redis) -> None:
    body = {"reason": "operator test"}
    missing = api.post("/api/control/ess/trip", json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json() == {"detail": "authentication required"}
    wrong = api.post("/api/control/ess/trip", json=body,
                     headers={"Authorization": f"Bearer {CONTROL[:-1]}x"})
    assert wrong.status_code == 403 and wrong.json() == {"detail": "forbidden"}
    basic = api.post("/api/control/ess/trip", json=body, headers={"Authorization": "Basic eA=="})
    assert basic.status_code == 401
    assert not ess.status(r).tripped  # still the clear ESS `quantumctl init` wrote

    auth = {"Authorization": f"Bearer {CONTROL}"}
    tripped = api.post("/api/control/ess/trip", json={**body, "operator": "alice"}, headers=auth)
    assert tripped.status_code == 200 and tripped.json()["tripped"] is True
    assert tripped.json()["by"] == "dashboard:alice"
    assert api.get("/api/risk").json()["ess"]["tripped"] is True
    assert "quantum_ess_tripped 1.0" in api.get("/metrics").text
    assert api.get("/api/v2/health").json()["dependencies"]["ess"]["status"] == "down"
    reset = api.post("/api/control/ess/reset", json=body, headers=auth).json()
    assert reset["tripped"] is False
    assert api.post("/api/control/pause", json={}, headers=auth).json()["paused"] is True
    assert api.post("/api/control/resume", json={}, headers=auth).json()["paused"] is False


def test_control_is_refused_when_no_token_is_configured(seeded: tuple[str, str]) -> None:
    with make_client(seeded) as client:
        response = client.post("/api/control/pause", json={},
                               headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403 and response.json() == {"detail": "forbidden"}


def test_reads_need_the_read_token_when_one_is_set(seeded: tuple[str, str]) -> None:
    with make_client(seeded, control_token=CONTROL, read_token=READ) as client:
        assert client.get("/api/trades").status_code == 401
        wrong = client.get("/api/trades", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        for token in (READ, CONTROL):
            ok = client.get("/api/trades", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
        with pytest.raises(WebSocketDisconnect) as refused, \
                client.websocket_connect("/ws/dashboard") as ws:
            ws.receive_text()
        assert refused.value.code == 1008
        with client.websocket_connect(f"/ws/dashboard?token={READ}") as ws:
            assert orjson.loads(ws.receive_text())["type"] == "snapshot"


def test_websocket_refuses_a_foreign_origin_and_takes_its_own(seeded: tuple[str, str]) -> None:
    with make_client(seeded, control_token=CONTROL, read_token=READ) as client:
        for origin in ("https://evil.example", "http://testserver.evil.example"):
            with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(
                f"/ws/dashboard?token={READ}", headers={"Origin": origin}
            ) as ws:
                ws.receive_text()
            assert refused.value.code == 1008
        with client.websocket_connect(f"/ws/dashboard?token={READ}",
                                      headers={"Origin": "http://testserver"}) as ws:
            assert orjson.loads(ws.receive_text())["type"] == "snapshot"
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(
            "/ws/dashboard", headers={"Origin": "http://testserver"}
        ) as ws:  # its own origin still needs the read token
            ws.receive_text()
        assert refused.value.code == 1008


def test_malformed_queries_get_422_naming_the_field(api: TestClient) -> None:
    for path, params, field in (
        ("/api/trades", {"limit": "many"}, "limit"),
        ("/api/trades", {"limit": 0}, "limit"),
        ("/api/signals", {"direction": "UP"}, "direction"),
        ("/api/positions", {"symbol": "btc/usdt"}, "symbol"),
        ("/api/candles", {}, "symbol"),
        ("/api/equity", {"since": -5}, "since"),
    ):
        response = api.get(path, params=params)
        assert response.status_code == 422, (path, params)
        assert [e["loc"][-1] for e in response.json()["detail"]] == [field]
    bad_body = api.post("/api/control/ess/trip", json={"reason": ""},
                        headers={"Authorization": f"Bearer {CONTROL}"})
    assert bad_body.status_code == 422 and bad_body.json()["detail"][0]["loc"][-1] == "reason"


def test_the_websocket_pushes_live_changes(api: TestClient, r: redis.Redis) -> None:
    with api.websocket_connect("/ws/dashboard") as ws:
        first = orjson.loads(ws.receive_text())
        assert first["type"] == "snapshot"
        assert [p["position_id"] for p in first["positions"]] == ["position-39"]
        assert len(first["signals"]) == 20 and first["risk"]["ess"]["tripped"] is False
        from quantum.risk import ess

        ess.trip(r, "websocket test", "pytest")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = orjson.loads(ws.receive_text())
            if message.get("type") == "snapshot" and message["risk"]["ess"]["tripped"]:
                break
        else:
            pytest.fail("the trip was not pushed")


# --- the OpenAPI contract --------------------------------------------------------------


def test_the_api_keeps_its_openapi_contract(seeded: tuple[str, str], tmp_path: Path) -> None:
    """Every operation, with parameters and bodies generated from the OpenAPI spec, answers
    as its schema says (status, content type, body) and never with a server error."""
    redis_url, database_url = seeded
    write_report(tmp_path / "reports")
    app = create_app(DashboardOptions(redis_url=redis_url, database_url=database_url,
                                      control_token=CONTROL, reports_dir=tmp_path / "reports"),
                     heartbeat=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/api/trades", "/api/signals", "/api/positions", "/api/prices", "/api/candles",
        "/api/risk", "/api/stats", "/api/health", "/api/v2/health", "/metrics",
        "/api/control/ess/trip", "/api/control/pause", "/api/control/exit", "/api/sources",
        "/api/models", "/api/chart", "/api/reports", "/api/reports/{name}/chart"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def conforms(case: Any) -> None:
            case.call_and_validate()

        conforms()


# --- the web page in headless Chromium ----------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True,
                       timeout=900, check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("Debian's chromium package is not installed and cannot be installed here")
    return found


@pytest.fixture
def served(seeded: tuple[str, str]) -> Iterator[str]:
    """The dashboard on a real uvicorn server (loopback, free port), heartbeat on."""
    redis_url, database_url = seeded
    reports = Path(database_url.removeprefix("sqlite:///")).parent / "reports"
    write_report(reports)
    app = create_app(DashboardOptions(redis_url=redis_url, database_url=database_url,
                                      ws_interval_s=0.2, control_token=CONTROL,
                                      reports_dir=reports))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           ws="auto"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class Browser:
    """Headless Chromium driven over the DevTools protocol: the page runs in real time, so
    the test waits for what the page does (its WebSocket going live) rather than guessing a
    delay."""

    FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1440,1100",
             "--remote-debugging-port=0", "--remote-allow-origins=*")

    def __init__(self, binary: str, profile: Path, url: str) -> None:
        self.process = subprocess.Popen([binary, *self.FLAGS, f"--user-data-dir={profile}",
                                         "about:blank"], stderr=subprocess.PIPE, text=True)
        endpoint = None
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if "DevTools listening on" in line:
                endpoint = line.split("listening on ", 1)[1].strip()
                break
        assert endpoint, "chromium did not open its DevTools endpoint"
        self.log: list[str] = []  # drained so a full pipe never stalls the browser
        threading.Thread(target=lambda: self.log.extend(self.process.stderr or ()),
                         daemon=True).start()
        port = endpoint.split(":")[2].split("/")[0]
        opened = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?{url}", method="PUT")
        page = orjson.loads(urllib.request.urlopen(opened, timeout=30).read())
        self.stack = contextlib.ExitStack()
        self.socket = self.stack.enter_context(websockets.sync.client.connect(
            page["webSocketDebuggerUrl"], max_size=64 * 2**20))
        self.counter = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """The result of one DevTools command; its error message raises ``RuntimeError``."""
        self.counter += 1
        self.socket.send(orjson.dumps({"id": self.counter, "method": method,
                                       "params": params}).decode())  # CDP reads text frames
        while True:
            message = orjson.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.counter:
                if "error" in message:
                    raise RuntimeError(message["error"].get("message", "DevTools error"))
                return dict(message["result"])

    def evaluate(self, expression: str) -> Any:
        """The expression's value; ``None`` while the page has no document to run it in."""
        try:
            result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        except RuntimeError as e:
            if "execution context" in str(e):
                return None
            raise
        return result["result"].get("value")

    def close(self) -> None:
        self.stack.close()
        self.process.terminate()
        self.process.wait(20)


def test_the_web_page_renders_live_in_chromium(served: str, r: redis.Redis,
                                               tmp_path: Path) -> None:
    browser = Browser(chromium(), tmp_path / "profile", served + "/")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if browser.evaluate("document.body.dataset.state") == "live" and browser.evaluate(
                    "document.getElementById('equity-line').getAttribute('points')"):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the page did not go live (no WebSocket snapshot and equity curve)")
        html = browser.evaluate("document.documentElement.outerHTML")
        assert "position-39" in html and "ETHUSDT" in html  # the open position
        assert "patchtst" in html  # a member's vote in the signals feed
        assert "ESS clear" in html  # the risk card
        assert "market.tick" in html and "execution" in html  # fleet health

        from quantum.risk import ess

        ess.trip(r, "chromium test", "pytest")  # a live change reaches the page
        deadline = time.monotonic() + 15
        while "ESS TRIPPED" not in (browser.evaluate(
                "document.getElementById('ess').textContent") or ""):
            assert time.monotonic() < deadline, "the trip did not reach the page"
            time.sleep(0.1)
        shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    finally:
        browser.close()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "dashboard.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    assert screenshot.stat().st_size > 20_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the operator's page: its JSON routes -------------------------------------------------


def test_the_page_routes_chart_models_and_sources(api: TestClient) -> None:
    sources = api.get("/api/sources").json()
    assert sources["redis"]["status"] == "ok"
    assert sources["journal"]["status"] == "ok"
    assert sources["journal"]["data"]["trades"] == 39

    models = api.get("/api/models").json()
    assert models["ai_engine"]["model_version"] == "ensemble@v1"
    assert models["ai_engine"]["members_missing"] == {"patchtst": "file missing"}
    assert models["bias"]["signals"] == 3
    assert models["bias"]["long_share"] == pytest.approx(2 / 3)
    assert models["drift"]["detail"].startswith("PSI 0.31")
    assert models["rl_sizing"]["mode"] == "shadow" and models["shadow"] is None

    chart = api.get("/api/chart", params={"symbol": "BTCUSDT", "limit": 1000}).json()
    assert len(chart["candles"]) == BARS and chart["source"] == "live"
    assert len(chart["trades"]) == 20  # every BTC trade of the journal lies on these bars
    for trade in chart["trades"]:  # the stop of the fill that opened it, on the right side
        assert (trade["stop_loss"] < trade["entry_price"]) == (trade["side"] == "LONG")
    eth = api.get("/api/chart", params={"symbol": "ETHUSDT"}).json()
    assert [p["position_id"] for p in eth["open"]] == ["position-39"]
    assert eth["open"][0]["stop_loss"] > 0
    none = api.get("/api/chart", params={"symbol": "SOLUSDT"}).json()
    assert none["candles"] == [] and "no candles" in none["note"]


def test_the_dashboard_audits_exactly_like_the_cli(api: TestClient, r: redis.Redis,
                                                   redis_url: str) -> None:
    from typer.testing import CliRunner

    auth = {"Authorization": f"Bearer {CONTROL}"}
    body = {"position_id": "position-39", "reason": "page test", "operator": "alice"}
    assert api.post("/api/control/exit", json=body).status_code == 401
    gone = api.post("/api/control/exit", json={**body, "position_id": "position-3"},
                    headers=auth)
    assert gone.status_code == 409 and gone.json()["detail"] == "no open position 'position-3'"
    made = api.post("/api/control/exit", json=body, headers=auth)
    assert made.status_code == 200 and made.json()["by"] == "dashboard:alice"
    assert [q["position_id"] for q in manual.waiting(r)] == ["position-39"]
    twice = api.post("/api/control/exit", json=body, headers=auth)
    assert twice.status_code == 409 and "already pending" in twice.json()["detail"]
    from_page = ess.audit(r, 1)[0]

    r.delete(EXIT_REQUESTS_KEY)
    result = CliRunner().invoke(quantumctl, ["exit", "position-39", "--reason", "page test",
                                             "--redis-url", redis_url])
    assert result.exit_code == 0, result.output
    from_cli = ess.audit(r, 1)[0]
    assert set(from_cli) == set(from_page)
    same = ("action", "reason", "position_id", "symbol", "side")
    assert [from_cli[k] for k in same] == [from_page[k] for k in same]

    api.post("/api/control/ess/trip", json={"reason": "drill", "operator": "alice"},
             headers=auth)
    page_trip = ess.audit(r, 1)[0]
    CliRunner().invoke(quantumctl, ["ess", "reset", "--reason", "x", "--redis-url", redis_url])
    CliRunner().invoke(quantumctl, ["ess", "trip", "--reason", "drill", "--redis-url",
                                    redis_url])
    cli_trip = ess.audit(r, 1)[0]
    assert set(cli_trip) == set(page_trip)
    assert [cli_trip[k] for k in ("action", "reason", "evaluator")] == \
        [page_trip[k] for k in ("action", "reason", "evaluator")] == ["trip", "drill", "manual"]


def test_missing_sources_are_said_not_shown_as_zeros(r: redis.Redis, redis_url: str,
                                                     tmp_path: Path) -> None:
    r.flushdb()  # a Redis that never held a fleet (or lost it)
    empty_journal = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    with make_client((redis_url, empty_journal), control_token=CONTROL) as client:
        sources = client.get("/api/sources").json()
        assert sources["redis"]["status"] == "empty"
        assert sources["journal"]["status"] == "empty"
        assert "not running" in sources["journal"]["detail"]
        ess_view = client.get("/api/risk").json()["ess"]
        assert ess_view["tripped"] is True and ess_view["reason"] == "state_unknown"
        with client.websocket_connect("/ws/dashboard") as ws:
            snapshot = orjson.loads(ws.receive_text())
        assert snapshot["type"] == "snapshot"
        assert snapshot["sources"]["redis"]["status"] == "empty"
        assert snapshot["risk"]["ess"]["tripped"] is True
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with make_client((down, empty_journal)) as client:
        assert client.get("/api/sources").json()["redis"]["status"] == "down"
        with client.websocket_connect("/ws/dashboard") as ws:
            snapshot = orjson.loads(ws.receive_text())
        assert snapshot["sources"]["redis"]["status"] == "down" and snapshot["risk"] is None
        assert snapshot["health"]["status"] == "down"


def test_a_finished_report_opens_like_live(seeded: tuple[str, str], tmp_path: Path) -> None:
    name = write_report(tmp_path / "reports")
    report = orjson.loads((tmp_path / "reports" / name).read_bytes())
    with make_client(seeded, reports_dir=tmp_path / "reports") as client:
        listing = client.get("/api/reports").json()
        assert [(row["name"], row["kind"]) for row in listing] == [(name, "backtest")]
        summary = client.get(f"/api/reports/{name}").json()
        assert summary["trades"] == len(report["trade_list"]) == report["trades"] > 0
        page = client.get(f"/api/reports/{name}/trades", params={"limit": 5}).json()
        assert page["total"] == report["trades"] and len(page["items"]) == 5
        exits = [t["exit_ts"] for t in page["items"]]
        assert exits == sorted(exits, reverse=True)
        btc = client.get(f"/api/reports/{name}/trades", params={"symbol": "BTCUSDT"}).json()
        assert {t["symbol"] for t in btc["items"]} == {"BTCUSDT"}
        stats = client.get(f"/api/reports/{name}/stats").json()
        assert stats["trades"] == report["trades"]
        assert stats["net_pnl"] == pytest.approx(report["net_pnl"])
        assert sum(s["trades"] for s in stats["by_symbol"]) == report["trades"]
        equity = client.get(f"/api/reports/{name}/equity", params={"points": 50}).json()
        assert 2 <= len(equity) <= 50 and all(0 <= p["drawdown"] < 1 for p in equity)
        chart = client.get(f"/api/reports/{name}/chart", params={"symbol": "BTCUSDT"}).json()
        assert chart["source"] == "report" and len(chart["candles"]) == 61  # real sample bars
        assert len(chart["trades"]) == len(btc["items"])
        assert client.get("/api/reports/nope.json").status_code == 404
        broken = client.get("/api/reports/broken.json")
        assert broken.status_code == 404 and "not a replay or backtest report" in \
            broken.json()["detail"]
        assert client.get("/api/reports/..%2Fjournal.sqlite").status_code in (404, 422)


# --- the operator's page in headless Chromium ---------------------------------------------


def wait_for(browser: Browser, expression: str, what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = browser.evaluate(expression)
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def operate(browser: Browser, opener: str, token: str, reason: str) -> None:
    """Click a control, type the token and a reason into its dialog, confirm."""
    browser.evaluate(f"{opener}.click()")
    wait_for(browser, "document.getElementById('control-dialog').open", "no dialog opened")
    browser.evaluate("document.getElementById('control-token').value = "
                     + orjson.dumps(token).decode())
    browser.evaluate("document.getElementById('control-reason').value = "
                     + orjson.dumps(reason).decode())
    browser.evaluate("document.getElementById('control-submit').click()")


def fits(browser: Browser) -> bool:
    return bool(browser.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_the_operator_acts_from_the_page(served: str, r: redis.Redis, tmp_path: Path) -> None:
    browser = Browser(chromium(), tmp_path / "profile", served + "/")
    try:
        wait_for(browser, "document.body.dataset.state === 'live' && "
                 "document.getElementById('trades').rows.length === 25 && "
                 "Number(document.getElementById('candle-chart').dataset.marks) > 0",
                 "the page did not load its trades and chart")
        assert fits(browser), "the desktop layout overflows"
        text = browser.evaluate("document.body.innerText")
        assert "page 1 of 2 (39 trades)" in text
        assert "ensemble@v1" in text and "PSI 0.31" in text and "shadow" in text  # models
        assert browser.evaluate("document.getElementById('pairs').rows.length") == 2
        assert int(browser.evaluate("document.getElementById('equity-chart').dataset.points")) > 2
        browser.evaluate("document.getElementById('trades-next').click()")
        wait_for(browser, "document.getElementById('trades-page').textContent"
                 ".startsWith('page 2 of 2')", "paging did not move")
        browser.evaluate("const s = document.getElementById('trades-symbol'); "
                         "s.value = 'ETHUSDT'; s.dispatchEvent(new Event('change'))")
        wait_for(browser, "[...document.querySelectorAll('#trades tr')].every("
                 "(tr) => tr.cells[1].textContent === 'ETHUSDT') && "
                 "document.getElementById('trades-page').textContent.includes('19 trades')",
                 "the symbol filter did not apply")

        trip = "document.querySelector('button[data-action=trip]')"
        operate(browser, trip, "wrong-token", "drill from the page")
        wait_for(browser, "document.getElementById('control-error').textContent"
                 ".includes('403')", "a wrong token was not refused on the page")
        assert not ess.status(r).tripped
        browser.evaluate("document.getElementById('control-dialog').close()")
        operate(browser, trip, CONTROL, "drill from the page")
        deadline = time.monotonic() + 10
        while not ess.status(r).tripped:
            assert time.monotonic() < deadline, "the button did not trip the ESS"
            time.sleep(0.05)
        state = ess.status(r)
        assert (state.reason, state.by) == ("drill from the page", "dashboard:web")
        assert ess.audit(r, 1)[0]["action"] == "trip"
        wait_for(browser, "document.getElementById('ess').textContent"
                 ".startsWith('ESS TRIPPED: drill from the page')", "the trip is not shown")

        operate(browser, "document.querySelector('button[data-action=exit]')", CONTROL,
                "flatten from the page")
        deadline = time.monotonic() + 10
        while not manual.waiting(r):
            assert time.monotonic() < deadline, "the force-exit button requested nothing"
            time.sleep(0.05)
        assert manual.waiting(r)[0]["position_id"] == "position-39"
        wait_for(browser, "document.getElementById('positions').textContent"
                 ".includes('exit pending')", "the pending exit is not shown")

        browser.evaluate("const v = document.getElementById('source'); "
                         "v.value = 'backtest.json'; v.dispatchEvent(new Event('change'))")
        wait_for(browser, "document.getElementById('equity-source').textContent"
                 ".includes('backtest report backtest.json')", "the report did not open")
        wait_for(browser, "document.getElementById('banners').textContent"
                 ".includes('finished report')", "the report view is not labelled")

        browser.call("Emulation.setDeviceMetricsOverride", width=390, height=844,
                     deviceScaleFactor=2, mobile=True)
        wait_for(browser, "window.innerWidth === 390", "the phone width did not apply")
        assert fits(browser), "the phone layout overflows"
        columns = browser.evaluate(
            "getComputedStyle(document.querySelector('main')).gridTemplateColumns")
        assert len(columns.split()) == 1, columns
        phone = browser.call("Page.captureScreenshot", format="png")

        r.flushdb()  # Redis loses everything: the page says so, never "ESS clear"
        wait_for(browser, "document.getElementById('banners').textContent"
                 ".includes('Redis holds no fleet')", "the empty Redis is not said")
        ess_text = browser.evaluate("document.getElementById('ess').textContent")
        assert ess_text.startswith("ESS state unknown") and "clear" not in ess_text
    finally:
        browser.close()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "dashboard-phone.png").write_bytes(base64.b64decode(phone["data"]))
