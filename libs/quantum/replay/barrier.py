"""The replay barrier: wait until the fleet has fully handled what was published.

Replay runs in event time. Outcomes must not depend on how fast each service happens to
run, so the replay source publishes one step, then waits until every consumer group of
every stream is *quiescent*: nothing undelivered (its last-delivered id is the stream's
last id) and nothing pending (delivered, not acked). Because a runner writes its outputs
and its acks in one ``MULTI/EXEC``, a quiescent fleet has no work in flight anywhere: the
consequences of the step, however many hops long, have all been handled.

The check is one Lua script (one round trip, a tiny reply) that reads ``XINFO GROUPS`` and
the last entry id of every stream server-side and returns the first busy group, if any.
In replay every runner also ``PUBLISH``-es on a channel inside its commit transaction; the
barrier waits on that channel between checks, so it re-checks right after each commit
instead of sleeping blindly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis


class BarrierTimeout(RuntimeError):
    """The fleet did not drain in time; names the groups still busy."""


@dataclass(frozen=True)
class GroupState:
    stream: str
    group: str
    pending: int
    undelivered: bool


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


# KEYS: stream keys. ARGV: "1" when a missing group counts as idle, else "0"; then per
# stream, the number of groups and their names.
# Returns {} when every group is quiescent, else {stream, group, pending} of the first busy one.
_BUSY_SCRIPT = """
local function older(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end
local missing_ok = ARGV[1] == '1'
local arg = 2
for _, key in ipairs(KEYS) do
  local count = tonumber(ARGV[arg]); arg = arg + 1
  local wanted = {}
  for _ = 1, count do wanted[ARGV[arg]] = true; arg = arg + 1 end
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  local last_id = '0-0'
  if last[1] then last_id = last[1][1] end
  local groups = redis.pcall('XINFO', 'GROUPS', key)
  local found = 0
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local name, pending, delivered
      for k = 1, #g, 2 do
        if g[k] == 'name' then name = g[k + 1]
        elseif g[k] == 'pending' then pending = g[k + 1]
        elseif g[k] == 'last-delivered-id' then delivered = g[k + 1] end
      end
      if wanted[name] then
        found = found + 1
        if pending > 0 or older(delivered, last_id) then return {key, name, pending} end
      end
    end
  end
  if found < count and not missing_ok then return {key, 'missing group', 0} end
end
return {}
"""


class Barrier:
    """Quiescence of a set of (stream key, group) pairs."""

    def __init__(
        self,
        client: redis.Redis,
        pairs: Iterable[tuple[str, str]],
        channel: str | None = None,
        missing_ok: bool = False,
    ) -> None:
        self.client = client
        self._pubsub = None
        if channel is not None:
            self._pubsub = client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(channel)
        self.pairs = sorted(set(pairs))
        self.streams = sorted({stream for stream, _ in self.pairs})
        self.checks = 0
        self.wait_seconds = 0.0
        self._script = client.register_script(_BUSY_SCRIPT)
        self._argv: list[str | int] = ["1" if missing_ok else "0"]
        for stream in self.streams:
            groups = [g for s, g in self.pairs if s == stream]
            self._argv += [len(groups), *groups]

    def first_busy(self) -> GroupState | None:
        """One round trip: the first group with undelivered or pending entries, if any."""
        self.checks += 1
        reply = self._script(keys=self.streams, args=self._argv)
        if not reply:
            return None
        return GroupState(_text(reply[0]), _text(reply[1]), int(reply[2]), True)

    def states(self) -> list[GroupState]:
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_groups(stream)
            pipe.xrevrange(stream, count=1)
        replies = pipe.execute(raise_on_error=False)
        wanted = set(self.pairs)
        out: list[GroupState] = []
        for index, stream in enumerate(self.streams):
            groups, last = replies[2 * index], replies[2 * index + 1]
            if isinstance(groups, Exception):
                groups = []
            last_id = (
                _id_tuple(_text(last[0][0])) if last and not isinstance(last, Exception) else (0, 0)
            )
            seen = set()
            for g in groups:
                name = _text(g["name"])
                if (stream, name) not in wanted:
                    continue
                seen.add(name)
                delivered = _id_tuple(_text(g["last-delivered-id"]))
                out.append(GroupState(stream, name, int(g["pending"]), delivered < last_id))
            for stream_key, group in self.pairs:
                if stream_key == stream and group not in seen:
                    out.append(GroupState(stream, group, 0, True))  # group missing: not ready
        return out

    def busy(self) -> list[GroupState]:
        """Every busy group (diagnostics; :meth:`wait` uses the cheaper :meth:`first_busy`)."""
        return [s for s in self.states() if s.pending or s.undelivered]

    def wait(self, timeout: float = 120.0, *, tick: Callable[[], None] | None = None,
             stop: Callable[[], bool] | None = None) -> bool:
        """Block until quiescent (True); raise :class:`BarrierTimeout` after ``timeout``
        seconds. ``tick`` is called on every check (a waiting process is alive: the
        watchdog); once ``stop()`` is true the wait gives up and returns False."""
        started = time.perf_counter()
        sleep = 0.0
        if self._pubsub is not None:
            while self._pubsub.get_message(timeout=0) is not None:
                pass  # commits before this wait are covered by the first check
        while True:
            if self.first_busy() is None:
                self.wait_seconds += time.perf_counter() - started
                return True
            if tick is not None:
                tick()
            if stop is not None and stop():
                self.wait_seconds += time.perf_counter() - started
                return False
            elapsed = time.perf_counter() - started
            if elapsed > timeout:
                busy = self.busy()
                names = ", ".join(f"{s.group}@{s.stream}(pending={s.pending})" for s in busy)
                raise BarrierTimeout(f"fleet did not drain within {timeout:.0f}s: {names}")
            if self._pubsub is not None:
                self._pubsub.get_message(timeout=0.005)  # the next commit, or a 5 ms re-check
                while self._pubsub.get_message(timeout=0) is not None:
                    pass
                continue
            if sleep:
                time.sleep(sleep)
            sleep = min(0.002, sleep * 2 if sleep else 0.0001)


class Settlement:
    """On the event clock, wait until a bar's prices are settled before acting on it.

    Used by sizing and risk: an intent of bar T must see the portfolio after bar T's fills,
    funding and exits. The replay publishes a bar's ticks before its klines, so once the
    settling groups (execution, exit-brain) are quiescent, bar T is settled. On the wall
    clock (live) there is nothing to wait for: the portfolio is whatever it is now.
    """

    def __init__(
        self,
        client: redis.Redis,
        pairs: Iterable[tuple[str, str]],
        enabled: bool,
        channel: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        # A group that does not exist belongs to a service that is not part of this fleet
        # (the replay creates every group before the first bar): nothing to wait for.
        self.barrier = Barrier(client, pairs, channel, missing_ok=True) if enabled else None
        self.timeout = timeout

    def wait(self) -> None:
        if self.barrier is not None:
            self.barrier.wait(self.timeout)
