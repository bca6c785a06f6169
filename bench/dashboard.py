"""Dashboard API under load: requests per second and latency percentiles of
``/api/positions`` and ``/api/signals`` with a journal of 100k signal rows.

The API runs as its own process (``python -m services.dashboard_api``, uvicorn, one worker)
on a private Redis holding a live portfolio with open positions, over a SQLite journal of
100,000 signals (400,000 votes) plus the orders, fills and snapshots of 5,000 trades (10,000
signals in ``--quick``). Clients are threads in this process over keep-alive connections;
each figure is ``requests`` sequential-per-client requests, ``clients`` at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import redis
from sqlalchemy import insert

from bench._redis import private_redis
from quantum.contracts.events import PortfolioState, PositionView
from quantum.journal.database import make_engine, upgrade
from quantum.journal.models import SignalRow, SignalVoteRow
from quantum.journal.synthetic import MEMBERS, round_trips
from quantum.journal.writer import Journal
from quantum.localredis import free_port
from quantum.registry.fleet import PORTFOLIO_KEY

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 4


def _build_journal(url: str, signals: int, trips: int) -> list[str]:
    """The journal: ``trips`` full round trips, then plain signals up to ``signals``."""
    engine = make_engine(url)
    upgrade(engine)
    events = list(round_trips(trips, open_last=True))
    journal = Journal(engine)
    for start in range(0, len(events), 2000):
        journal.write(events[start:start + 2000])
    extra = signals - trips
    rows, votes = [], []
    for number in range(extra):
        event_id = f"bench-signal-{number:08d}"
        rows.append({"event_id": event_id, "ts": 1_700_000_000_000 + number * 300_000,
                     "symbol": ("BTCUSDT", "ETHUSDT", "SOLUSDT")[number % 3], "bar_time": 0,
                     "model": "ensemble", "model_version": "v1",
                     "direction": ("LONG", "SHORT", "FLAT")[number % 3], "confidence": 0.7,
                     "prob_long": 0.7, "prob_short": 0.3, "price": 100.0, "atr": 1.0,
                     "blocked_reason": None})
        votes += [{"signal_event_id": event_id, "member": m, "direction": "LONG",
                   "confidence": 0.6} for m in MEMBERS]
    with engine.begin() as connection:
        for start in range(0, len(rows), 10_000):
            connection.execute(insert(SignalRow), rows[start:start + 10_000])
        for start in range(0, len(votes), 40_000):
            connection.execute(insert(SignalVoteRow), votes[start:start + 40_000])
    engine.dispose()
    return [f"position-{n}" for n in range(trips - 20, trips)]


def _portfolio(position_ids: list[str]) -> bytes:
    positions = tuple(PositionView(position_id=p, symbol="BTCUSDT", side="LONG", quantity=1.0,
                                   entry_price=100.0, mark_price=101.0, leverage=5, margin=20.0,
                                   liquidation_price=81.0, unrealised_pnl=1.0, opened_ts=i)
                      for i, p in enumerate(position_ids))
    state = PortfolioState(ts=1, balance=10_000.0, equity=10_020.0, unrealised_pnl=20.0,
                           realised_pnl=0.0, fees_paid=0.0, funding_paid=0.0,
                           gross_exposure=2020.0, net_exposure=2020.0, positions=positions,
                           pending_orders=0)
    return orjson.dumps(state.model_dump(mode="json"))


def _load(base: str, path: str, requests: int) -> dict[str, Any]:
    latencies: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        mine = []
        with httpx.Client(base_url=base, timeout=30) as http:
            for _ in range(requests // CLIENTS):
                started = time.perf_counter()
                response = http.get(path)
                mine.append(time.perf_counter() - started)
                response.raise_for_status()
        with lock:
            latencies.extend(mine)

    with httpx.Client(base_url=base, timeout=30) as http:  # warm caches and the pool
        for _ in range(20):
            http.get(path).raise_for_status()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    values = np.array(latencies) * 1000
    return {"requests": len(latencies), "requests_per_second": round(len(latencies) / seconds, 1),
            "p50_ms": round(float(np.percentile(values, 50)), 2),
            "p99_ms": round(float(np.percentile(values, 99)), 2)}


def run(quick: bool) -> dict[str, Any]:
    signals = 10_000 if quick else 100_000
    trips = 1_000 if quick else 5_000
    requests = 400 if quick else 2_000
    with tempfile.TemporaryDirectory(prefix="quantum-bench-dashboard-") as directory, \
            private_redis() as redis_url:
        url = f"sqlite:///{Path(directory) / 'journal.sqlite'}"
        built = time.perf_counter()
        open_positions = _build_journal(url, signals, trips)
        build_seconds = time.perf_counter() - built
        client = redis.Redis.from_url(redis_url)
        client.set(PORTFOLIO_KEY, _portfolio(open_positions))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
        env |= {"QT_REDIS_URL": redis_url, "QT_DATABASE_URL": url, "QT_HTTP_PORT": str(port),
                "QT_LOG_LEVEL": "warning", "QT_SUPERVISOR_STATE_FILE": ""}
        server = subprocess.Popen([sys.executable, "-m", "services.dashboard_api"], cwd=ROOT,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(base + "/api/stats", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            result: dict[str, Any] = {"signal_rows": signals, "closed_trades": trips - 1,
                                      "open_positions": len(open_positions),
                                      "clients": CLIENTS,
                                      "journal_build_seconds": round(build_seconds, 1)}
            result["positions"] = _load(base, "/api/positions", requests)
            result["signals"] = _load(base, "/api/signals?limit=100", requests)
            result["signals_filtered"] = _load(base, "/api/signals?symbol=ETHUSDT&limit=50",
                                               requests)
            result["trades"] = _load(base, "/api/trades?limit=100", requests)
            return result
        finally:
            server.terminate()
            server.wait(20)
            client.close()
