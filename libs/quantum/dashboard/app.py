"""The dashboard API (FastAPI): REST reads, a live WebSocket, control endpoints, /metrics,
and the web page.

Security: binds loopback by default (the service shell); control endpoints (ESS trip/reset,
pause/resume, the forced exit of a position) need ``Authorization: Bearer <control token>``
and refuse everything when no token is configured; reads need a bearer token only when a
read token is configured (the control token is accepted for reads too). A missing or
malformed credential gets 401 with ``WWW-Authenticate: Bearer``, a wrong one 403, both
with a fixed body that says nothing about which token exists or how it differs. Tokens are
compared in constant time. Every response carries a strict Content-Security-Policy,
``nosniff``, ``DENY`` framing and no referrer.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
import redis
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, WebSocket
from fastapi import Path as FastApiPath
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from quantum.dashboard import live, notify_routes, queries, supervision_routes
from quantum.dashboard import reports as report_views
from quantum.dashboard import schemas as s
from quantum.dashboard.backend import DashboardBackend, DashboardOptions
from quantum.dashboard.metrics import FleetCollector, RequestMetrics
from quantum.journal.database import UNAVAILABLE_ERRORS

STATIC = Path(__file__).resolve().parent / "static"
SYMBOL = r"^[A-Z0-9]{2,20}$"
SYMBOLS = r"^[A-Z0-9]{2,20}(,[A-Z0-9]{2,20}){0,49}$"
MAX_TS = 10**15  # milliseconds: bounds that every SQL backend stores
KEEPALIVE_S = 15.0
SOURCE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, *UNAVAILABLE_ERRORS)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
UNAUTHORISED = {"detail": "authentication required"}
FORBIDDEN = {"detail": "forbidden"}
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": s.Problem, "description": "No bearer credential"},
    403: {"model": s.Problem, "description": "The credential is not accepted"},
    503: {"model": s.Problem, "description": "Redis or the journal database is unavailable"},
}

Since = Annotated[int | None, Query(ge=0, le=MAX_TS, description="From this time, ms UTC")]
Until = Annotated[int | None, Query(ge=0, le=MAX_TS, description="Up to this time, ms UTC")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="Rows to skip")]
SymbolFilter = Annotated[str | None, Query(pattern=SYMBOL, description="e.g. BTCUSDT")]
ReportName = Annotated[str, FastApiPath(pattern=report_views.NAME, max_length=105,
                                        description="A report file, e.g. replay.json")]
Side = Annotated[Literal["LONG", "SHORT"] | None, Query(description="Position side")]

bearer = HTTPBearer(auto_error=False, description="Bearer token (control, or read when set)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _accepted(credentials: HTTPAuthorizationCredentials | None, tokens: list[str]) -> None:
    """Raise 401 without a credential, 403 when it matches none of ``tokens``."""
    if credentials is None or not credentials.credentials:
        raise HTTPException(401, UNAUTHORISED["detail"], headers={"WWW-Authenticate": "Bearer"})
    offered = credentials.credentials.encode()
    matched = False
    for token in tokens:  # every token compared, in constant time, whatever matches
        matched |= bool(token) and hmac.compare_digest(offered, token.encode())
    if not matched:
        raise HTTPException(403, FORBIDDEN["detail"])


def create_app(options: DashboardOptions, *, heartbeat: bool = True) -> FastAPI:
    """The dashboard application over ``options`` (one backend per app)."""
    backend = DashboardBackend(options)
    registry = CollectorRegistry()
    registry.register(FleetCollector(backend))
    request_metrics = RequestMetrics(registry)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if heartbeat:
            backend.start_heartbeat()
        await run_in_threadpool(backend.prepare)
        try:
            yield
        finally:
            backend.close()

    app = FastAPI(title="Quantum Trader dashboard API", version="1", lifespan=lifespan,
                  description="Journal, live state and control of the Quantum Trader fleet.")
    app.state.backend = backend

    def require_read(credentials: Credentials) -> None:
        if options.read_token:
            _accepted(credentials, [options.read_token, options.control_token])

    def require_control(credentials: Credentials) -> None:
        _accepted(credentials, [options.control_token])

    _install_middleware(app, request_metrics)
    _install_errors(app)
    _read_routes(app, backend, require_read)
    _control_routes(app, backend, require_control)
    notify_routes.install(app, backend, options.notifier, options.alert_webhook_token)
    supervision_routes.install(app, backend, require_read)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"],
             summary="Prometheus metrics: requests and fleet-wide gauges")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws/dashboard")
    async def dashboard_socket(websocket: WebSocket) -> None:
        await _serve_socket(websocket, backend, options, request_metrics)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _install_middleware(app: FastAPI, request_metrics: RequestMetrics) -> None:
    @app.middleware("http")
    async def headers_and_metrics(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        route = getattr(request.scope.get("route"), "path", "unmatched")
        request_metrics.requests.labels(route, request.method, str(response.status_code)).inc()
        request_metrics.seconds.labels(route).observe(time.perf_counter() - started)
        return response


def _install_errors(app: FastAPI) -> None:
    async def database_down(_: Request, __: Exception) -> JSONResponse:
        return JSONResponse({"detail": "journal database unavailable"}, status_code=503)

    async def redis_down(_: Request, __: Exception) -> JSONResponse:
        return JSONResponse({"detail": "redis unavailable"}, status_code=503)

    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, database_down)
    app.add_exception_handler(redis.RedisError, redis_down)


def _read_routes(app: FastAPI, backend: DashboardBackend, require_read: Any) -> None:
    # The read guard is attached only when a read token is configured, so the OpenAPI
    # document says truthfully whether reads need a credential.
    guarded = [Depends(require_read)] if backend.options.read_token else []
    reads: dict[str, Any] = {"dependencies": guarded, "responses": COMMON_RESPONSES,
                             "tags": ["read"]}

    @app.get("/api/trades", response_model=s.TradePage, summary="Closed trades", **reads)
    def trades(symbol: SymbolFilter = None, side: Side = None,
               exit_reason: Annotated[str | None, Query(max_length=64)] = None,
               since: Since = None, until: Until = None, limit: Limit = 100,
               offset: Offset = 0) -> dict[str, Any]:
        page = queries.trades(backend.journal(), symbol=symbol, side=side,
                              exit_reason=exit_reason, since=since, until=until, limit=limit,
                              offset=offset)
        return vars(page)

    @app.get("/api/signals", response_model=s.SignalPage,
             summary="Signals with each ensemble member's vote", **reads)
    def signals(symbol: SymbolFilter = None,
                direction: Annotated[Literal["LONG", "SHORT", "FLAT"] | None, Query()] = None,
                since: Since = None, until: Until = None, limit: Limit = 100,
                offset: Offset = 0) -> dict[str, Any]:
        page = queries.signals(backend.journal(), symbol=symbol, direction=direction,
                               since=since, until=until, limit=limit, offset=offset)
        return vars(page)

    @app.get("/api/positions", response_model=s.PositionPage,
             summary="Open positions with their stop loss and take-profit levels", **reads)
    def positions(symbol: SymbolFilter = None, side: Side = None, limit: Limit = 100,
                  offset: Offset = 0) -> dict[str, Any]:
        view = backend.positions(symbol, side)
        items = view["items"]
        return {"source": view["source"], "as_of": view["as_of"],
                "items": items[offset:offset + limit], "total": len(items), "limit": limit,
                "offset": offset}

    @app.get("/api/prices", response_model=list[s.Price], summary="Latest price per symbol",
             **reads)
    def prices(symbols: Annotated[str | None, Query(pattern=SYMBOLS,
                                                    description="BTCUSDT,ETHUSDT")] = None,
               ) -> list[dict[str, Any]]:
        wanted = set(symbols.split(",")) if symbols else None
        return live.prices(backend.client, wanted)

    @app.get("/api/candles", response_model=list[s.Candle], summary="Closed candles", **reads)
    def candles(symbol: Annotated[str, Query(pattern=SYMBOL)],
                interval: Annotated[str, Query(pattern=r"^[1-9][0-9]{0,2}[mhdw]$")] = "5m",
                limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
        return live.candles(backend.client, symbol, interval, limit)

    @app.get("/api/risk", response_model=s.Risk,
             summary="Risk card: ESS, drawdown, exposure, recent risk events", **reads)
    def risk() -> dict[str, Any]:
        return backend.risk()

    @app.get("/api/stats", response_model=s.Stats, summary="Trade statistics", **reads)
    def stats(symbol: SymbolFilter = None, since: Since = None,
              until: Until = None) -> dict[str, Any]:
        return queries.stats(backend.journal(), symbol=symbol, since=since, until=until)

    @app.get("/api/equity", response_model=list[s.EquityPoint], summary="Equity curve", **reads)
    def equity(since: Since = None, until: Until = None,
               points: Annotated[int, Query(ge=2, le=5000)] = 500) -> list[dict[str, Any]]:
        return queries.equity_curve(backend.journal(), since=since, until=until, points=points)

    _view_routes(app, backend, reads)
    _report_routes(app, backend, reads)

    @app.get("/api/health", response_model=s.Health,
             summary="The truth map (quantumctl status --json) with an overall status", **reads)
    def health() -> dict[str, Any]:
        return backend.health()

    @app.get("/api/v2/health", response_model=s.HealthV2,
             summary="Each dependency's state", **reads)
    def health_v2(response: Response) -> dict[str, Any]:
        document = backend.health_v2()
        if document["dependencies"]["redis"]["status"] == "down":
            response.status_code = 503
        return document


def _view_routes(app: FastAPI, backend: DashboardBackend, reads: dict[str, Any]) -> None:
    """The page's other views: its sources, model health, a symbol's chart."""
    @app.get("/api/sources", response_model=s.Sources,
             summary="Whether Redis and the journal answer and hold anything", **reads)
    def sources() -> dict[str, Any]:
        return backend.sources()

    @app.get("/api/models", response_model=s.ModelHealth,
             summary="Served model, members, bias, drift, shadow test, RL sizing", **reads)
    def models() -> dict[str, Any]:
        return backend.models()

    @app.get("/api/chart", response_model=s.Chart,
             summary="Candles of a symbol with entries, exits and stops", **reads)
    def chart(symbol: Annotated[str, Query(pattern=SYMBOL)],
              limit: Annotated[int, Query(ge=10, le=1000)] = 300) -> dict[str, Any]:
        return backend.chart(symbol, limit)


def _report_routes(app: FastAPI, backend: DashboardBackend, reads: dict[str, Any]) -> None:
    """A finished replay or backtest report, in the shapes of the live routes."""
    found = {**reads, "responses": {**COMMON_RESPONSES,
                                    404: {"model": s.Problem, "description": "No such report"}}}

    def opened(name: str) -> dict[str, Any]:
        try:
            return backend.reports.load(name)
        except report_views.ReportNotFound:
            raise HTTPException(404, f"no report {name}") from None
        except report_views.ReportUnreadable as e:
            raise HTTPException(404, str(e)) from None

    @app.get("/api/reports", response_model=list[s.ReportRow],
             summary="Finished replay and backtest reports", **reads)
    def report_list() -> list[dict[str, Any]]:
        return backend.reports.listing()

    @app.get("/api/reports/{name}", response_model=s.ReportSummary,
             summary="A report's headline figures", **found)
    def report_summary(name: ReportName) -> dict[str, Any]:
        return report_views.summary(name, opened(name))

    @app.get("/api/reports/{name}/trades", response_model=s.TradePage,
             summary="A report's trades", **found)
    def report_trades(name: ReportName, symbol: SymbolFilter = None, limit: Limit = 100,
                      offset: Offset = 0) -> dict[str, Any]:
        return report_views.trades(opened(name), symbol=symbol, limit=limit, offset=offset)

    @app.get("/api/reports/{name}/stats", response_model=s.Stats,
             summary="A report's statistics, overall and per symbol", **found)
    def report_stats(name: ReportName, symbol: SymbolFilter = None) -> dict[str, Any]:
        return report_views.stats(opened(name), symbol=symbol)

    @app.get("/api/reports/{name}/equity", response_model=list[s.EquityPoint],
             summary="A report's equity and drawdown", **found)
    def report_equity(name: ReportName, since: Since = None, until: Until = None,
                      points: Annotated[int, Query(ge=2, le=5000)] = 500,
                      ) -> list[dict[str, Any]]:
        return report_views.equity(opened(name), since=since, until=until, points=points)

    @app.get("/api/reports/{name}/chart", response_model=s.Chart,
             summary="A report's candles of a symbol with its trades", **found)
    def report_chart(name: ReportName, symbol: Annotated[str, Query(pattern=SYMBOL)],
                     limit: Annotated[int, Query(ge=10, le=1000)] = 300) -> dict[str, Any]:
        return report_views.chart(opened(name), symbol=symbol, limit=limit)


def _control_routes(app: FastAPI, backend: DashboardBackend, require_control: Any) -> None:
    controls: dict[str, Any] = {"dependencies": [Depends(require_control)],
                                "responses": COMMON_RESPONSES, "tags": ["control"],
                                "response_model": s.EssView}

    def ess_module() -> Any:
        from quantum.risk import ess

        return ess

    @app.post("/api/control/ess/trip", summary="Trip the emergency stop", **controls)
    def trip(body: s.ControlReason) -> dict[str, Any]:
        state = ess_module().trip(backend.client, body.reason, f"dashboard:{body.operator}")
        return state.model_dump()

    @app.post("/api/control/ess/reset", summary="Reset the emergency stop", **controls)
    def reset(body: s.ControlReason) -> dict[str, Any]:
        state = ess_module().reset(backend.client, body.reason, f"dashboard:{body.operator}")
        return state.model_dump()

    @app.post("/api/control/exit", summary="Force the exit of one open position",
              dependencies=[Depends(require_control)], tags=["control"],
              response_model=s.ExitRequested,
              responses={**COMMON_RESPONSES, 409: {"model": s.Problem,
                                                   "description": "No such open position"}})
    def force_exit(body: s.ExitBody) -> dict[str, Any]:
        from quantum.exits import manual

        try:
            request = manual.request_exit(backend.client, body.position_id, body.reason,
                                          f"dashboard:{body.operator}")
        except manual.ExitRefused as e:
            raise HTTPException(409, str(e)) from None
        return request.model_dump()

    @app.post("/api/control/pause", summary="Pause new entries", **controls)
    def pause(body: s.PauseRequest) -> dict[str, Any]:
        state = ess_module().pause(backend.client, f"dashboard:{body.operator}", body.reason)
        return state.model_dump()

    @app.post("/api/control/resume", summary="Resume new entries", **controls)
    def resume(body: s.PauseRequest) -> dict[str, Any]:
        state = ess_module().resume(backend.client, f"dashboard:{body.operator}", body.reason)
        return state.model_dump()


def _same_origin(websocket: WebSocket) -> bool:
    """A browser always names the page that opens a WebSocket (``Origin``), and no CORS rule
    protects one: a page on another site could otherwise read the live positions through
    the operator's browser. Only the served host itself (scheme aside) may connect; a client
    that sends no Origin (curl, scripts) is not a browser page and goes on to the token."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    host = websocket.headers.get("host", "")
    served = urlsplit(origin).netloc
    return bool(host) and hmac.compare_digest(served.lower().encode(), host.lower().encode())


def _socket_allowed(websocket: WebSocket, options: DashboardOptions) -> bool:
    if not _same_origin(websocket):
        return False
    if not options.read_token:
        return True
    offered = websocket.query_params.get("token", "")
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        offered = header[7:]
    matched = False
    for token in (options.read_token, options.control_token):
        matched |= bool(token) and hmac.compare_digest(offered.encode(), token.encode())
    return matched


async def _serve_socket(websocket: WebSocket, backend: DashboardBackend,
                        options: DashboardOptions, request_metrics: RequestMetrics) -> None:
    """Push the snapshot when it changes, a keepalive otherwise; 1008 closes a foreign Origin
    or a bad token (the same tokens as the REST API's reads)."""
    if not _socket_allowed(websocket, options):
        await websocket.close(code=1008)
        return
    await websocket.accept()
    last: bytes | None = None
    last_sent = 0.0
    try:
        while True:
            try:
                document = await run_in_threadpool(backend.snapshot)
                body = orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS)
            except SOURCE_ERRORS as e:
                body = orjson.dumps({"type": "error", "detail": type(e).__name__})
            now = time.monotonic()
            if body != last:
                await websocket.send_text(body.decode())
                request_metrics.websockets.inc()
                last, last_sent = body, now
            elif now - last_sent >= KEEPALIVE_S:
                await websocket.send_text('{"type":"keepalive"}')
                last_sent = now
            await asyncio.sleep(options.ws_interval_s)
    except (WebSocketDisconnect, RuntimeError):
        return
