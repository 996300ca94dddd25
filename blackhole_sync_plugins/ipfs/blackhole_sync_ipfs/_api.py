"""The small async interface both backends implement, and the values it passes around."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "DEFAULT_FETCH_TIMEOUT",
    "IpfsBackend",
    "NodeInfo",
    "PubsubMessage",
    "Subscription",
    "TransferCounters",
    "Writer",
]

Writer = Callable[[bytes], Awaitable[object]]
"""The caller's sink: ``await write(chunk)`` for each piece of content, in order."""

DEFAULT_FETCH_TIMEOUT = 30.0
"""Seconds a fetch may wait for any one block (the first included) before giving up."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node's identity: its peer id and the multiaddrs it can be dialled at (``.../p2p/ID``)."""

    peer_id: str
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PubsubMessage:
    """One pubsub message as received: unauthenticated input, the caller validates it."""

    from_peer: str
    payload: bytes
    topic: str


@dataclass(slots=True)
class TransferCounters:
    """Running totals of a backend (file bytes, not protocol overhead)."""

    bytes_added: int = 0
    bytes_fetched: int = 0
    files_added: int = 0
    files_fetched: int = 0
    extra: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Subscription(Protocol):
    """Messages of one topic, as an async iterator; ``aclose()`` (or leaving the
    ``subscribe`` context) ends it."""

    topic: str

    def __aiter__(self) -> AsyncIterator[PubsubMessage]: ...

    async def receive(self) -> PubsubMessage:
        """The next message (waits for it)."""
        ...


@runtime_checkable
class IpfsBackend(Protocol):
    """What the transport needs from IPFS, whichever way the node is reached.

    Every method is a coroutine that never blocks the event loop (the libraries underneath are
    synchronous and run in worker threads) and works under asyncio and trio alike.
    """

    kind: str
    counters: TransferCounters

    async def add_file(self, path: str | os.PathLike[str]) -> str:
        """Add a file (CIDv1, raw leaves, 256 KiB chunks, balanced); pin it; return the CID."""
        ...

    async def get(
        self,
        cid: str,
        write: Writer,
        *,
        max_length: int,
        timeout: float = DEFAULT_FETCH_TIMEOUT,  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
    ) -> int:
        """Stream the file ``cid`` into ``write``; return the byte count.

        Raises :class:`~blackhole_sync_ipfs.LengthExceededError` once more than ``max_length``
        bytes would be written (exactly ``max_length`` were), and
        :class:`~blackhole_sync_ipfs.FetchTimeoutError` when no data arrives for ``timeout``
        seconds (an unknown CID).
        """
        ...

    async def pin(self, cid: str, *, timeout: float = DEFAULT_FETCH_TIMEOUT) -> None:  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
        """Pin ``cid`` recursively (fetching what is missing)."""
        ...

    async def unpin(self, cid: str) -> None:
        """Remove the recursive pin of ``cid``."""
        ...

    async def pins(self) -> frozenset[str]:
        """CIDs pinned recursively."""
        ...

    async def connect(self, multiaddr: str, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
        """Connect to a peer (``/ip4/.../tcp/.../p2p/ID``)."""
        ...

    async def id(self) -> NodeInfo:
        """This node's peer id and addresses."""
        ...

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` on ``topic``."""
        ...

    def subscribe(self, topic: str) -> AbstractAsyncContextManager[Subscription]:
        """``async with backend.subscribe(topic) as sub: async for message in sub: ...``"""
        ...

    async def aclose(self) -> None:
        """Release everything (idempotent)."""
        ...
