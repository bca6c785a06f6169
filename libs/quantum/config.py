"""Typed, frozen settings read from the environment (``QT_*``) and env files.

Every service's settings class derives from :class:`FleetSettings`. A setting with a wrong
type, or a ``QT_*`` variable no settings class declares, stops the service at start with
the key named (:class:`ConfigError`), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from typing import Any, Literal, TypeVar

from pydantic import (  # noqa: F401  (SecretStr re-exported)
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from quantum.bus.connection import check_url, is_sentinel, redact

ENV_PREFIX = "QT_"
EXTERNAL_KEYS = {"QT_TEST_REDIS_URL", "QT_STATE_DIR"}  # read by tools, not by services


def _config_error_line(message: str) -> str:
    """``configuration error: <message>``; a JSON object under systemd (``INVOCATION_ID``
    or ``NOTIFY_SOCKET`` set), whose journal holds nothing but JSON lines."""
    if os.environ.get("INVOCATION_ID") or os.environ.get("NOTIFY_SOCKET"):
        import json

        return json.dumps({"event": "configuration_error", "level": "error",
                           "error": f"configuration error: {message}"})
    return f"configuration error: {message}"


class ConfigError(SystemExit):
    """Refuses to start: the message names the offending key, printed on stderr as one line.
    Exit code 78 (EX_CONFIG), which neither systemd nor the supervisor restarts."""

    def __init__(self, message: str) -> None:
        message = " ".join(str(message).split())  # one line, whatever the cause put in it
        super().__init__(message)
        self.message = message
        self.code = 78
        # A SystemExit with a numeric code prints nothing; an operator reading journalctl
        # must see which key is wrong, so the one line goes to stderr here, once.
        with contextlib.suppress(OSError, ValueError):  # a closed stderr must not mask it
            print(_config_error_line(message), file=sys.stderr, flush=True)

    def __str__(self) -> str:
        return self.message


class FleetSettings(BaseSettings):
    """Settings every service shares.

    Attributes:
        redis_url: where the bus lives: ``redis://host:port/db``, or through Sentinel
            ``redis+sentinel://[:password@]host1:26379,host2:26379,host3:26379/<master>/<db>``
            (:mod:`quantum.bus.connection`); a malformed one is refused at start.
        instance: the consumer instance; consumer names are ``<service>-<instance>``. Empty
            (the default): this host's name, so identical files serve a primary and a
            standby host.
        batch_size: entries read per ``XREADGROUP``.
        block_ms: how long a read waits for new entries.
        claim_idle_ms: entries pending longer than this on another consumer are reclaimed.
        claim_interval_s: how often to look for such entries.
        max_deliveries: deliveries before an entry goes to the dead-letter stream.
        heartbeat_ttl_s: lifetime of the heartbeat key; it is refreshed every second.
        metrics_port: Prometheus port; 0 disables, -1 takes the registry's port.
        log_level: structlog level name.
        clock: ``wall`` in live trading; ``event`` in replay, where "now" is the newest
            event time seen, so replays give the same result at any speed.
        replicas_expected: replicas that must confirm (``WAIT``) the commit recording an
            order intent before the order is sent to the exchange; -1: one behind a
            Sentinel URL (``redis+sentinel://``), none for a single server.
        replica_wait_ms: how long that confirmation may take; without it the order is
            not sent (fail closed) and the service waits for a replica.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, case_sensitive=False
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    instance: str = ""
    batch_size: int = Field(100, ge=1, le=10_000)
    block_ms: int = Field(1000, ge=1, le=60_000)
    claim_idle_ms: int = Field(30_000, ge=10)
    claim_interval_s: float = Field(5.0, gt=0)
    max_deliveries: int = Field(5, ge=1)
    heartbeat_ttl_s: int = Field(15, ge=2)
    metrics_port: int = Field(-1, ge=-1, le=65535)
    log_level: str = "info"
    clock: Literal["wall", "event"] = "wall"
    replicas_expected: int = Field(-1, ge=-1, le=16)
    replica_wait_ms: int = Field(1000, ge=10, le=60_000)

    @field_validator("redis_url")
    @classmethod
    def _bus_url(cls, value: str) -> str:
        check_url(value)  # a ValueError names what is wrong, never a password
        return value

    @property
    def consumer_instance(self) -> str:
        """The instance part of this process's consumer names."""
        return self.instance or socket.gethostname()

    @property
    def replicas_required(self) -> int:
        """Replicas that must hold an order intent before the order leaves."""
        if self.replicas_expected >= 0:
            return self.replicas_expected
        return 1 if is_sentinel(self.redis_url) else 0


S = TypeVar("S", bound=FleetSettings)


def keys_of(*classes: type[FleetSettings]) -> set[str]:
    """The ``QT_*`` environment keys the given settings classes read."""
    return {ENV_PREFIX + name.upper() for cls in classes for name in cls.model_fields}


def load(
    cls: type[S], *, known: set[str] | None = None, env_file: str | None = None, **overrides: Any
) -> S:
    """Build ``cls`` from the environment (and ``env_file``); refuse bad keys or types.

    ``known`` is every ``QT_*`` key any service of the fleet reads (the environment may be
    shared by several services); a ``QT_*`` variable outside it is a typo and is refused.
    """
    allowed = (known or set()) | keys_of(cls)
    unknown = sorted(
        k
        for k in os.environ
        if k.upper().startswith(ENV_PREFIX)
        and k.upper() not in allowed
        and k.upper() not in EXTERNAL_KEYS
    )
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]} (no service declares it)")
    try:
        return cls(_env_file=env_file, **overrides)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        key = ENV_PREFIX + field.upper() if field else "?"
        given = first.get("input")
        if isinstance(given, str) and "://" in given:
            given = redact(given)  # a URL's password never reaches a log
        raise ConfigError(f"bad setting {key}: {first['msg']} (got {given!r})") from None
