"""risk-governor entry point."""

from quantum.app import run_service
from services.risk_governor.config import Settings
from services.risk_governor.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
