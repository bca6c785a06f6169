"""sd_notify: tell systemd the service is ready, alive (watchdog) and stopping.

A no-op outside systemd (no ``NOTIFY_SOCKET``), so the same code runs under the local
launcher and in tests.
"""

from __future__ import annotations

import os
import time

import sdnotify

SEND_TIMEOUT_SECONDS = 0.5


class Notifier:
    def __init__(self) -> None:
        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self._enabled else None
        if self._notifier is not None and self._notifier.socket is not None:
            # A receiver that stops reading (a full queue) must not hang the service in
            # send: a message is given up after this long (sdnotify ignores the error).
            self._notifier.socket.settimeout(SEND_TIMEOUT_SECONDS)
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


class NotifySocket:
    """The receiving end of ``sd_notify``, as systemd's: a unix datagram socket whose path a
    child gets as ``NOTIFY_SOCKET``. Lets a test (or a local run) see ``READY=1``,
    ``WATCHDOG=1`` and ``STOPPING=1`` without systemd. Each message is kept with the
    sender's pid (``SO_PASSCRED``) and its arrival time (monotonic)."""

    def __init__(self, path: str) -> None:
        import socket

        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.bind(path)
        self._sock.setblocking(False)
        self.messages: list[tuple[int, float, str]] = []  # (pid, monotonic time, line)

    def drain(self, timeout: float = 0.0) -> list[tuple[int, float, str]]:
        """Read what has arrived (waiting up to ``timeout`` for the first datagram); returns
        the new messages, one per ``KEY=value`` line, and keeps them in :attr:`messages`."""
        import select
        import socket
        import struct

        new: list[tuple[int, float, str]] = []
        wait = timeout
        while select.select([self._sock], [], [], wait)[0]:
            wait = 0.0
            data, ancillary, _, _ = self._sock.recvmsg(4096, socket.CMSG_SPACE(12))
            pid = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            now = time.monotonic()
            for line in data.decode(errors="replace").splitlines():
                new.append((pid, now, line))
        self.messages += new
        return new

    def seen(self, pid: int, line: str) -> list[float]:
        """When ``pid`` sent ``line`` (e.g. ``READY=1``), from what was drained."""
        return [at for sender, at, text in self.messages if sender == pid and text == line]

    def close(self) -> None:
        self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
