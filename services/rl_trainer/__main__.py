"""rl-trainer entry point."""

from quantum.app import run_service
from services.rl_trainer.config import Settings
from services.rl_trainer.service import NAME, build

if __name__ == "__main__":
    run_service(NAME, Settings, build)
