"""reconcile entry point."""

from quantum.app import run_service
from services.reconcile.config import Settings
from services.reconcile.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
