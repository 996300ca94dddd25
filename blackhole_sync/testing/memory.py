"""An in-memory transport for fast tests.

Content lives in a plain ``dict[str, bytes]`` shared by every :class:`MemoryTransport` built on
it; a locator ``memory://<key>`` names ``store[<key>]``. Peer messages travel through a
:class:`MemoryHub` to every other member in the same process, each deciding with its own
validator, as a gossip network would. Nothing here is a stand-in for a
real server: it is a transport in its own right, run through the same conformance checks.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._fsutil import sha256_hex
from ..errors import (
    BlobNotFoundError,
    ConfigurationError,
    DownloadError,
    LengthExceededError,
    LengthOrHashMismatchError,
)
from ..fetch import (
    CAP_ANNOUNCE,
    CAP_FETCH,
    CAP_PUBLISH,
    CAP_QUERY,
    CAP_RANGE,
    CAP_SUBSCRIBE,
    TRANSPORT_API,
    BaseTransport,
    Locator,
    MessageValidator,
    PeerMessage,
    Sink,
    TransportSpec,
    Verdict,
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
    """Accepted peer messages for one subscriber; iterate it, close it with :meth:`aclose`."""

    def __init__(
        self,
        kinds: frozenset[str],
        receive: MemoryObjectReceiveStream[PeerMessage],
        send: MemoryObjectSendStream[PeerMessage],
    ) -> None:
        self.kinds = kinds
        self._receive = receive
        self._send = send

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> PeerMessage:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def offer(self, message: PeerMessage) -> bool:
        """Queue ``message`` without blocking; False when the buffer is full or closed."""
        try:
            self._send.send_nowait(message)
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        return True

    async def aclose(self) -> None:
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
    """An in-process network: every transport built on one hub is a peer of every other.

    An announcement from one member is offered to each other member, which runs its own
    ``message_validator`` on it first (as a gossip node does before it delivers or forwards):
    accepted messages reach its subscribers and become its answer to :meth:`query`; rejected
    ones count a penalty against the sender (:attr:`penalties`); ignored ones are dropped
    quietly. A subscriber whose buffer is full misses the message (it will see a later one),
    so a slow reader never blocks the announcer.
    """

    def __init__(self, *, buffer: int = SUBSCRIBER_BUFFER) -> None:
        self.buffer = buffer
        self.members: list[MemoryTransport] = []
        #: (receiver name, sender name) -> number of messages the receiver rejected.
        self.penalties: dict[tuple[str, str], int] = {}
        self.dropped = 0

    def join(self, member: MemoryTransport) -> None:
        if member not in self.members:
            self.members.append(member)

    def leave(self, member: MemoryTransport) -> None:
        if member in self.members:
            self.members.remove(member)

    def broadcast(self, sender: MemoryTransport, kind: str, payload: bytes) -> None:
        message = PeerMessage(kind, payload, peer=sender.peer_id, transport="memory")
        for member in list(self.members):
            if member is not sender:
                member._receive(message)

    def close(self) -> None:
        for member in list(self.members):
            member._end_subscriptions()
        self.members.clear()


class MemoryTransport(BaseTransport):
    """A transport over a shared dict.

    Options: ``store`` (the shared ``dict[str, bytes]``; a new empty one by default), ``hub``
    (a :class:`MemoryHub`; a new one by default), ``chunk_size`` (default
    :data:`MEMORY_CHUNK_SIZE`), ``message_validator`` (required to subscribe: the core's
    decision on each inbound message), ``peer_id`` (this member's name on the hub). Unknown
    options are ignored.
    """

    name: ClassVar[str] = "memory"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {CAP_FETCH, CAP_RANGE, CAP_PUBLISH, CAP_ANNOUNCE, CAP_SUBSCRIBE, CAP_QUERY}
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
        validator = options.get("message_validator")
        self.validator: MessageValidator | None = validator
        self.peer_id: str = str(options.get("peer_id") or f"memory-{id(self):x}")
        #: The newest message of each kind this member announced or accepted (query answers).
        self._newest: dict[str, bytes] = {}
        self.hub.join(self)

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
        actual = sha256_hex(data)
        if actual != sha256:
            raise LengthOrHashMismatchError(f"{path}: sha256 {actual} is not the expected {sha256}")
        return [self.put(f"blobs/{sha256}", data)]

    async def announce(self, kind: str, payload: bytes) -> None:
        if self.closed:
            raise RuntimeError("transport is closed")
        if len(payload) > MAX_ANNOUNCEMENT:
            raise ValueError(f"announcement larger than {MAX_ANNOUNCEMENT} bytes")
        self._newest[kind] = bytes(payload)
        self.hub.broadcast(self, kind, bytes(payload))
        await anyio.lowlevel.checkpoint()

    def subscribe(self, kinds: Iterable[str]) -> AsyncIterator[PeerMessage]:
        """Accepted messages of ``kinds`` that arrive after this call (``aclose`` it)."""
        if self.closed:
            raise RuntimeError("transport is closed")
        if self.validator is None:
            raise ConfigurationError("the memory transport needs a message_validator to subscribe")
        send, receive = anyio.create_memory_object_stream[PeerMessage](self.hub.buffer)
        subscription = Subscription(frozenset(kinds), receive, send)
        self._subscriptions.append(subscription)
        return subscription

    async def query(self, kind: str) -> list[PeerMessage]:
        """Every other member's newest message of ``kind`` (unverified, as a peer sends it)."""
        if self.closed:
            raise RuntimeError("transport is closed")
        await anyio.lowlevel.checkpoint()
        return [
            PeerMessage(kind, member._newest[kind], peer=member.peer_id, transport="memory")
            for member in self.hub.members
            if member is not self and kind in member._newest
        ]

    def _receive(self, message: PeerMessage) -> None:
        if self.closed or self.validator is None:
            return
        verdict = self.validator(message)
        if verdict is Verdict.REJECT:
            key = (self.peer_id, message.peer)
            self.hub.penalties[key] = self.hub.penalties.get(key, 0) + 1
            return
        if verdict is not Verdict.ACCEPT:
            return
        self._newest[message.kind] = message.payload
        for subscription in self._subscriptions:
            if message.kind in subscription.kinds and not subscription.offer(message):
                self.hub.dropped += 1

    def _end_subscriptions(self) -> None:
        for subscription in self._subscriptions:
            subscription._send.close()

    async def aclose(self) -> None:
        """Close the transport and end every subscription it handed out."""
        self.hub.leave(self)
        for subscription in self._subscriptions:
            await subscription.aclose()
        self._subscriptions.clear()
        await super().aclose()


MEMORY_TRANSPORT_SPEC = TransportSpec(
    name="memory",
    factory=MemoryTransport,
    api=TRANSPORT_API,
    schemes=frozenset({"memory"}),
    backends=frozenset({"asyncio", "trio"}),
    description="an in-process dict, for tests",
)
