"""``python -m quantum.ctl``: how ``quantumctl up --detach`` starts its background copy."""

from quantum.ctl.main import main

main()
