"""execution entry point."""

from quantum.app import run_service
from services.execution.config import Settings
from services.execution.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
