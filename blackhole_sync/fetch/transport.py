"""Distribution transports: the one plug point between the core and the network.

A transport moves opaque bytes. It never decides whether bytes are good: every byte it delivers
goes through a :class:`VerifyingSink` that enforces the length cap while streaming and checks
sha256 at the end, against values from signed metadata. Transports are hints; trust rests on
the signed documents alone.

The protocol covers all four planned transports:

=========== ==================== ================================== ========================
transport   locator kinds        publish                            announce / subscribe
=========== ==================== ================================== ========================
local       ``url`` (file://)    copy into ``blobs/<sha256>``       no
http        ``url`` (http[s]://) the origin directory               no
bittorrent  ``btih``, ``url``    make a torrent and seed it         BEP 44 mutable item
ipfs        ``cid``              ``add`` and pin                    pubsub
gossip      none (peers)         no                                 signed envelopes
=========== ==================== ================================== ========================

A transport is an async context manager (``async with``, ``aclose``). Optional operations are
announced in :attr:`Transport.capabilities`; calling one that is absent raises
``NotImplementedError`` (caller misuse).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, ClassVar, Protocol, Self, runtime_checkable

from attrs import field, frozen

from ..errors import (
    BlobNotFoundError,
    DownloadError,
    LengthExceededError,
    LengthOrHashMismatchError,
    MissingPluginError,
)

__all__ = [
    "CAP_ANNOUNCE",
    "CAP_FETCH",
    "CAP_PUBLISH",
    "CAP_RANGE",
    "CAP_SUBSCRIBE",
    "BaseTransport",
    "Locator",
    "ProgressEvent",
    "Sink",
    "Transport",
    "TransportSpec",
    "VerifyingSink",
    "fetch_with_fallback",
    "read_range",
    "STANDARD_OPTIONS",
    "join_url",
]

#: Capability names a transport may declare.
CAP_FETCH = "fetch"
CAP_RANGE = "range"  # fetch(start=N) resumes or reads a range without resending the prefix
CAP_PUBLISH = "publish"
CAP_ANNOUNCE = "announce"
CAP_SUBSCRIBE = "subscribe"

#: Streaming chunk size used by the core's own transports.
CHUNK_SIZE = 256 * 1024


@frozen
class Locator:
    """Where bytes can be found: a typed value, several per artifact.

    ``kind`` is ``url`` (value: an absolute URL whose scheme picks the transport), ``btih``
    (a BitTorrent v1 info hash, 40 hex digits), ``cid`` (an IPFS CID), or a kind a plugin adds.
    """

    kind: str
    value: str

    @classmethod
    def url(cls, value: str) -> Locator:
        return cls("url", value)

    @property
    def scheme(self) -> str:
        """The URL scheme for ``url`` locators, else the kind itself."""
        if self.kind == "url":
            return self.value.split(":", 1)[0].lower()
        return self.kind

    def __str__(self) -> str:
        return self.value if self.kind == "url" else f"{self.kind}:{self.value}"


def join_url(base: str, relpath: str) -> str:
    """Join a repository base URL and a relative path (``blobs/<hex>``), keeping the base path.

    Plain concatenation, so it works for any scheme a plugin adds (``urljoin`` only knows
    a fixed list of schemes).
    """
    if relpath.startswith("/") or "://" in relpath:
        raise ValueError(f"not a relative repository path: {relpath!r}")
    return (base if base.endswith("/") else base + "/") + relpath


@frozen
class ProgressEvent:
    """Reported as bytes arrive. ``total`` is the expected length when known."""

    received: int
    total: int | None
    source: str


ProgressCallback = Callable[[ProgressEvent], None]


@runtime_checkable
class Sink(Protocol):
    """Where a transport writes what it receives, in order, starting at ``received``."""

    @property
    def received(self) -> int: ...

    async def write(self, data: bytes) -> None:
        """Take the next bytes. Raises :class:`LengthExceededError` past the cap."""
        ...


class VerifyingSink:
    """A sink that hashes as it writes and refuses to grow past ``max_length``.

    It writes to an open binary file. ``expected_length`` and ``expected_sha256`` come from
    signed metadata; :meth:`verify` raises :class:`LengthOrHashMismatchError` unless both
    match. Without an expected hash (a document whose hash is not yet known, such as
    ``root.json``) only the cap applies.

    To resume a partial download, open the file for appending and pass ``resume=True``: the
    bytes already there are re-hashed (never trusted) and the transport continues from
    :attr:`received`.
    """

    def __init__(
        self,
        fileobj: BinaryIO,
        *,
        max_length: int,
        expected_length: int | None = None,
        expected_sha256: str | None = None,
        progress: ProgressCallback | None = None,
        source: str = "",
        resume: bool = False,
    ) -> None:
        if max_length < 0:
            raise ValueError("max_length must be >= 0")
        if expected_length is not None and expected_length > max_length:
            raise ValueError("expected_length exceeds max_length")
        self._file = fileobj
        self.max_length = max_length
        self.expected_length = expected_length
        self.expected_sha256 = expected_sha256
        self._hash = hashlib.sha256()
        self._received = 0
        self._progress = progress
        self.source = source
        if resume:
            self._file.seek(0)
            while True:
                block = self._file.read(CHUNK_SIZE)
                if not block:
                    break
                self._received += len(block)
                if self._received > self.max_length:
                    raise LengthExceededError(
                        f"partial file already holds more than {self.max_length} bytes"
                    )
                self._hash.update(block)
            self._file.seek(0, os.SEEK_END)

    @property
    def received(self) -> int:
        return self._received

    @property
    def remaining(self) -> int:
        """Bytes still allowed before the cap."""
        return self.max_length - self._received

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self._received + len(data) > self.max_length:
            raise LengthExceededError(
                f"{self.source or 'source'} sent more than the {self.max_length}-byte cap"
            )
        self._file.write(data)
        self._hash.update(data)
        self._received += len(data)
        if self._progress is not None:
            self._progress(ProgressEvent(self._received, self.expected_length, self.source))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def verify(self) -> None:
        """Raise unless the bytes received are exactly the expected ones."""
        if self.expected_length is not None and self._received != self.expected_length:
            raise LengthOrHashMismatchError(
                f"{self.source or 'source'}: got {self._received} bytes, "
                f"expected {self.expected_length}"
            )
        if self.expected_sha256 is not None and self.hexdigest() != self.expected_sha256:
            raise LengthOrHashMismatchError(
                f"{self.source or 'source'}: sha256 {self.hexdigest()} "
                f"is not the expected {self.expected_sha256}"
            )

    def reset(self) -> None:
        """Discard everything written (to retry from another source)."""
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.sha256()
        self._received = 0


@runtime_checkable
class Transport(Protocol):
    """What every distribution plugin implements.

    ``fetch`` is required; the other operations are optional and listed in ``capabilities``.
    Transports must turn their own errors into :class:`DownloadError` subclasses and must let
    cancellation propagate.
    """

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        """Stream the content at ``locator`` from byte ``start`` into ``sink``.

        ``max_length`` is the cap on the whole content; a transport refuses early when the
        source announces more, and the sink enforces it again while streaming. Raises
        :class:`BlobNotFoundError` when the source lacks it, :class:`DownloadError` otherwise.
        """
        ...

    async def publish(self, path: Path, *, sha256: str) -> list[Locator]:
        """Make the verified file at ``path`` available; return where it can be fetched."""
        ...

    async def announce(self, payload: bytes) -> None:
        """Spread a signed announcement (the newest index pointer). Hint only."""
        ...

    def subscribe(self) -> AsyncIterator[bytes]:
        """Yield announcements received from the network, unverified."""
        ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BaseTransport:
    """Convenience base: lifecycle and 'not supported' defaults for optional operations."""

    name: ClassVar[str] = "base"
    capabilities: ClassVar[frozenset[str]] = frozenset({CAP_FETCH})

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.closed = False

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        raise NotImplementedError

    async def publish(self, path: Path, *, sha256: str) -> list[Locator]:
        raise NotImplementedError(f"transport {self.name!r} cannot publish")

    async def announce(self, payload: bytes) -> None:
        raise NotImplementedError(f"transport {self.name!r} cannot announce")

    def subscribe(self) -> AsyncIterator[bytes]:
        raise NotImplementedError(f"transport {self.name!r} cannot subscribe")

    async def aclose(self) -> None:
        self.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _names(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


class _RangeDone(Exception):
    """Internal: a ranged read has all its bytes; stops the underlying stream."""


class _RangeBuffer:
    """A sink that keeps exactly ``length`` bytes starting at ``start``, then stops."""

    def __init__(self, start: int, length: int) -> None:
        self._start = start
        self._length = length
        self.data = bytearray()

    @property
    def received(self) -> int:
        return self._start + len(self.data)

    async def write(self, data: bytes) -> None:
        room = self._length - len(self.data)
        self.data += data[:room]
        if len(self.data) >= self._length:
            raise _RangeDone


async def read_range(
    transport: Transport, locator: Locator, start: int, length: int, *, max_length: int
) -> bytes:
    """Exactly ``length`` bytes at ``start`` of ``locator`` (for parallel multi-source fetches).

    Uses the transport's own ``read_range`` when it has one (HTTP asks for just that range);
    otherwise it streams from ``start`` with :meth:`Transport.fetch` and stops once it has the
    bytes. Raises :class:`DownloadError` when the source ends early.
    """
    if start < 0 or length < 0 or start + length > max_length:
        raise ValueError(f"bad range {start}+{length} (cap {max_length})")
    own = getattr(transport, "read_range", None)
    if callable(own):
        data = await own(locator, start, length, max_length=max_length)
        return bytes(data)
    buffer = _RangeBuffer(start, length)
    if length:
        try:
            await transport.fetch(locator, buffer, max_length=max_length, start=start)
        except _RangeDone:
            pass
    if len(buffer.data) != length:
        raise DownloadError(f"{locator}: got {len(buffer.data)} of {length} range bytes")
    return bytes(buffer.data)


#: Options every transport factory may receive (and must ignore when they do not apply).
STANDARD_OPTIONS: Mapping[str, str] = {
    "rate_limit": "download bandwidth limit in bytes per second (None: unlimited)",
    "ca_file": "PEM bundle of CAs to trust for TLS instead of the system store",
    "cert_file": "PEM client certificate for mutual TLS",
    "key_file": "the client certificate's private key",
}


@frozen
class TransportSpec:
    """How a plugin registers a transport (returned from ``blackhole_sync_transports``).

    ``schemes`` are the URL schemes (``http``, ``https``, ``file``) whose ``url`` locators and
    sources it handles; ``locator_kinds`` the other locator kinds (``btih``, ``cid``).
    ``backends`` lists the anyio backends it runs under (aiohttp-based: ``asyncio`` only).
    ``factory(**options)`` builds an instance; unknown options must be ignored.
    """

    name: str
    factory: Callable[..., Transport]
    schemes: frozenset[str] = field(factory=frozenset, converter=_names)
    locator_kinds: frozenset[str] = field(factory=frozenset, converter=_names)
    backends: frozenset[str] = field(default=frozenset({"asyncio", "trio"}), converter=_names)
    description: str = ""

    def handles(self, locator: Locator) -> bool:
        if locator.kind == "url":
            return locator.scheme in self.schemes
        return locator.kind in self.locator_kinds


def pick_spec(specs: Iterable[TransportSpec], locator: Locator) -> TransportSpec:
    """The first spec that handles ``locator``, else :class:`MissingPluginError`."""
    for spec in specs:
        if spec.handles(locator):
            return spec
    hint = {
        "http": "blackhole-sync-http",
        "https": "blackhole-sync-http",
        "btih": "blackhole-sync-bittorrent",
        "magnet": "blackhole-sync-bittorrent",
        "cid": "blackhole-sync-ipfs",
        "ipfs": "blackhole-sync-ipfs",
    }.get(locator.scheme)
    extra = (
        f"; install {hint} (pip install 'blackhole-sync[{hint.rsplit('-', 1)[1]}]')" if hint else ""
    )
    raise MissingPluginError(f"no transport plugin handles {locator.scheme!r} locators{extra}")


async def fetch_with_fallback(
    candidates: Iterable[tuple[Transport, Locator]],
    sink: VerifyingSink,
    *,
    on_failure: Callable[[Locator, BaseException], None] | None = None,
) -> Locator:
    """Fetch into ``sink`` from the first candidate that delivers verified bytes.

    A candidate that fails to deliver, or delivers bytes that do not verify, is skipped and its
    bytes discarded; the next is tried. Security failures of *every* candidate raise the last
    security error (exit 3 territory); otherwise the last download error is raised.
    Returns the locator that succeeded.
    """
    last: BaseException | None = None
    tried = 0
    for transport, locator in candidates:
        tried += 1
        sink.reset()
        try:
            await transport.fetch(locator, sink, max_length=sink.max_length)
            sink.verify()
            return locator
        except (DownloadError, LengthOrHashMismatchError) as exc:
            if on_failure is not None:
                on_failure(locator, exc)
            if last is None or not isinstance(last, LengthOrHashMismatchError):
                last = exc
            continue
    sink.reset()
    if last is None:
        raise BlobNotFoundError(f"no source to fetch from (tried {tried})")
    raise last
