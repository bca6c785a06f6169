"""A stand-in's background event loop: run in its own thread, called into from the test's
(or bench's) thread."""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Self, TypeVar

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


class LoopThread(ABC):
    """A private event loop in a daemon thread, for as long as the ``with`` block lasts.

    Entering starts the thread and awaits :meth:`_start` on its loop (stopping the loop
    again if that fails); leaving awaits :meth:`_stop`, then stops the loop and joins the
    thread. :meth:`_call` runs a coroutine on the loop from any other thread and waits at
    most ``timeout`` seconds for it.
    """

    def __init__(self, *, timeout: float, thread_name: str, what: str) -> None:
        self.timeout = timeout
        self._thread_name = thread_name  # the background thread's name
        self._what = what  # how errors name the stand-in: "the <what> is not running"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @abstractmethod
    async def _start(self) -> None:
        """Start the servers, on the loop."""

    @abstractmethod
    async def _stop(self) -> None:
        """Stop the servers, on the loop."""

    def __enter__(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, args=(self._loop,),
                                        name=self._thread_name, daemon=True)
        self._thread.start()
        try:
            self._call(self._start)
        except BaseException:
            self._halt_loop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self._call(self._stop)
        finally:
            self._halt_loop()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _halt_loop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self.timeout)
        self._loop = None
        self._thread = None

    def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        return call_in_loop(self._loop, make, self.timeout, self._what)
