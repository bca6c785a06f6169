"""exit-brain entry point."""

from quantum.app import run_service
from services.exit_brain.config import Settings
from services.exit_brain.service import NAME, ExitBrain

if __name__ == "__main__":
    run_service(NAME, Settings, lambda settings, client: ExitBrain(settings))
