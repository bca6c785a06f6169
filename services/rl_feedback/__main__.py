"""rl-feedback entry point."""

from quantum.app import run_service
from services.rl_feedback.config import Settings
from services.rl_feedback.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
