"""sd_notify: tell systemd the service is ready, alive (watchdog) and stopping.

A no-op outside systemd (no ``NOTIFY_SOCKET``), so the same code runs under the local
launcher and in tests.
"""

from __future__ import annotations

import os
import time

import sdnotify


class Notifier:
    def __init__(self) -> None:
        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self._enabled else None
        self._last_watchdog = 0.0

    def _send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)

    def ready(self) -> None:
        self._send("READY=1")

    def watchdog(self) -> None:
        """Ping the watchdog, at most ten times a second."""
        now = time.monotonic()
        if now - self._last_watchdog >= 0.1:
            self._last_watchdog = now
            self._send("WATCHDOG=1")

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def stopping(self) -> None:
        self._send("STOPPING=1")
