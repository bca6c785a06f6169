"""meta-regime entry point."""

from quantum.app import run_service
from services.meta_regime.config import Settings
from services.meta_regime.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
