"""Where messages go: Telegram's Bot API and generic chat webhooks (Slack, Mattermost,
Rocket.Chat, Discord-compatible: a JSON body with ``text``).

Secrets (the bot token is part of Telegram's URL; a webhook URL is its own secret) are held
out of ``repr`` and never appear in an error or a log line: failures name the channel and
the HTTP status or the error class only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import structlog

TELEGRAM_API = "https://api.telegram.org"
TELEGRAM_LIMIT = 4096  # characters in one sendMessage text
TIMEOUT_S = 10.0

log = structlog.get_logger("notify")
# httpx logs every request's URL at INFO, and Telegram's URL holds the bot token.
logging.getLogger("httpx").setLevel(logging.WARNING)


class DeliveryError(Exception):
    """A message could not be delivered; the text names the channel, never a secret."""


class Channel(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, text: str) -> None: ...


def _post(name: str, url: str, body: dict[str, Any], timeout_s: float) -> httpx.Response:
    try:
        return httpx.post(url, json=body, timeout=timeout_s)
    except httpx.HTTPError as e:
        raise DeliveryError(f"{name}: {type(e).__name__}") from None


@dataclass(frozen=True)
class Telegram:
    """``POST {api}/bot{token}/sendMessage`` with ``chat_id`` and the text (plain text: no
    parse mode, so nothing in an alert can break the markup)."""

    token: str = field(repr=False)
    chat_id: str
    api: str = TELEGRAM_API
    timeout_s: float = TIMEOUT_S
    name: str = "telegram"

    def send(self, text: str) -> None:
        url = f"{self.api.rstrip('/')}/bot{self.token}/sendMessage"
        body = {"chat_id": self.chat_id, "text": text[:TELEGRAM_LIMIT],
                "disable_web_page_preview": True}
        response = _post(self.name, url, body, self.timeout_s)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code != 200 or not isinstance(answer, dict) or not answer.get("ok"):
            description = str(answer.get("description", ""))[:200] if isinstance(
                answer, dict) else ""
            raise DeliveryError(f"telegram answered {response.status_code}"
                                + (f": {description}" if description else ""))


@dataclass(frozen=True)
class ChatWebhook:
    """``POST url`` with ``{"text": …}``; any 2xx is delivered."""

    url: str = field(repr=False)
    timeout_s: float = TIMEOUT_S
    name: str = "webhook"

    def send(self, text: str) -> None:
        response = _post(self.name, self.url, {"text": text}, self.timeout_s)
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"webhook answered {response.status_code}")


@dataclass(frozen=True)
class Notifier:
    """Sends each message to every configured channel; raises when any of them failed (so
    Alertmanager retries the notification), after trying all."""

    channels: Sequence[Channel] = ()

    @classmethod
    def from_settings(cls, *, telegram_token: str = "", telegram_chat_id: str = "",
                      telegram_api: str = TELEGRAM_API, webhook_url: str = "") -> Notifier:
        channels: list[Channel] = []
        if telegram_token and telegram_chat_id:
            channels.append(Telegram(telegram_token, telegram_chat_id, telegram_api))
        if webhook_url:
            channels.append(ChatWebhook(webhook_url))
        return cls(tuple(channels))

    @property
    def configured(self) -> bool:
        return bool(self.channels)

    def send(self, text: str) -> int:
        """Deliver ``text``; the number of channels reached. No channel: nothing to do."""
        failures: list[str] = []
        for channel in self.channels:
            try:
                channel.send(text)
            except DeliveryError as e:
                failures.append(str(e))
                log.warning("notification not delivered", channel=channel.name, error=str(e))
        if failures:
            raise DeliveryError("; ".join(failures))
        return len(self.channels)
