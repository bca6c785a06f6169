"""apply-layer entry point."""

from quantum.app import run_service
from services.apply_layer.config import Settings
from services.apply_layer.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
