"""``GET /api/v1/model/supervision``: the model supervisor's findings (``ai.supervisor``) as
the journal recorded them — direction bias, feature drift, model swapped or refused, members
missing — newest first. JSON only; the page decides how to show it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel

from quantum.dashboard.backend import DashboardBackend
from quantum.dashboard.schemas import Problem
from quantum.journal import books


class Finding(BaseModel):
    ts: int
    kind: str
    severity: str
    detail: str
    model_version: str
    data: dict[str, Any]


class Findings(BaseModel):
    items: list[Finding]


RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No bearer credential"},
    403: {"model": Problem, "description": "The credential is not accepted"},
    503: {"model": Problem, "description": "The journal database is unavailable"},
}


def install(app: FastAPI, backend: DashboardBackend, require_read: Any) -> None:
    guarded = [Depends(require_read)] if backend.options.read_token else []

    @app.get("/api/v1/model/supervision", response_model=Findings, tags=["read"],
             dependencies=guarded, responses=RESPONSES,
             summary="The model supervisor's findings, newest first")
    def findings(limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                 since: Annotated[int | None, Query(ge=0, le=10**15)] = None,
                 ) -> dict[str, Any]:
        return {"items": books.supervision(backend.journal(), limit=limit, since_ms=since)}
