"""An in-memory transport for fast tests.

Content lives in a plain ``dict[str, bytes]`` shared by every :class:`MemoryTransport` built on
it; a locator ``memory://<key>`` names ``store[<key>]``. Announcements travel through a
:class:`MemoryHub` to every subscriber in the same process. Nothing here is a stand-in for a
real server: it is a transport in its own right, run through the same conformance checks.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..errors import (
    BlobNotFoundError,
    DownloadError,
    LengthExceededError,
    LengthOrHashMismatchError,
)
from ..fetch import (
    CAP_ANNOUNCE,
    CAP_FETCH,
    CAP_PUBLISH,
    CAP_RANGE,
    CAP_SUBSCRIBE,
    BaseTransport,
    Locator,
    Sink,
    TransportSpec,
)

__all__ = ["MEMORY_TRANSPORT_SPEC", "MemoryHub", "MemoryTransport", "Subscription"]

#: Default chunk size of a memory fetch (small, so tests see several chunks).
MEMORY_CHUNK_SIZE = 64 * 1024
#: Default number of announcements a slow subscriber may have pending; later ones are dropped.
SUBSCRIBER_BUFFER = 64
#: Largest announcement accepted.
MAX_ANNOUNCEMENT = 64 * 1024

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PREFIX = "memory://"


class Subscription:
    """Announcements for one subscriber; iterate it, close it with :meth:`aclose`."""

    def __init__(
        self,
        hub: MemoryHub,
        receive: MemoryObjectReceiveStream[bytes],
        send: MemoryObjectSendStream[bytes],
    ) -> None:
        self._hub = hub
        self._receive = receive
        self._send = send

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._hub._drop(self._send)
        self._send.close()
        self._receive.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class MemoryHub:
    """An in-process broadcast: every announcement reaches every open subscription.

    Announcements are hints; a subscriber whose buffer is full misses newer ones (it will see
    a later one), so a slow reader never blocks the announcer.
    """

    def __init__(self, *, buffer: int = SUBSCRIBER_BUFFER) -> None:
        self.buffer = buffer
        self._subscribers: list[MemoryObjectSendStream[bytes]] = []
        self.dropped = 0

    def subscribe(self) -> Subscription:
        send, receive = anyio.create_memory_object_stream[bytes](self.buffer)
        self._subscribers.append(send)
        return Subscription(self, receive, send)

    def broadcast(self, payload: bytes) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(payload)
            except anyio.WouldBlock:
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._drop(send)

    def close(self) -> None:
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()

    def _drop(self, send: MemoryObjectSendStream[bytes]) -> None:
        if send in self._subscribers:
            self._subscribers.remove(send)


class MemoryTransport(BaseTransport):
    """A transport over a shared dict.

    Options: ``store`` (the shared ``dict[str, bytes]``; a new empty one by default), ``hub``
    (a :class:`MemoryHub`; a new one by default), ``chunk_size`` (default
    :data:`MEMORY_CHUNK_SIZE`). Unknown options are ignored.
    """

    name: ClassVar[str] = "memory"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {CAP_FETCH, CAP_RANGE, CAP_PUBLISH, CAP_ANNOUNCE, CAP_SUBSCRIBE}
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        store = options.get("store")
        hub = options.get("hub")
        self.store: dict[str, bytes] = store if store is not None else {}
        self.hub: MemoryHub = hub if hub is not None else MemoryHub()
        self.chunk_size: int = int(options.get("chunk_size", MEMORY_CHUNK_SIZE))
        if self.chunk_size <= 0:
            raise ValueError("chunk_size must be > 0")
        self._subscriptions: list[Subscription] = []

    @staticmethod
    def locator(key: str) -> Locator:
        """The locator of ``store[key]``."""
        return Locator.url(_PREFIX + key)

    def put(self, key: str, data: bytes) -> Locator:
        """Place ``data`` in the store under ``key``; return its locator."""
        self.store[key] = bytes(data)
        return self.locator(key)

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        if self.closed:
            raise RuntimeError("transport is closed")
        if locator.kind != "url" or not locator.value.startswith(_PREFIX):
            raise ValueError(f"memory transport cannot fetch {locator}")
        if start < 0:
            raise ValueError("start must be >= 0")
        key = locator.value[len(_PREFIX) :]
        data = self.store.get(key)
        if data is None:
            raise BlobNotFoundError(f"{locator}: not in the memory store")
        if len(data) > max_length:
            raise LengthExceededError(
                f"{locator}: {len(data)} bytes exceed the {max_length}-byte cap"
            )
        if start > len(data):
            raise DownloadError(f"{locator}: start {start} is past the end ({len(data)})")
        view = memoryview(data)
        for offset in range(start, len(data), self.chunk_size):
            await sink.write(bytes(view[offset : offset + self.chunk_size]))
            await anyio.lowlevel.checkpoint()

    async def publish(self, path: Path, *, sha256: str) -> list[Locator]:
        if self.closed:
            raise RuntimeError("transport is closed")
        if not _SHA256_HEX.fullmatch(sha256):
            raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
        data = await anyio.Path(path).read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise LengthOrHashMismatchError(f"{path}: sha256 {actual} is not the expected {sha256}")
        return [self.put(f"blobs/{sha256}", data)]

    async def announce(self, payload: bytes) -> None:
        if self.closed:
            raise RuntimeError("transport is closed")
        if len(payload) > MAX_ANNOUNCEMENT:
            raise ValueError(f"announcement larger than {MAX_ANNOUNCEMENT} bytes")
        self.hub.broadcast(bytes(payload))
        await anyio.lowlevel.checkpoint()

    def subscribe(self) -> AsyncIterator[bytes]:
        """Announcements made after this call; close the returned iterator with ``aclose``."""
        if self.closed:
            raise RuntimeError("transport is closed")
        subscription = self.hub.subscribe()
        self._subscriptions.append(subscription)
        return subscription

    async def aclose(self) -> None:
        """Close the transport and end every subscription it handed out."""
        for subscription in self._subscriptions:
            await subscription.aclose()
        self._subscriptions.clear()
        await super().aclose()


MEMORY_TRANSPORT_SPEC = TransportSpec(
    name="memory",
    factory=MemoryTransport,
    schemes=frozenset({"memory"}),
    backends=frozenset({"asyncio", "trio"}),
    description="an in-process dict, for tests",
)
