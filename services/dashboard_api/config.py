"""dashboard-api settings: where it listens, what it reads, who may steer."""

from __future__ import annotations

from pydantic import Field

from quantum.config import FleetSettings, SecretStr


class Settings(FleetSettings):
    """Attributes:
    database_url: SQLAlchemy URL of the journal (the journal service's setting, shared);
        empty = SQLite: journal.sqlite in systemd's STATE_DIRECTORY (/var/lib/quantum), else
        var/journal.sqlite under the working directory.
    http_host: address to bind; loopback by default, put a TLS proxy in front to expose it.
    http_port: HTTP port of the API, the web page and /metrics; -1 takes the registry's port
        (the inherited metrics_port is not used: /metrics is served on this port).
    control_token: bearer token for ESS trip/reset and pause/resume; empty refuses control.
    read_token: bearer token required on every read when set; empty leaves reads open (on
        loopback).
    ws_interval_s: how often the WebSocket looks for changes to push.
    supervisor_state_file: the local supervisor's state file (pid, restarts) for the health
        views; empty or missing = not supervised locally (systemd).
    reports_dir: the directory of finished replay and backtest reports (``quantumctl replay
        --report``) the page can open; empty = none.
    alert_webhook_token: bearer token Alertmanager sends to /api/v1/notify/alertmanager;
        empty refuses the receiver.
    notify_telegram_token: Telegram bot token alerts and summaries are sent with (with
        notify_telegram_chat_id); empty: no Telegram.
    notify_telegram_chat_id: the Telegram chat (user, group or channel id) to write to.
    notify_telegram_api: base URL of Telegram's Bot API.
    notify_webhook_url: a chat webhook (Slack, Mattermost …) that takes {"text": …};
        empty: none.
    """

    database_url: SecretStr = SecretStr("")
    http_host: str = "127.0.0.1"
    http_port: int = Field(-1, ge=-1, le=65535)
    control_token: SecretStr = SecretStr("")
    read_token: SecretStr = SecretStr("")
    ws_interval_s: float = Field(1.0, gt=0, le=60)
    supervisor_state_file: str = "var/run/supervisor.json"
    reports_dir: str = "reports"
    alert_webhook_token: SecretStr = SecretStr("")
    notify_telegram_token: SecretStr = SecretStr("")
    notify_telegram_chat_id: str = ""
    notify_telegram_api: str = "https://api.telegram.org"
    notify_webhook_url: SecretStr = SecretStr("")
