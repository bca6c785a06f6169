"""A JSON excepthook for the moments before logging is configured (standard library only:
it must work when a dependency is the thing that failed to import)."""

from __future__ import annotations

import json
import sys
import time
import traceback
from types import TracebackType


def _hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    record = {
        "event": "uncaught_exception",
        "level": "critical",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "exception": "".join(traceback.format_exception(kind, value, tb)).rstrip(),
    }
    sys.stderr.write(json.dumps(record) + "\n")
    sys.stderr.flush()


def install() -> None:
    sys.excepthook = _hook
