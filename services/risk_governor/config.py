"""risk-governor settings. The limits themselves live in the policy store
(``quantumctl policy``), versioned and audited, so they change without a restart."""

from __future__ import annotations

from quantum.config import FleetSettings


class Settings(FleetSettings):
    """The fleet settings only; see :mod:`quantum.risk.policy` for the risk limits."""
