"""intent-bridge entry point."""

from pathlib import Path

from quantum.app import run_service
from quantum.rl.agent import SizingAgent
from services.intent_bridge.config import Settings
from services.intent_bridge.service import NAME, IntentBridge

if __name__ == "__main__":
    run_service(
        NAME,
        Settings,
        lambda settings, client: IntentBridge(
            client,
            settings.clock == "event",
            sizing_agent=SizingAgent(client, Path(settings.rl_policy_dir)),
        ),
    )
