"""What the dashboard API reads, assembled: positions with exit levels, the risk card, both
health documents and the live snapshot pushed over the WebSocket.

Routes stay thin: each calls one method here, so the WebSocket pushes exactly what the REST
endpoints return.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import structlog
from sqlalchemy import Engine

from quantum.ctl.runstate import pid_alive
from quantum.ctl.truth import truth_map
from quantum.dashboard import live, queries
from quantum.journal.database import (
    UNAVAILABLE_ERRORS,
    backend,
    current_revision,
    make_engine,
    probe,
    redact,
    upgrade,
)
from quantum.observability.heartbeat import Beacon

SEVERITY = {"ok": 0, "degraded": 1, "down": 2}
STALE_JOURNAL_HEALTH_S = 10.0
LAG_DEGRADED = 10_000  # entries a group may fall behind before its stream counts as degraded

log = structlog.get_logger(service="dashboard-api")


@dataclass(frozen=True)
class DashboardOptions:
    """How the dashboard reaches its data and who may steer through it.

    ``control_token`` guards ESS trip/reset and pause/resume (empty: control refused);
    ``read_token``, when set, is required on every read as well.
    """

    redis_url: str
    database_url: str
    control_token: str = ""
    read_token: str = ""
    ws_interval_s: float = 1.0
    supervisor_state_file: Path | None = None
    service_name: str = "dashboard-api"
    instance: str = "0"
    heartbeat_ttl_s: int = 15


def worst(*statuses: str) -> str:
    return max(statuses, key=SEVERITY.__getitem__, default="ok")


class DashboardBackend:
    """Redis client, journal engine and the heartbeat of the dashboard process."""

    def __init__(self, options: DashboardOptions) -> None:
        self.options = options
        self.client = redis.Redis.from_url(options.redis_url, socket_connect_timeout=2,
                                           socket_timeout=5, health_check_interval=30)
        self.engine: Engine = make_engine(options.database_url)
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def journal(self) -> Engine:
        """The journal engine, its schema migrated on first use (the journal service may not
        have started yet; the migrations are idempotent)."""
        if not self._migrated:
            with self._migrate_lock:
                if not self._migrated:
                    upgrade(self.engine)
                    self._migrated = True
        return self.engine

    def prepare(self) -> None:
        """Migrate the journal at start-up, before requests race for it; a database that is
        down now is retried on first use (reads answer 503 meanwhile)."""
        try:
            self.journal()
        except UNAVAILABLE_ERRORS as e:
            log.warning("journal database unavailable at start", error=f"{type(e).__name__}")

    def start_heartbeat(self) -> None:
        """Beat ``quantum:heartbeat:dashboard-api`` and the systemd watchdog every second."""
        consumer = f"{self.options.service_name}-{self.options.instance}"
        beacon = Beacon(self.client, self.options.service_name, consumer,
                        self.options.heartbeat_ttl_s)

        def loop() -> None:
            ready = False
            while not self._stop.is_set():
                try:
                    beacon.beat(force=True)
                    if not ready:
                        beacon.notifier.ready()
                        ready = True
                except redis.RedisError:
                    beacon.notifier.watchdog()
                self._stop.wait(1.0)
            beacon.notifier.stopping()

        self._thread = threading.Thread(target=loop, name="dashboard-heartbeat", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.engine.dispose()
        self.client.close()

    # --- reads ------------------------------------------------------------------------------

    def positions(self, symbol: str | None, side: str | None) -> dict[str, Any]:
        state = live.portfolio(self.client)
        as_of: int | None
        if state is not None:
            source, as_of = "live", state.ts
            rows = [p.model_dump() for p in state.positions]
        else:
            as_of, rows = queries.latest_positions(self.journal())
            source = "journal" if as_of is not None else "none"
        rows = [r for r in rows if (not symbol or r["symbol"] == symbol)
                and (not side or r["side"] == side)]
        ids = [r["position_id"] for r in rows]
        levels = queries.exit_levels(self.journal(), ids) if rows else {}
        for row in rows:
            level = levels.get(row["position_id"], {})
            row["stop_loss"] = level.get("stop_loss")
            row["take_profits"] = level.get("take_profits", [])
        rows.sort(key=lambda r: (r["opened_ts"], r["position_id"]), reverse=True)
        return {"source": source, "as_of": as_of, "items": rows}

    def risk(self) -> dict[str, Any]:
        ess = live.ess_state(self.client)
        state = live.portfolio(self.client)
        snapshot = queries.latest_snapshot(self.journal())
        equity = state.equity if state else (snapshot or {}).get("equity")
        peak = (snapshot or {}).get("peak_equity")
        if equity is not None and peak is not None and equity > peak:
            peak = equity
        drawdown = (1 - equity / peak) if equity is not None and peak else None
        gross = state.gross_exposure if state else (snapshot or {}).get("gross_exposure")
        return {
            "ess": ess,
            "equity": equity,
            "balance": state.balance if state else (snapshot or {}).get("balance"),
            "peak_equity": peak,
            "drawdown": max(drawdown, 0.0) if drawdown is not None else None,
            "max_drawdown": (snapshot or {}).get("max_drawdown"),
            "gross_exposure": gross,
            "net_exposure": state.net_exposure if state else (snapshot or {}).get("net_exposure"),
            "exposure_ratio": gross / equity if gross is not None and equity else None,
            "open_positions": len(state.positions) if state else
            int((snapshot or {}).get("open_positions") or 0),
            "recent_events": queries.recent_risk_events(self.journal()),
        }

    def supervisor_state(self) -> dict[str, Any] | None:
        """The local supervisor's state file, when the supervisor that wrote it still runs."""
        import orjson

        path = self.options.supervisor_state_file
        if path is None or not path.is_file():
            return None
        try:
            document = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        if not isinstance(document, dict) or not isinstance(document.get("pid"), int):
            return None
        return document if pid_alive(document["pid"]) else None

    def health(self) -> dict[str, Any]:
        document = truth_map(self.client, self.supervisor_state())
        status = "ok"
        for flag in document["flags"]:
            status = worst(status, "down" if flag["kind"] == "missing_heartbeat" else "degraded")
        return {"status": status, **document}

    def health_v2(self) -> dict[str, Any]:
        now = time.time()
        dependencies: dict[str, dict[str, Any]] = {"redis": self._redis_dependency()}
        dependencies["journal_database"] = self._database_dependency()
        if dependencies["redis"]["status"] == "ok":
            dependencies["journal_service"] = self._journal_dependency(now)
            dependencies["ess"] = self._ess_dependency()
            document = truth_map(self.client, self.supervisor_state())
            for row in document["services"]:
                dependencies[f"service:{row['name']}"] = _service_dependency(row)
            for row in document["streams"]:
                if row["exists"]:
                    dependencies[f"stream:{row['name']}"] = _stream_dependency(row)
        status = worst(*(d["status"] for d in dependencies.values()))
        return {"status": status, "generated_at": _iso(now), "dependencies": dependencies}

    def _redis_dependency(self) -> dict[str, Any]:
        try:
            info = self.client.info("server")
        except redis.RedisError as e:
            return {"status": "down", "detail": f"unreachable: {type(e).__name__}", "data": {}}
        return {"status": "ok", "detail": "answers",
                "data": {"version": info.get("redis_version")}}

    def _database_dependency(self) -> dict[str, Any]:
        url = self.engine.url.render_as_string(hide_password=False)
        data: dict[str, Any] = {"backend": backend(url), "database": redact(url)}
        reason = probe(self.engine)
        if reason is not None:
            return {"status": "down", "detail": reason, "data": data}
        try:
            data["revision"] = current_revision(self.journal())
        except UNAVAILABLE_ERRORS as e:
            return {"status": "down", "detail": f"migration failed: {type(e).__name__}",
                    "data": data}
        return {"status": "ok", "detail": "answers", "data": data}

    def _journal_dependency(self, now: float) -> dict[str, Any]:
        document = live.journal_health(self.client)
        if document is None:
            return {"status": "degraded", "detail": "the journal has not reported", "data": {}}
        age = now - float(document.get("checked_at") or 0)
        if not document.get("healthy"):
            return {"status": "down", "detail": str(document.get("reason") or "unhealthy"),
                    "data": document}
        if age > STALE_JOURNAL_HEALTH_S:
            return {"status": "degraded", "detail": f"last report {age:.0f}s ago",
                    "data": document}
        return {"status": "ok", "detail": "writing", "data": document}

    def _ess_dependency(self) -> dict[str, Any]:
        ess = live.ess_state(self.client)
        if ess["tripped"]:
            return {"status": "down", "detail": f"tripped: {ess['reason']}", "data": ess}
        if ess["paused"]:
            return {"status": "degraded", "detail": f"trading paused by {ess['paused_by']}",
                    "data": ess}
        return {"status": "ok", "detail": "clear", "data": ess}

    def snapshot(self) -> dict[str, Any]:
        """What the web page shows, in one document (the WebSocket's message)."""
        health = self.health_v2()
        return {
            "type": "snapshot",
            "positions": self.positions(None, None)["items"],
            "risk": self.risk(),
            "signals": queries.signals(self.journal(), limit=20).items,
            "equity": queries.latest_snapshot(self.journal()),
            "prices": live.prices(self.client),
            "health": {"status": health["status"], "dependencies": health["dependencies"]},
        }


def _service_dependency(row: dict[str, Any]) -> dict[str, Any]:
    if row["state"] == "up":
        status, detail = "ok", f"heartbeat {row['heartbeat_age_s']}s ago"
    else:
        status = "down" if row["required"] else "degraded"
        detail = "no heartbeat"
    return {"status": status, "detail": detail, "data": row}


def _stream_dependency(row: dict[str, Any]) -> dict[str, Any]:
    lag = max((g["lag"] for g in row["groups"]), default=0)
    pending = max((g["pending"] for g in row["groups"]), default=0)
    status = "degraded" if lag > LAG_DEGRADED else "ok"
    return {"status": status, "detail": f"length {row['length']}, lag {lag}, pending {pending}",
            "data": {"length": row["length"], "lag": lag, "pending": pending,
                     "producer": row["producer"], "last_entry_time": row["last_entry_time"],
                     "groups": row["groups"]}}


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
