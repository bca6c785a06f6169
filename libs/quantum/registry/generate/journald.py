"""The journald drop-in: ``deploy/journald/quantum.conf``, installed as
``/etc/systemd/journald.conf.d/quantum.conf`` by ``scripts/install.sh``.

journald's settings are host-wide (a drop-in cannot scope them to the fleet's units), so
they are sized for a small VPS whose journal is mostly the fleet's: a persistent journal
capped in size and age, and a rate limit per unit generous enough for a replay's burst
(a service that exceeds it loses lines, and journald logs how many it suppressed).
"""

from __future__ import annotations

from quantum.registry.generate.common import DO_NOT_EDIT, GENERATED_BY

JOURNALD_DROPIN = "deploy/journald/quantum.conf"
JOURNALD_TARGET = "/etc/systemd/journald.conf.d/quantum.conf"
MAX_USE = "1G"  # the whole persistent journal
KEEP_FREE = "2G"  # never fill the disk below this
MAX_FILE = "64M"
RETENTION = "30day"
RATE_INTERVAL = "30s"
RATE_BURST = 20000  # lines per unit per interval


def render_journald() -> str:
    lines = [
        f"# {GENERATED_BY}",
        f"# {DO_NOT_EDIT}",
        f"# Installed as {JOURNALD_TARGET}; applies to the whole host's journal.",
        "[Journal]",
        "Storage=persistent",
        "Compress=yes",
        f"SystemMaxUse={MAX_USE}",
        f"SystemKeepFree={KEEP_FREE}",
        f"SystemMaxFileSize={MAX_FILE}",
        f"MaxRetentionSec={RETENTION}",
        f"RateLimitIntervalSec={RATE_INTERVAL}",
        f"RateLimitBurst={RATE_BURST}",
    ]
    return "\n".join(lines) + "\n"
