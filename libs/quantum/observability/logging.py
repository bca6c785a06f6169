"""JSON logs through structlog, with the trace id of the event being handled bound in.

Everything a service prints goes out as one JSON object a line on stderr (journald keeps
it as is): its own structlog events, records of the standard ``logging`` module (libraries,
uvicorn's error and access logs through :func:`uvicorn_log_config`), warnings, and an
uncaught exception's traceback (as the ``exception`` field of an ``uncaught_exception``
event), in the main thread or any other.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any

import structlog

_SECRET_MARKERS = ("secret", "api_key", "password", "token")
_SERVICE = {"name": ""}  # the configured service, stamped on stdlib records too


def _redact(_: object, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if any(marker in key.lower() for marker in _SECRET_MARKERS):
            event_dict[key] = "***"
    return event_dict


def _add_service(
    _: object, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if _SERVICE["name"]:
        event_dict.setdefault("service", _SERVICE["name"])
    return event_dict


_SHARED: list[Any] = [
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


class JsonFormatter(structlog.stdlib.ProcessorFormatter):
    """A ``logging.Formatter`` writing a stdlib record as the fleet's JSON line (usable in a
    ``logging.config.dictConfig`` as ``{"()": "quantum.observability.logging.JsonFormatter"}``)."""

    def __init__(self, *_: Any, **__: Any) -> None:
        super().__init__(
            foreign_pre_chain=[
                *_SHARED,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                _add_service,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _redact,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )


_HANDLER_NAME = "quantum-json"


def _install_stdlib(level: int) -> None:
    """Route the standard ``logging`` module (root logger) to stderr as JSON, once."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


def _install_excepthooks() -> None:
    """An uncaught exception is logged as one JSON event (then Python exits as it would)."""

    def hook(kind: type[BaseException], value: BaseException,
             tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        structlog.get_logger(service=_SERVICE["name"]).critical(
            "uncaught_exception", exc_info=(kind, value, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        structlog.get_logger(service=_SERVICE["name"]).critical(
            "uncaught_exception", thread=args.thread.name if args.thread else None,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    sys.excepthook = hook
    threading.excepthook = thread_hook


def configure(service: str, level: str = "info") -> structlog.stdlib.BoundLogger:
    """Configure JSON logging to stderr once per process and return the service's logger."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    _SERVICE["name"] = service
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *_SHARED,
            _redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _install_stdlib(numeric)
    _install_excepthooks()
    return structlog.get_logger(service=service)


def uvicorn_log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's ``log_config``: its error and access loggers as JSON lines on stderr."""
    name = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "quantum.observability.logging.JsonFormatter"}},
        "handlers": {
            "json": {"class": "logging.StreamHandler", "formatter": "json",
                     "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["json"], "level": name, "propagate": False},
            "uvicorn.error": {"handlers": [], "level": name, "propagate": True},
            "uvicorn.access": {"handlers": ["json"], "level": name, "propagate": False},
        },
    }
