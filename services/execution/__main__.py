"""execution entry point."""

from quantum.app import run_service
from services.execution.config import Settings
from services.execution.service import NAME, Execution

if __name__ == "__main__":
    run_service(NAME, Settings, lambda settings, client: Execution(settings, client))
