"""The active instance of a service: a lease in Redis that one consumer holds at a time.

A service runs on a primary and a standby host (``placement="active-standby"`` in the
registry), both in its consumer group. Only the instance holding ``quantum:lease:<service>``
reads, runs its timers and commits; the other waits, and takes the lease over once the
holder has not renewed it for the heartbeat TTL (its host is gone, it was killed, or it is
partitioned away). The new holder then claims every entry the old one left pending
(``XAUTOCLAIM`` with no idle minimum) and handles it: the group is how the work moves.

The lease's value names its holder (``consumer|host|pid|token``; the token is random per
process, so a restarted process never mistakes an old lease for its own). A holder renews
it every second in one script (:data:`LEASE_SCRIPT`) that also acquires an absent lease.
The commit script checks it too (:data:`quantum.bus.runner.COMMIT_SCRIPT`, ``NOTLEADER``):
a paused holder that lost the lease while it slept cannot commit afterwards.

A process killed on its own host is replaced by systemd within seconds; waiting a whole
TTL for its lease would slow that restart down for nothing. So an instance that finds the
lease held by *its own* consumer name on *its own* host with a process id that no longer
exists takes it at once; any other holder is waited out.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass

import redis

LEASE_PREFIX = "quantum:lease:"

# KEYS[1] the lease; ARGV: my value, TTL (ms), a dead holder's value to replace ("" none).
# Returns {code, holder}: 1 renewed, 2 acquired, 0 held by ``holder``.
LEASE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, current}
end
if not current or (ARGV[3] ~= '' and current == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {2, ARGV[1]}
end
return {0, current}
"""

# KEYS[1] the lease; ARGV[1] my value. Deletes it only if it is still mine.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def lease_key(service: str) -> str:
    return LEASE_PREFIX + service


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, parsed from its value."""

    consumer: str
    host: str
    pid: int
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Holder:
        consumer, host, pid, _token = [*raw.decode(errors="replace").split("|"), "", "", ""][:4]
        try:
            number = int(pid)
        except ValueError:
            number = 0
        return cls(consumer, host, number, raw)


def _process_gone(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, another user's
        return False
    return False


class Lease:
    """One process's claim on ``quantum:lease:<service>``.

    :meth:`renew` (once a second) renews or acquires it and says what changed;
    :meth:`held` is a local check with no round trip: the lease was renewed less than its
    TTL minus a safety margin ago, by this process's monotonic clock, measured from before
    the renewal was sent (so a slow reply never extends it).
    """

    def __init__(self, client: redis.Redis, service: str, consumer: str, ttl_s: float,
                 *, host: str | None = None) -> None:
        self.client = client
        self.key = lease_key(service)
        self.consumer = consumer
        self.host = host or socket.gethostname()
        self.ttl_ms = max(int(ttl_s * 1000), 1000)
        self.margin_s = min(1.0, ttl_s / 4)
        self.value = f"{consumer}|{self.host}|{os.getpid()}|{secrets.token_hex(8)}".encode()
        self._valid_until = 0.0
        self.holder: Holder | None = None  # the last holder seen (None: nobody)
        self._script = client.register_script(LEASE_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)

    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    def renew(self) -> tuple[bool, bool]:
        """Renew or acquire the lease: (held now, acquired by this call). Bus errors
        propagate (the caller treats them as an outage; :meth:`held` then lapses by
        itself)."""
        sent = time.monotonic()
        steal = self._dead_own_holder()
        code, raw = self._script(keys=[self.key],
                                 args=[self.value, self.ttl_ms, steal or b""])
        code = int(code)
        if code:
            self._valid_until = sent + self.ttl_ms / 1000 - self.margin_s
            self.holder = Holder.parse(self.value)
            return True, code == 2
        self._valid_until = 0.0
        self.holder = Holder.parse(raw)
        return False, False

    def _dead_own_holder(self) -> bytes | None:
        """The last holder seen, if it was this very instance (same consumer, same host)
        in a process that no longer exists: a crash systemd restarted."""
        h = self.holder
        if (h is None or h.raw == self.value or h.consumer != self.consumer
                or h.host != self.host or h.pid == os.getpid()):
            return None
        return h.raw if _process_gone(h.pid) else None

    def release(self) -> None:
        """Give the lease up (a clean stop): the standby takes over at its next renewal
        instead of after a TTL. Best effort: an unreachable bus lets it expire instead."""
        self._valid_until = 0.0
        try:
            self._release(keys=[self.key], args=[self.value])
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass
