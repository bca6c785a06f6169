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

import orjson
import redis
import structlog
from sqlalchemy import Engine

from quantum.bus import connection
from quantum.ctl.runstate import pid_alive
from quantum.ctl.truth import truth_map
from quantum.dashboard import live, queries
from quantum.dashboard.reports import Reports, mark
from quantum.journal.database import (
    UNAVAILABLE_ERRORS,
    backend,
    current_revision,
    make_engine,
    probe,
    redact,
    upgrade,
)
from quantum.notify.channels import Notifier
from quantum.observability.heartbeat import Beacon
from quantum.registry.fleet import (
    AI_ENGINE_KEY,
    CLM_KEY,
    ESS_KEY,
    FLEET_KEY,
    PORTFOLIO_KEY,
    RL_SIZING_KEY,
    RL_TRAINER_KEY,
)

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
    reports_dir: Path | None = None
    notifier: Notifier | None = None  # Alertmanager's receiver forwards through it
    alert_webhook_token: str = ""  # bearer token Alertmanager sends to the receiver


def worst(*statuses: str) -> str:
    return max(statuses, key=SEVERITY.__getitem__, default="ok")


class DashboardBackend:
    """Redis client, journal engine and the heartbeat of the dashboard process."""

    def __init__(self, options: DashboardOptions) -> None:
        self.options = options
        self.client = connection.connect(options.redis_url, socket_connect_timeout=2,
                                           socket_timeout=5, health_check_interval=30)
        self.engine: Engine = make_engine(options.database_url)
        self.reports = Reports(options.reports_dir)
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
        """Live positions (execution's state key), else the journal's newest snapshot; the
        exit levels from the journal when it answers."""
        try:
            state = live.portfolio(self.client)
        except redis.RedisError:
            state = None
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
        try:
            levels = queries.exit_levels(self.journal(), ids) if rows else {}
        except UNAVAILABLE_ERRORS:
            levels = {}
        for row in rows:
            level = levels.get(row["position_id"], {})
            row["stop_loss"] = level.get("stop_loss")
            row["take_profits"] = level.get("take_profits", [])
        rows.sort(key=lambda r: (r["opened_ts"], r["position_id"]), reverse=True)
        return {"source": source, "as_of": as_of, "items": rows}

    def risk(self, journal: bool = True) -> dict[str, Any]:
        """The risk card; ``journal=False`` leaves the journal out (it is down)."""
        ess = live.ess_state(self.client)
        state = live.portfolio(self.client)
        snapshot = queries.latest_snapshot(self.journal()) if journal else None
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
            "recent_events": queries.recent_risk_events(self.journal()) if journal else [],
        }

    def supervisor_state(self) -> dict[str, Any] | None:
        """The local supervisor's state file, when the supervisor that wrote it still runs."""
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

    def sources(self) -> dict[str, dict[str, Any]]:
        """Whether each source the page needs answers and holds anything, said plainly, so
        the page never shows a zero it did not read (issue 14: an empty Redis, a replay
        without the journal)."""
        out: dict[str, dict[str, Any]] = {}
        try:
            self.client.ping()
            keys = self.client.exists(ESS_KEY, FLEET_KEY, PORTFOLIO_KEY)
        except redis.RedisError as e:
            out["redis"] = {"status": "down", "detail": f"Redis unreachable ({type(e).__name__})"}
        else:
            if keys == 0:
                out["redis"] = {"status": "empty", "detail": "Redis holds no fleet: no ESS, "
                                "no epoch, no portfolio (never initialised, or its data lost)"}
            else:
                out["redis"] = {"status": "ok", "detail": "answers"}
        reason = probe(self.engine)
        if reason is not None:
            out["journal"] = {"status": "down", "detail": f"journal database: {reason}"}
            return out
        try:
            counts = queries.counts(self.journal())
        except UNAVAILABLE_ERRORS as e:
            out["journal"] = {"status": "down", "detail": f"journal database: {type(e).__name__}"}
            return out
        reporting = None
        if out["redis"]["status"] != "down":
            try:
                reporting = live.journal_health(self.client)
            except redis.RedisError:
                reporting = None
        if counts["snapshots"] == 0 and counts["trades"] == 0:
            out["journal"] = {"status": "empty", "detail": "the journal has recorded nothing"
                              + ("" if reporting else " and its service is not running (a "
                                 "replay does not run it: open the replay's report)"),
                              "data": counts}
        elif reporting is None:
            out["journal"] = {"status": "stale", "detail": "the journal service is not "
                              "reporting: its figures may be behind", "data": counts}
        elif not reporting.get("healthy"):
            out["journal"] = {"status": "down", "detail": str(reporting.get("reason")
                                                             or "unhealthy"), "data": counts}
        else:
            out["journal"] = {"status": "ok", "detail": "writing", "data": counts}
        return out

    def models(self) -> dict[str, Any]:
        """Model and RL sizing health: what the ai-engine serves, its members, the
        direction bias of its recent signals, its supervisor's notices (drift, bias, swaps),
        the CLM's shadow test and the RL sizer's mode, from their state keys."""
        raw = self.client.mget([AI_ENGINE_KEY, RL_SIZING_KEY, RL_TRAINER_KEY, CLM_KEY])
        engine, sizing, trainer, clm = (_json(x) for x in raw)
        health = (engine or {}).get("health") or {}
        directions = [_direction(x) for x in (engine or {}).get("recent_directions", [])]
        counted = [d for d in directions if d in ("LONG", "SHORT")]
        notices = live.supervisor_notices(self.client, 20)
        return {
            "ai_engine": {"reported": engine is not None, "model": health.get("model"),
                          "model_version": health.get("model_version"),
                          "load_error": health.get("load_error"),
                          "members_loaded": list(health.get("members_loaded") or []),
                          "members_missing": dict(health.get("members_missing") or {}),
                          "quorum": health.get("quorum"), "quorate": health.get("quorate")},
            "bias": {"signals": len(counted),
                     "long_share": counted.count("LONG") / len(counted) if counted else None,
                     "short_share": counted.count("SHORT") / len(counted) if counted else None},
            "drift": next((n for n in notices if n["kind"] == "feature_drift"), None),
            "notices": notices,
            "shadow": (clm or {}).get("shadow"),
            "clm": None if clm is None else {"next_run": clm.get("next_run"),
                                             "job": clm.get("job")},
            "rl_sizing": sizing,
            "rl_trainer": None if trainer is None else {
                k: trainer.get(k) for k in ("new_rewards", "next_run", "running", "last_result")},
        }

    def chart(self, symbol: str, limit: int) -> dict[str, Any]:
        """Candles of ``symbol`` from the klines stream with the journal's trades over them
        (entry, exit, the stop loss of the fill that opened each) and the open position."""
        candles = live.candles(self.client, symbol, "5m", limit)
        since = candles[0]["open_time"] if candles else None
        trades = queries.trades(self.journal(), symbol=symbol, since=since, limit=500).items
        positions = self.positions(symbol, None)["items"]
        levels = queries.exit_levels(self.journal(), [t["trade_id"] for t in trades])
        marks = [mark(t, levels.get(t["trade_id"], {}).get("stop_loss")) for t in trades]
        marks.sort(key=lambda m: m["entry_ts"])
        return {"symbol": symbol, "source": "live", "interval": "5m", "candles": candles,
                "trades": marks,
                "open": [{k: p[k] for k in ("position_id", "side", "entry_price", "opened_ts",
                                            "stop_loss", "take_profits")} for p in positions],
                "note": None if candles else "no candles of this symbol on market.klines"}

    def snapshot(self) -> dict[str, Any]:
        """What the web page shows, in one document (the WebSocket's message). Each part is
        read on its own, so a missing source blanks its parts and says so (``sources``)
        instead of failing the whole document."""
        sources = self.sources()
        redis_up = sources["redis"]["status"] != "down"
        journal_up = sources["journal"]["status"] != "down"
        document: dict[str, Any] = {"type": "snapshot", "sources": sources,
                                    "exits_pending": []}
        try:
            document["positions"] = self.positions(None, None)["items"]
        except (redis.RedisError, *UNAVAILABLE_ERRORS):
            document["positions"] = []
        document["risk"] = self.risk(journal_up) if redis_up else None
        document["signals"] = queries.signals(self.journal(), limit=20).items \
            if journal_up else []
        document["equity"] = queries.latest_snapshot(self.journal()) if journal_up else None
        document["prices"] = live.prices(self.client) if redis_up else []
        if redis_up:
            from quantum.exits import manual

            document["exits_pending"] = manual.waiting(self.client)
            health = self.health_v2()
            document["health"] = {"status": health["status"],
                                  "dependencies": health["dependencies"]}
        else:
            document["health"] = {"status": "down", "dependencies": {}}
        return document


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


def _json(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _direction(entry: Any) -> str | None:
    """A recent signal's direction, whether the ai-engine keeps a bare direction or a
    record ``[symbol, bar_time, direction, …]``."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, list | tuple) and len(entry) >= 3 and isinstance(entry[2], str):
        return entry[2]
    return None


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
