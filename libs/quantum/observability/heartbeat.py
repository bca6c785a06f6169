"""Liveness: the heartbeat key other services and operators read, and the systemd watchdog."""

from __future__ import annotations

import os
import socket
import time

import orjson
import redis

from quantum.observability.systemd import Notifier

HEARTBEAT_PREFIX = "quantum:heartbeat:"
STANDBY_PREFIX = "quantum:standby:"


def heartbeat_key(service: str) -> str:
    return HEARTBEAT_PREFIX + service


def standby_key(service: str) -> str:
    """Hash: consumer -> the heartbeat of each standby instance (JSON, like the active's)."""
    return STANDBY_PREFIX + service


class Beacon:
    """``beat()`` each loop turn: pings the watchdog and, once a second, refreshes
    ``quantum:heartbeat:<service>`` (JSON: service, consumer, pid, host, ts) with a TTL.

    Only the active instance writes that key (readers take it as "the service is up"); a
    standby (``active`` False) writes its beat as a field of ``quantum:standby:<service>``
    instead, so ``quantumctl status`` can show it; readers ignore a field whose ``ts`` is
    older than the TTL."""

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
        self.standby_key = standby_key(service)
        self.consumer = consumer
        self.active = True
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
        """The heartbeat refresh as one command (``SET … EX``; a standby's ``HSET``), for a
        caller that needs a write of its own on a given connection (the runner's replica
        probe)."""
        self._beat["ts"] = time.time()
        if not self.active:
            return ("HSET", self.standby_key, self.consumer, orjson.dumps(self._beat))
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
        beat = orjson.dumps(self._beat)
        pipe = self.client.pipeline(transaction=False)
        if self.active:
            pipe.set(self.key, beat, ex=self.ttl_s)
        else:
            pipe.hset(self.standby_key, self.consumer, beat)
            pipe.expire(self.standby_key, self.ttl_s)
        if self.watch_key is not None:
            pipe.get(self.watch_key)
        replies = pipe.execute()
        return (replies[-1],) if self.watch_key is not None else None

    def promoted(self) -> None:
        """This instance became the active one: beat as such now, and leave the standbys."""
        self.active = True
        self.client.hdel(self.standby_key, self.consumer)
        self.beat(force=True)

    def demoted(self) -> None:
        """This instance is (again) a standby."""
        self.active = False
        self._last = 0.0
