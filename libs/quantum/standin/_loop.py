"""Calling into a stand-in's background event loop from the test's (or bench's) thread."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import TypeVar

T = TypeVar("T")


def call_in_loop(
    loop: asyncio.AbstractEventLoop | None,
    make: Callable[[], Awaitable[T]],
    timeout: float,
    what: str,
) -> T:
    """Run the coroutine ``make()`` on ``loop`` and wait for its result, bounded in time."""
    if loop is None:
        raise RuntimeError(f"the {what} is not running: use it as a context manager")

    async def wrapped() -> T:
        return await make()

    future = asyncio.run_coroutine_threadsafe(wrapped(), loop)
    try:
        return future.result(timeout)
    except FutureTimeoutError:
        future.cancel()
        raise TimeoutError(f"the {what} did not answer within {timeout} s") from None
