"""dashboard-api entry point: settings, logging, then uvicorn on the configured address."""

from __future__ import annotations

from pathlib import Path

import uvicorn

from quantum.config import load
from quantum.dashboard.app import create_app
from quantum.dashboard.backend import DashboardOptions
from quantum.journal.database import resolve_url
from quantum.notify.channels import Notifier
from quantum.observability import logging as qlog
from quantum.registry.fleet import all_setting_keys, service
from services.dashboard_api.config import Settings

NAME = "dashboard-api"


def main() -> None:
    spec = service(NAME)
    settings = load(Settings, known=all_setting_keys())
    log = qlog.configure(NAME, settings.log_level)
    options = DashboardOptions(
        redis_url=settings.redis_url,
        database_url=resolve_url(settings.database_url.get_secret_value()),
        control_token=settings.control_token.get_secret_value(),
        read_token=settings.read_token.get_secret_value(),
        ws_interval_s=settings.ws_interval_s,
        supervisor_state_file=Path(settings.supervisor_state_file)
        if settings.supervisor_state_file else None,
        instance=settings.consumer_instance,
        heartbeat_ttl_s=settings.heartbeat_ttl_s,
        reports_dir=Path(settings.reports_dir) if settings.reports_dir else None,
        notifier=Notifier.from_settings(
            telegram_token=settings.notify_telegram_token.get_secret_value(),
            telegram_chat_id=settings.notify_telegram_chat_id,
            telegram_api=settings.notify_telegram_api,
            webhook_url=settings.notify_webhook_url.get_secret_value()),
        alert_webhook_token=settings.alert_webhook_token.get_secret_value(),
    )
    port = spec.port if settings.http_port == -1 else settings.http_port
    log.info("starting", host=settings.http_host, port=port,
             control="enabled" if options.control_token else "disabled",
             read_auth="required" if options.read_token else "open",
             notify=[c.name for c in options.notifier.channels] if options.notifier else [])
    uvicorn.run(create_app(options), host=settings.http_host, port=port,
                log_level=settings.log_level.lower(), access_log=False, proxy_headers=False,
                server_header=False, ws="auto",
                log_config=qlog.uvicorn_log_config(settings.log_level))  # JSON, like the rest


if __name__ == "__main__":
    main()
