"""intent-bridge entry point."""

from quantum.app import run_service
from services.intent_bridge.config import Settings
from services.intent_bridge.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
