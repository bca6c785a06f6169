"""universe entry point."""

from quantum.app import run_service
from services.universe.config import Settings
from services.universe.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
