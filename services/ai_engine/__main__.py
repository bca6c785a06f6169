"""ai-engine entry point."""

from quantum.app import run_service
from services.ai_engine.config import Settings
from services.ai_engine.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
