"""The systemd target: ``deploy/systemd/quantum-trader.target``.

One unit that wants every service of the registry, so ``systemctl enable --now`` of the
target starts the whole fleet after the network and Redis, and each service unit's
``PartOf=`` stops and restarts it with the target.
"""

from __future__ import annotations

from collections.abc import Sequence

from quantum.registry.fleet import ServiceSpec
from quantum.registry.generate.common import DO_NOT_EDIT, GENERATED_BY, INSTALL_ROOT, REDIS_UNITS


def render_target(services: Sequence[ServiceSpec]) -> str:
    lines = [
        f"# {GENERATED_BY}",
        f"# {DO_NOT_EDIT}",
        "[Unit]",
        "Description=Quantum Trader fleet",
        f"Documentation=file:{INSTALL_ROOT}/docs/services.md",
        "Wants=network-online.target",
        f"After=network-online.target {REDIS_UNITS}",
        *(f"Wants={spec.unit}" for spec in services),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"
