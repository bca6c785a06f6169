"""ledger entry point."""

from quantum.app import run_service
from services.ledger.config import Settings
from services.ledger.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
