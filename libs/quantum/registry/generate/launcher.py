"""The local supervisor's table: ``deploy/launcher.json``.

The supervisor behind ``quantumctl up`` and the replay takes each service's module from it
(falling back to the registry when it is missing), so a deployment can pin what it runs.
Per service, in registry order: module, env file, port, whether trading needs it, the
streams it consumes (with its consumer group) and those it produces. JSON, two-space
indented, so a change to the registry shows as a readable diff.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from quantum.registry.fleet import ServiceSpec
from quantum.registry.generate.common import ENV_EXAMPLE_DIR


def render_launcher(services: Sequence[ServiceSpec]) -> str:
    table = {
        "services": [
            {
                "name": spec.name,
                "module": spec.module,
                "env_file": f"{ENV_EXAMPLE_DIR}/{spec.env_file}",
                "port": spec.port,
                "required": spec.required,
                "consumes": [{"stream": s.name, "group": spec.group} for s in spec.consumes],
                "produces": [s.name for s in spec.produces],
            }
            for spec in services
        ]
    }
    return json.dumps(table, indent=2, ensure_ascii=False) + "\n"
