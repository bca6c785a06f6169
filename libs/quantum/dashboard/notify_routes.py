"""The dashboard's notification route: Alertmanager's webhook receiver.

``POST /api/v1/notify/alertmanager`` takes Alertmanager's webhook document (version 4),
writes one plain-text message per notification and sends it through the configured
:class:`~quantum.notify.channels.Notifier` (Telegram, a chat webhook). An ESS trip among the
alerts is told first, with the reason, evaluator and time read from the ESS state itself.
The route needs ``Authorization: Bearer <QT_ALERT_WEBHOOK_TOKEN>`` (Alertmanager's
``http_config.authorization``) and refuses everything while no token is set. A message that
could not be delivered answers 502, so Alertmanager retries it: nothing is dropped quietly.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from quantum.dashboard.backend import DashboardBackend
from quantum.dashboard.schemas import Problem
from quantum.notify import messages
from quantum.notify.channels import DeliveryError, Notifier

log = structlog.get_logger(service="dashboard-api")
bearer = HTTPBearer(auto_error=False, description="Bearer token (QT_ALERT_WEBHOOK_TOKEN)")


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str = Field(max_length=16)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str = Field("", max_length=64)  # Alertmanager's field name


class Notification(BaseModel):
    """Alertmanager's webhook body (the fields used; the rest is ignored)."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field(max_length=8)
    status: str = Field(max_length=16)
    receiver: str = Field("", max_length=200)
    alerts: list[Alert] = Field(max_length=1000)


RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No bearer credential"},
    403: {"model": Problem, "description": "Not the webhook token, or none is configured"},
    502: {"model": Problem, "description": "A channel refused or could not be reached "
                                           "(Alertmanager retries)"},
    503: {"model": Problem, "description": "No notification channel is configured"},
}


class Delivered(BaseModel):
    delivered: int
    alerts: int


def install(app: FastAPI, backend: DashboardBackend, notifier: Notifier | None,
            token: str) -> None:
    """Add the Alertmanager receiver to ``app``."""

    def authorised(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                          Depends(bearer)]) -> None:
        if credentials is None or not credentials.credentials:
            raise HTTPException(401, "authentication required",
                                headers={"WWW-Authenticate": "Bearer"})
        if not token or not hmac.compare_digest(credentials.credentials.encode(),
                                                token.encode()):
            raise HTTPException(403, "forbidden")

    @app.post("/api/v1/notify/alertmanager", response_model=Delivered, tags=["notify"],
              dependencies=[Depends(authorised)], responses=RESPONSES,
              summary="Alertmanager webhook: forward the alerts to Telegram or a chat webhook")
    async def alertmanager(body: Notification) -> dict[str, Any]:
        if notifier is None or not notifier.configured:
            raise HTTPException(503, "no notification channel is configured")
        document = body.model_dump()
        ess = None
        if any(a.labels.get("alertname") == messages.ESS_ALERT for a in body.alerts):
            from quantum.dashboard import live

            ess = await run_in_threadpool(live.ess_state, backend.client)
        text = messages.alertmanager_text(document, ess)
        try:
            delivered = await run_in_threadpool(notifier.send, text)
        except DeliveryError as e:
            raise HTTPException(502, f"not delivered: {e}") from None
        log.info("alerts forwarded", alerts=len(body.alerts), status=body.status,
                 channels=delivered)
        return {"delivered": delivered, "alerts": len(body.alerts)}
