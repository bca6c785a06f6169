"""intent-bridge settings. Sizing parameters live in the policy store (``sizing``
section, ``quantumctl policy``), versioned and audited, so they change without a restart."""

from __future__ import annotations

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """The fleet settings only; see :class:`quantum.risk.policy.SizingPolicy`."""
