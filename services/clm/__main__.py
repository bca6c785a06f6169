"""clm entry point."""

from quantum.app import run_service
from services.clm.config import Settings
from services.clm.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
