"""Shared fixtures: a real Redis server private to the test session, a clean db per test.

A private ``redis-server`` is started on a free port when the binary is available, so the
tests never touch an operator's Redis; without it they use ``QT_TEST_REDIS_URL``
(default ``redis://127.0.0.1:6379/15``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from quantum import localredis
from quantum.risk import fleetstate

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if localredis.server_binary() is not None:
        port = localredis.free_port()
        proc = localredis.start(port, tmp_path_factory.mktemp("redis"))
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)
    else:
        url = os.environ.get("QT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
        if not localredis.reachable(url):
            pytest.fail(f"no redis-server binary and no Redis reachable at {url}")
        yield url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A client on a freshly flushed database, initialised as a new fleet (epoch, clear ESS)
    as ``quantumctl init`` leaves it; tests of a never-initialised Redis flush it again."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    fleetstate.initialise(client, "pytest")
    yield client
    client.close()


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE
