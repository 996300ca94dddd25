"""Run a :class:`GossipHost` for an asyncio program.

py-libp2p is trio-only, and the core of blackhole-sync runs on asyncio. The
bridge runs ``trio.run`` in one thread of its own and talks to it through
trio's ``TrioToken.run_sync_soon`` (asyncio -> trio) and asyncio's
``call_soon_threadsafe`` (trio -> asyncio). Both directions are non-blocking:
no asyncio coroutine ever waits on a lock or joins a thread that is still
working, and no executor thread is borrowed.

Inbound messages cross over into a bounded ``asyncio.Queue``; when the asyncio
side falls behind, new messages are dropped and counted
(``bridge_dropped``), never buffered without bound.

After :meth:`AsyncioGossipBridge.stop` returns, the trio thread has ended and
every socket of the host is closed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import trio

from ._config import GossipConfig
from ._host import GossipHost
from ._types import (
    AdmitFn,
    AnswerFn,
    BridgeError,
    InboundMessage,
    NotRunningError,
    QueryAnswer,
    ValidateFn,
)

__all__ = ["AsyncioGossipBridge"]

T = TypeVar("T")
_END = object()


def _resolve(
    fut: asyncio.Future[Any], result: Any = None, exc: BaseException | None = None
) -> None:
    """Complete an asyncio future from the loop thread, unless the caller gave up."""
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class AsyncioGossipBridge:
    """A :class:`GossipHost` in its own trio thread, driven from asyncio.

    Use as ``async with AsyncioGossipBridge(config, validate=...) as bridge:``
    or call :meth:`start` and :meth:`stop`. Arguments are those of
    :class:`GossipHost`; ``validate``, ``answer`` and ``admit`` are called in the
    trio thread (keep them thread-safe and non-blocking). With ``on_message``,
    accepted messages are handed to it in the asyncio loop's thread instead of
    being queued for :meth:`receive`.
    """

    def __init__(
        self,
        config: GossipConfig,
        *,
        validate: ValidateFn,
        answer: AnswerFn | None = None,
        admit: AdmitFn | None = None,
        on_message: Callable[[InboundMessage], None] | None = None,
    ) -> None:
        self._host = GossipHost(config, validate=validate, answer=answer, admit=admit)
        self._on_message = on_message
        self._queue_size = config.inbound_queue_size
        self._queue: asyncio.Queue[object] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._finished: asyncio.Future[None] | None = None
        self.dropped = 0

    @property
    def peer_id(self) -> str:
        return self._host.peer_id

    @property
    def host(self) -> GossipHost:
        """The bridged host: reach it only through :meth:`call` and :meth:`read`."""
        return self._host

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Start the trio thread and the host; returns once the host listens."""
        if self._thread is not None:
            raise RuntimeError("the bridge was already started")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._queue = asyncio.Queue()
        ready: asyncio.Future[None] = loop.create_future()
        self._finished = loop.create_future()
        self._thread = threading.Thread(
            target=self._thread_main,
            args=(loop, ready, self._finished),
            name=f"gossip-trio-{self.peer_id[-8:]}",
            daemon=True,
        )
        self._thread.start()
        try:
            await asyncio.shield(ready)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop the host, wait for the trio thread to end (idempotent)."""
        thread, finished = self._thread, self._finished
        if thread is None or finished is None:
            return
        if self._token is not None:
            try:
                self._token.run_sync_soon(self._host.stop)
            except trio.RunFinishedError:
                pass
        try:
            await asyncio.shield(finished)
        except BridgeError:
            pass
        thread.join()  # trio.run has returned: the thread is exiting now
        self._token = None

    async def __aenter__(self) -> AsyncioGossipBridge:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _thread_main(
        self,
        loop: asyncio.AbstractEventLoop,
        ready: asyncio.Future[None],
        finished: asyncio.Future[None],
    ) -> None:
        error: BaseException | None = None
        try:
            trio.run(self._trio_main, loop, ready)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the asyncio side
            error = BridgeError(f"gossip trio thread failed: {exc!r}")
            error.__cause__ = exc
        self._nursery = None
        try:
            loop.call_soon_threadsafe(_resolve, ready, None, error or BridgeError("stopped"))
            loop.call_soon_threadsafe(_resolve, finished, None, error)
            loop.call_soon_threadsafe(self._enqueue, _END)
        except RuntimeError:
            pass  # the asyncio loop is already closed: nobody is waiting

    async def _trio_main(
        self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]
    ) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._host.run)
            nursery.start_soon(self._pump, loop)
            loop.call_soon_threadsafe(_resolve, ready, None)

    async def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        async for message in self._host.messages:
            loop.call_soon_threadsafe(self._enqueue, message)

    def _enqueue(self, item: object) -> None:
        """Runs in the asyncio loop thread."""
        assert self._queue is not None
        if item is _END:
            self._queue.put_nowait(item)  # the one item allowed past the bound
            return
        if self._on_message is not None:
            assert isinstance(item, InboundMessage)
            self._on_message(item)  # the caller's (non-blocking) fan-out, in its loop
            return
        if self._queue.qsize() >= self._queue_size:
            self.dropped += 1
            return
        self._queue.put_nowait(item)

    # -- calls into trio ------------------------------------------------------

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        async def run() -> None:
            outcome: tuple[Any, BaseException | None] = (None, BridgeError("gossip host stopped"))
            try:
                outcome = (await fn(*args), None)
            except Exception as exc:  # noqa: BLE001 - re-raised in the awaiting coroutine
                outcome = (None, exc)
            finally:
                loop.call_soon_threadsafe(_resolve, fut, *outcome)

        def spawn() -> None:
            if self._nursery is None or not self._host.running:
                loop.call_soon_threadsafe(
                    _resolve, fut, None, NotRunningError("gossip host stopped")
                )
                return
            self._nursery.start_soon(run)

        self._submit(spawn)
        return await fut

    async def _call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a quick synchronous read in the trio thread (no shared-state races)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def run() -> None:
            try:
                outcome: tuple[Any, BaseException | None] = (fn(*args), None)
            except Exception as exc:  # noqa: BLE001 - re-raised in the awaiting coroutine
                outcome = (None, exc)
            loop.call_soon_threadsafe(_resolve, fut, *outcome)

        self._submit(run)
        return await fut

    def _submit(self, fn: Callable[[], None]) -> None:
        if self._token is None:
            raise NotRunningError("the bridge is not running")
        try:
            self._token.run_sync_soon(fn)
        except trio.RunFinishedError as exc:
            raise NotRunningError("the bridge is not running") from exc

    # -- the host's API, for asyncio --------------------------------------------

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` (a method of :attr:`host`) in the trio thread."""
        return await self._call(fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the quick synchronous ``fn(*args)`` in the trio thread (no shared-state races)."""
        return await self._call_sync(fn, *args)

    async def publish(self, kind: str, payload: bytes) -> None:
        await self._call(self._host.publish, kind, payload)

    async def query(self, kind: str) -> list[QueryAnswer]:
        return await self._call(self._host.query, kind)

    async def wait_for_mesh(
        self,
        kind: str,
        *,
        min_peers: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109 - asyncio cancellation does not reach trio
    ) -> bool:
        async def w() -> bool:
            return await self._host.wait_for_mesh(kind, min_peers=min_peers, timeout=timeout)

        return await self._call(w)

    async def receive(self) -> InboundMessage:
        """The next ACCEPTed message; raises :class:`NotRunningError` once stopped."""
        if self._queue is None:
            raise NotRunningError("the bridge was never started")
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # keep later receivers from blocking
            raise NotRunningError("the gossip host stopped")
        assert isinstance(item, InboundMessage)
        return item

    async def messages(self) -> AsyncIterator[InboundMessage]:
        """Iterate over inbound messages until the bridge stops."""
        while True:
            try:
                yield await self.receive()
            except NotRunningError:
                return

    async def counters(self) -> dict[str, int]:
        snap = await self._call_sync(self._host.counters)
        snap["bridge_dropped"] = self.dropped
        return snap

    async def listen_addrs(self) -> list[str]:
        return await self._call_sync(lambda: self._host.listen_addrs)

    async def effective_settings(self) -> dict[str, Any]:
        return await self._call_sync(self._host.effective_settings)

    async def connected_peers(self) -> list[str]:
        return await self._call_sync(self._host.connected_peers)

    async def peer_score(self, peer_id: str) -> float:
        return await self._call_sync(self._host.peer_score, peer_id)
