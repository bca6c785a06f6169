"""exit-brain entry point."""

from quantum.app import run_service
from services.exit_brain.config import Settings
from services.exit_brain.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
