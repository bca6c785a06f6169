"""The Binance user data stream: order and account updates pushed over a WebSocket.

A background thread holds the connection to ``<ws_url>ws/<listenKey>`` and queues every
event; the service drains the queue on its own loop, so a slow or dead socket never blocks
the runner. When the connection drops the thread reconnects with a bounded back-off and
raises :attr:`UserStream.gap`: updates may have been missed while it was down, so the owner
polls the open orders over REST (the fallback) and clears the flag. A handshake refused
for the key (expired or unknown listen key) sets :attr:`UserStream.key_rejected`; the owner
asks for a new key and hands it over with :meth:`UserStream.use_key`.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import orjson
import structlog
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

log = structlog.get_logger(component="user-stream")


class UserStream:
    """One listen key's event stream, reconnected until :meth:`stop`."""

    def __init__(self, ws_url: str, listen_key: str, *, open_timeout_s: float = 5.0,
                 max_backoff_s: float = 5.0) -> None:
        self.ws_url = ws_url.rstrip("/") + "/"
        self.listen_key = listen_key
        self.open_timeout_s = open_timeout_s
        self.max_backoff_s = max_backoff_s
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.connected = threading.Event()
        self.gap = True  # nothing seen yet: the owner polls once before trusting the stream
        self.key_rejected = False
        self.connects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="user-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def use_key(self, listen_key: str) -> None:
        self.listen_key = listen_key
        self.key_rejected = False

    def drain(self, limit: int = 10_000) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < limit:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                break
        return out

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._session()
                backoff = 0.1
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as e:
                if isinstance(e, InvalidStatus) or (
                        isinstance(e, ConnectionClosed) and e.rcvd is not None
                        and e.rcvd.code == 1008):
                    self.key_rejected = True
                log.warning("user stream down; reconnecting", error=repr(e), backoff_s=backoff)
            self.connected.clear()
            self.gap = True
            self._stop.wait(backoff)
            backoff = min(self.max_backoff_s, backoff * 2)

    def _session(self) -> None:
        url = f"{self.ws_url}ws/{self.listen_key}"
        with connect(url, open_timeout=self.open_timeout_s, close_timeout=1) as socket:
            self.connected.set()
            self.connects += 1
            while not self._stop.is_set():
                try:
                    raw = socket.recv(timeout=0.5)
                except TimeoutError:
                    continue
                try:
                    event = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    log.warning("user stream sent invalid JSON", frame=str(raw)[:200])
                    continue
                if isinstance(event, dict):
                    self.events.put(event)
