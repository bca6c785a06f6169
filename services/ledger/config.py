"""ledger settings: :class:`quantum.ledger.config.Settings` (``quantumctl ledger`` reads the
same keys)."""

from quantum.ledger.config import Settings

__all__ = ["Settings"]
