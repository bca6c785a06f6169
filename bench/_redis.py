"""A private ``redis-server`` for one benchmark: never an operator's Redis.

Started on a free loopback port in a temporary directory, with persistence off (the
benchmarks measure the bus, not the disk), and stopped when the block ends.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from quantum import localredis


@contextmanager
def private_redis() -> Iterator[str]:
    """Yield the URL of a fresh, empty ``redis-server`` that lives as long as the block."""
    with tempfile.TemporaryDirectory(prefix="quantum-bench-redis-") as directory:
        port = localredis.free_port()
        server = localredis.start(port, Path(directory))
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(10)
