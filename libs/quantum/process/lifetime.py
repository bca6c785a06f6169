"""Children that die with their parent: no orphaned service or private Redis, ever.

``quantumctl up`` and ``quantumctl replay`` start the fleet (and maybe a Redis) as child
processes. Each child starts in a session of its own (so a terminal's Ctrl-C reaches the
parent, which stops them in order), which also means nothing ends them if the parent is
killed outright (``kill -9``). On Linux the kernel can: ``PR_SET_PDEATHSIG`` asks it to
send the child a signal when its parent dies. Elsewhere this is a no-op.

The signal is tied to the *thread* that forked the child, so children must be started from
a thread that lives as long as the parent wants them: the supervisor forks every child from
its monitor thread, which never ends while a child of its own is alive.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1

try:
    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    _prctl = _libc.prctl if _libc is not None else None
except (OSError, AttributeError):  # pragma: no cover - no libc prctl
    _prctl = None


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets ``signum`` when this
    process dies. None where the platform cannot do it."""
    if _prctl is None:
        return None
    parent = os.getpid()
    prctl = _prctl

    def arm() -> None:  # runs in the child between fork and exec: no allocation, no imports
        prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return arm
