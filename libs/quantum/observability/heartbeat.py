"""Liveness: the heartbeat key other services and operators read, and the systemd watchdog."""

from __future__ import annotations

import os
import socket
import time

import orjson
import redis

from quantum.observability.systemd import Notifier

HEARTBEAT_PREFIX = "quantum:heartbeat:"


def heartbeat_key(service: str) -> str:
    return HEARTBEAT_PREFIX + service


class Beacon:
    """``beat()`` each loop turn: pings the watchdog and, once a second, refreshes
    ``quantum:heartbeat:<service>`` (JSON: service, consumer, pid, host, ts) with a TTL."""

    def __init__(
        self,
        client: redis.Redis,
        service: str,
        consumer: str,
        ttl_s: int,
        *,
        watch_key: str | None = None,
    ) -> None:
        self.client = client
        self.watch_key = watch_key
        self.key = heartbeat_key(service)
        self.ttl_s = ttl_s
        self.notifier = Notifier()
        self._beat = {
            "service": service,
            "consumer": consumer,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "ts": 0.0,
        }
        self._last = 0.0

    def command(self) -> tuple[str | bytes | int, ...]:
        """The heartbeat refresh as one command (``SET … EX``), for a caller that needs a
        write of its own on a given connection (the runner's replica probe)."""
        self._beat["ts"] = time.time()
        return ("SET", self.key, orjson.dumps(self._beat), "EX", self.ttl_s)

    def beat(self, force: bool = False) -> tuple[bytes | None] | None:
        """Refresh the heartbeat (at most once a second). When it did and a ``watch_key`` is
        set, returns that key's value read in the same round trip (the fleet epoch)."""
        self.notifier.watchdog()
        now = time.time()
        if not force and now - self._last < 1.0:
            return None
        self._last = now
        self._beat["ts"] = now
        if self.watch_key is None:
            self.client.set(self.key, orjson.dumps(self._beat), ex=self.ttl_s)
            return None
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.key, orjson.dumps(self._beat), ex=self.ttl_s)
        pipe.get(self.watch_key)
        return (pipe.execute()[1],)
