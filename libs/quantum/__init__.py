"""Quantum Trader: an event-driven crypto futures trading fleet on Redis Streams."""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("INVOCATION_ID") or _os.environ.get("NOTIFY_SOCKET"):
    # Under systemd (or anything speaking its notify protocol) the journal gets only JSON:
    # an exception raised before a service configures its logging (an import that fails)
    # is one JSON line too. quantum.observability.logging.configure replaces this later.
    from quantum.observability.early import install as _install_early_excepthook

    _install_early_excepthook()
