"""feature-publisher entry point."""

from quantum.app import run_service
from services.feature_publisher.config import Settings
from services.feature_publisher.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
