"""intent-bridge settings. Sizing parameters live in the policy store (``sizing``
section, ``quantumctl policy``), versioned and audited, so they change without a restart."""

from __future__ import annotations

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """The fleet settings, and where the RL sizing policies are; see
    :class:`quantum.risk.policy.SizingPolicy` for everything about sizing itself.

    Attributes:
        rl_policy_dir: the sizing-policy registry (``quantumctl rl train --out``); its
            promoted version is served when ``sizing.rl_sizing`` is ``shadow`` or ``active``.
    """

    rl_policy_dir: str = "models/rl"
