"""Typed, frozen settings read from the environment (``QT_*``) and env files.

Every service's settings class derives from :class:`FleetSettings`. A setting with a wrong
type, or a ``QT_*`` variable no settings class declares, stops the service at start with
the key named (:class:`ConfigError`), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, TypeVar

from pydantic import Field, SecretStr, ValidationError  # noqa: F401  (SecretStr re-exported)
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "QT_"


class ConfigError(SystemExit):
    """Refuses to start: the message names the offending key. Exit code 78 (EX_CONFIG)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = 78

    def __str__(self) -> str:
        return self.message


class FleetSettings(BaseSettings):
    """Settings every service shares.

    Attributes:
        redis_url: where the bus lives.
        instance: the consumer instance; consumer names are ``<service>-<instance>``.
        batch_size: entries read per ``XREADGROUP``.
        block_ms: how long a read waits for new entries.
        claim_idle_ms: entries pending longer than this on another consumer are reclaimed.
        claim_interval_s: how often to look for such entries.
        max_deliveries: deliveries before an entry goes to the dead-letter stream.
        heartbeat_ttl_s: lifetime of the heartbeat key; it is refreshed every second.
        metrics_port: Prometheus port; 0 disables, -1 takes the registry's port.
        log_level: structlog level name.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, case_sensitive=False
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    instance: str = "0"
    batch_size: int = Field(100, ge=1, le=10_000)
    block_ms: int = Field(1000, ge=1, le=60_000)
    claim_idle_ms: int = Field(30_000, ge=10)
    claim_interval_s: float = Field(5.0, gt=0)
    max_deliveries: int = Field(5, ge=1)
    heartbeat_ttl_s: int = Field(15, ge=2)
    metrics_port: int = Field(-1, ge=-1, le=65535)
    log_level: str = "info"

    known_classes: ClassVar[list[type[FleetSettings]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        FleetSettings.known_classes.append(cls)


S = TypeVar("S", bound=FleetSettings)


def known_keys() -> set[str]:
    keys = set(FleetSettings.model_fields)
    for cls in FleetSettings.known_classes:
        keys.update(cls.model_fields)
    return {ENV_PREFIX + k.upper() for k in keys}


def load(cls: type[S], *, env_file: str | None = None, **overrides: Any) -> S:
    """Build ``cls`` from the environment (and ``env_file``); refuse bad keys or types."""
    unknown = sorted(k for k in os.environ if k.upper().startswith(ENV_PREFIX)
                     and k.upper() not in known_keys())
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]} (no service declares it)")
    try:
        return cls(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        key = ENV_PREFIX + field.upper() if field else "?"
        raise ConfigError(f"bad setting {key}: {first['msg']} (got {first.get('input')!r})") from None
