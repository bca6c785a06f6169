"""The one way to reach the bus: a Redis client for ``QT_REDIS_URL``, direct or via Sentinel.

Every process of the fleet (services, ``quantumctl``, the dashboard, the journal, the replay
orchestrator, timers) builds its client with :func:`connect`, so all of them follow a
failover the same way.

Accepted forms:

* ``redis://[[user]:password@]host[:port][/db]``, ``rediss://…`` and ``unix://…``: one
  server, as redis-py reads them;
* ``redis+sentinel://[[user]:password@]host1:26379,host2:26379,host3:26379/<master>[/<db>]``
  ``[?option=value&…]``: the master that the Sentinels name ``<master>``, found by asking
  them (redis-py's :class:`redis.sentinel.Sentinel` and ``master_for``). A host without a
  port means 26379. The user and password are the data nodes'; the options are
  ``socket_timeout`` and ``socket_connect_timeout`` (seconds, for the data nodes and the
  Sentinels), ``sentinel_username`` and ``sentinel_password`` (when the Sentinels require
  their own), ``min_other_sentinels`` (a Sentinel that sees fewer peers is not believed).

Behind a Sentinel URL every new connection asks a Sentinel where the master is; a
connection that meets ``READONLY`` (the server it talks to was demoted to a replica) is
dropped and raises :class:`redis.ConnectionError`, so callers see a failover as the bus
being briefly unreachable (:func:`quantum.bus.runner.bus_unavailable`) and reconnect, never
as data. A URL that cannot be read raises :class:`ValueError` whose text never holds a
password; settings turn it into a configuration error with the key named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
_SENTINEL_OPTIONS = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "sentinel_username": str,
    "sentinel_password": str,
    "min_other_sentinels": int,
}


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    socket_timeout: float | None = None
    socket_connect_timeout: float | None = None
    min_other_sentinels: int = 0


def is_sentinel(url: str) -> bool:
    return url.strip().lower().startswith(SENTINEL_SCHEME + "://")


def parse_sentinel(url: str) -> SentinelTarget:
    """Read a ``redis+sentinel://`` URL; :class:`ValueError` (no secret in it) when malformed."""
    if not is_sentinel(url):
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    parts = urlsplit(url.strip())
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, password = _userinfo(userinfo)
    if not hostlist:
        raise ValueError("no Sentinel host (expected host1:26379,host2:26379,…)")
    sentinels = tuple(_host_port(item) for item in hostlist.split(","))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("no master name (expected …/<master name>[/<db>])")
    if len(path) > 2:
        raise ValueError(f"too many path segments {'/'.join(path)!r} (expected <master>/<db>)")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError(f"database {path[1]!r} is not a number")
        db = int(path[1])
    options: dict[str, Any] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        kind = _SENTINEL_OPTIONS.get(name)
        if kind is None:
            raise ValueError(
                f"unknown option {name!r} (known: {', '.join(sorted(_SENTINEL_OPTIONS))})"
            )
        try:
            options[name] = kind(values[-1])
        except ValueError:
            raise ValueError(f"option {name} is not a {kind.__name__}") from None
        if kind is float and not options[name] > 0:
            raise ValueError(f"option {name} must be positive")
    return SentinelTarget(sentinels=sentinels, master=unquote(path[0]), db=db,
                          username=username, password=password, **options)


def check_url(url: str) -> None:
    """Raise :class:`ValueError` (without any secret) unless ``url`` is a usable bus URL."""
    if is_sentinel(url):
        parse_sentinel(url)
        return
    try:
        redis.connection.parse_url(url)
    except ValueError as e:
        raise ValueError(str(e).replace(url, redact(url))) from None


def connect(
    url: str,
    *,
    socket_timeout: float | None = None,
    socket_connect_timeout: float | None = 3.0,
    **kwargs: Any,
) -> redis.Redis:
    """A client of the bus at ``url``. Timeouts in the URL win over the arguments; other
    keyword arguments (``health_check_interval``, ``decode_responses``…) go to the client.
    Nothing is sent yet: an unreachable server shows up at the first command."""
    if not is_sentinel(url):
        check_url(url)
        return redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                    socket_connect_timeout=socket_connect_timeout, **kwargs)
    target = parse_sentinel(url)
    timeout = target.socket_timeout or socket_timeout
    connect_timeout = target.socket_connect_timeout or socket_connect_timeout
    sentinel_kwargs: dict[str, Any] = {
        # A Sentinel answers at once or not at all: never wait on it for long.
        "socket_timeout": min(timeout or 5.0, 5.0),
        "socket_connect_timeout": min(connect_timeout or 3.0, 3.0),
    }
    if target.sentinel_username:
        sentinel_kwargs["username"] = target.sentinel_username
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    manager = Sentinel(list(target.sentinels), min_other_sentinels=target.min_other_sentinels,
                       sentinel_kwargs=sentinel_kwargs)
    client: redis.Redis = manager.master_for(
        target.master, redis_class=redis.Redis, db=target.db, username=target.username,
        password=target.password, socket_timeout=timeout,
        socket_connect_timeout=connect_timeout, **kwargs,
    )
    return client


def master_address(client: redis.Redis) -> tuple[str, int] | None:
    """Where a Sentinel client's master is now (asking the Sentinels); None for a client of
    one server. Raises :class:`redis.ConnectionError` when no Sentinel names a master."""
    pool = client.connection_pool
    discover = getattr(pool, "get_master_address", None)
    if discover is None:
        return None
    host, port = discover()
    return str(host), int(port)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    _userinfo_part, at, hosts = netloc.rpartition("@")
    if at:
        netloc = f"***@{hosts}"
    query_free, q, query = tail.partition("?")
    if q:
        kept = [
            item if not item.split("=", 1)[0].endswith("password") else
            item.split("=", 1)[0] + "=***"
            for item in query.split("&")
        ]
        tail = query_free + "?" + "&".join(kept)
    return f"{scheme}://{netloc}{slash}{tail}"


def _userinfo(text: str) -> tuple[str | None, str | None]:
    if not text:
        return None, None
    user, colon, password = text.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def _host_port(item: str) -> tuple[str, int]:
    item = item.strip()
    if not item:
        raise ValueError("an empty Sentinel host in the list")
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError(f"Sentinel {item!r} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"Sentinel {host!r} has a bad port {port_text!r}")
    return host, int(port_text)
