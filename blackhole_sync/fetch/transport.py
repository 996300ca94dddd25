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

One concern, one module (over 700 lines): the transport API plugin authors implement -- the
protocol, its capabilities and options, the verifying sink and the guard around every plugin
-- in one place so the contract reads as one document.
"""

from __future__ import annotations

import enum
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, ClassVar, Protocol, Self, runtime_checkable

from attrs import field, frozen

from .._fsutil import sha256
from ..errors import (
    BlackholeSyncError,
    BlobNotFoundError,
    DownloadError,
    LengthExceededError,
    LengthOrHashMismatchError,
    MissingPluginError,
    PluginError,
)

__all__ = [
    "CAPABILITIES",
    "CAP_ANNOUNCE",
    "CAP_FETCH",
    "CAP_LOCATE",
    "CAP_PUBLISH",
    "CAP_QUERY",
    "CAP_RANGE",
    "CAP_READ_RANGE",
    "CAP_SEED",
    "CAP_SUBSCRIBE",
    "TRANSPORT_API",
    "BaseTransport",
    "GuardedTransport",
    "Locator",
    "MessageValidator",
    "PeerMessage",
    "ProgressEvent",
    "Verdict",
    "Sink",
    "Transport",
    "TransportSpec",
    "VerifyingSink",
    "fetch_with_fallback",
    "read_range",
    "STANDARD_OPTIONS",
    "join_url",
]

#: The transport API this core implements. A plugin declares the version it was written
#: for in its :class:`TransportSpec`; a different one is refused with an error naming the
#: plugin. Version 2 added capabilities for every optional operation (``read_range``,
#: ``locate``, ``query``), kinds on ``announce``/``subscribe``, and required ``backends``.
TRANSPORT_API = 2

# Capability names a transport may declare in ``capabilities`` (see :class:`Transport`); each
# says which optional operation it implements, and which conformance checks apply to it.

#: ``fetch(locator, sink, max_length=..., start=0)``: stream a blob into a sink.
CAP_FETCH = "fetch"
#: ``fetch(start=N)`` resumes or reads a range without resending the prefix.
CAP_RANGE = "range"
#: ``read_range(locator, start, length)``: exactly those bytes (parallel multi-source fetches).
CAP_READ_RANGE = "read_range"
#: ``publish(path, sha256=...)``: make a blob fetchable, returning its locators.
CAP_PUBLISH = "publish"
#: ``locate(path)``: the locators a file will have once published, computed offline.
CAP_LOCATE = "locate"
#: ``announce(kind, payload)``: send a signed message to peers.
CAP_ANNOUNCE = "announce"
#: ``subscribe(kinds)``: receive peers' messages, each decided by the message validator first.
CAP_SUBSCRIBE = "subscribe"
#: ``query(kind)``: ask peers for the newest messages of a kind (catch-up).
CAP_QUERY = "query"
#: ``seed(blobs)``: offer exactly the blobs a node keeps (``NODE/blobs``): pin/seed, unpin/stop.
CAP_SEED = "seed"
#: Every capability name.
CAPABILITIES = frozenset(
    {
        CAP_FETCH,
        CAP_RANGE,
        CAP_READ_RANGE,
        CAP_PUBLISH,
        CAP_LOCATE,
        CAP_ANNOUNCE,
        CAP_SUBSCRIBE,
        CAP_QUERY,
        CAP_SEED,
    }
)

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
    """Reported as bytes arrive. ``total`` is the expected length when known.

    ``received`` counts every byte in the sink, ``resumed`` the prefix of them that an earlier
    attempt left (a resumed download): those did not cross the network this time, so a rate
    is ``received - resumed`` over the time taken.
    """

    received: int
    total: int | None
    source: str
    resumed: int = 0
    #: The source delivering these bytes now (a node's source URL, or the locator of a peer
    #: transport), when the fetch's driver set it (:attr:`VerifyingSink.url`); "" if unknown.
    url: str = ""


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

    To resume a partial download, open the file for reading and writing and pass
    ``resume=True``: the bytes already there are re-hashed (never trusted: :meth:`verify`
    judges the whole) and the transport continues from :attr:`received`; :attr:`resumed`
    says how many bytes that prefix held.
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
        self._hash = sha256()
        self._received = 0
        self._progress = progress
        self.source = source
        #: The source being fetched from now: whoever drives the fetch sets it for each
        #: attempt, and progress events carry it (metrics name sources by it).
        self.url = ""
        #: Bytes the file held when the sink was made with ``resume=True`` (0 after reset()).
        self.resumed = 0
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
            self.resumed = self._received

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
            self._progress(
                ProgressEvent(
                    self._received, self.expected_length, self.source, self.resumed, self.url
                )
            )

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
        self._hash = sha256()
        self._received = 0
        self.resumed = 0


@frozen
class PeerMessage:
    """A message a peer sent (or answered a query with): unverified until the core decides.

    ``kind`` is the topic kind (``announcement``, ``status``, ``vote``, ``health``, ``halt``,
    ``certificate``...), ``payload`` the signed document's bytes, ``peer`` the sender's
    transport-level id (a libp2p peer id, an IP:port; empty when the transport cannot tell),
    ``transport`` the name of the transport it arrived on.
    """

    kind: str
    payload: bytes = field(repr=lambda b: f"<{len(b)} bytes>")
    peer: str = ""
    transport: str = ""


class Verdict(enum.Enum):
    """The core's decision on a peer message (see ``blackhole_sync.network``).

    ``ACCEPT``: verified and new -- deliver it and forward it. ``REJECT``: bad signature,
    unknown key, wrong network -- drop it and penalise the sender. ``IGNORE``: stale, expired,
    duplicate or not yet verifiable -- drop it without penalty (an honest relay of an old
    message is not an attacker).
    """

    ACCEPT = "accept"
    REJECT = "reject"
    IGNORE = "ignore"


#: What a transport calls on every inbound peer message, before it delivers or forwards it.
MessageValidator = Callable[[PeerMessage], Verdict]


@runtime_checkable
class Transport(Protocol):
    """What every distribution plugin implements (transport API :data:`TRANSPORT_API`).

    ``fetch`` is the core operation; every other one is optional and present exactly when its
    capability is in ``capabilities`` (the core never probes with ``getattr``):

    ================ ==================================================================
    capability       operation
    ================ ==================================================================
    ``fetch``        :meth:`fetch` (a transport without it only announces/subscribes)
    ``range``        :meth:`fetch` honours ``start`` (resume without resending a prefix)
    ``read_range``   :meth:`read_range`: exactly one byte range (parallel fetches)
    ``publish``      :meth:`publish`: make a verified local file available
    ``locate``       :meth:`locate`: the locators of a file, offline (before signing)
    ``announce``     :meth:`announce`: spread a signed peer message
    ``subscribe``    :meth:`subscribe`: peer messages the validator accepted
    ``query``        :meth:`query`: ask peers for their newest message of a kind (catch-up)
    ``seed``         :meth:`seed`: offer exactly the blobs a node keeps, no longer others
    ================ ==================================================================

    Transports turn their own failures into :class:`DownloadError` subclasses and let
    cancellation propagate; the core's transport pool wraps anything else a plugin raises into
    :class:`DownloadError` too, so one plugin cannot break the fallback chain. Every inbound
    peer message goes through the ``message_validator`` option (a :data:`MessageValidator`)
    before a transport delivers or forwards it: transports hold no trust logic.
    """

    @property
    def name(self) -> str:
        """The transport's name (a class attribute in implementations)."""
        ...

    @property
    def capabilities(self) -> frozenset[str]:
        """The optional operations it implements (a class attribute in implementations)."""
        ...

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        """Stream the content at ``locator`` from byte ``start`` into ``sink``.

        ``max_length`` is the cap on the whole content; a transport refuses early when the
        source announces more, and the sink enforces it again while streaming. Raises
        :class:`BlobNotFoundError` when the source lacks it, :class:`DownloadError` otherwise.
        """
        ...

    async def read_range(
        self, locator: Locator, start: int, length: int, *, max_length: int
    ) -> bytes:
        """Exactly ``length`` bytes at ``start`` (``read_range`` capability)."""
        ...

    async def publish(self, path: Path, *, sha256: str) -> list[Locator]:
        """Make the verified file at ``path`` available; return where it can be fetched."""
        ...

    def locate(self, path: Path) -> list[Locator]:
        """The locators ``path`` will have once published, computed offline (no network).

        The release builder records them in the manifest before signing (a BitTorrent info
        hash, an IPFS CID), so the signed document names them.
        """
        ...

    async def announce(self, kind: str, payload: bytes) -> None:
        """Spread a signed peer message of ``kind``. Best effort: a hint, never trusted."""
        ...

    def subscribe(self, kinds: Iterable[str]) -> AsyncIterator[PeerMessage]:
        """Peer messages of ``kinds`` that the ``message_validator`` accepted, as they come."""
        ...

    async def query(self, kind: str) -> list[PeerMessage]:
        """Ask connected peers for their newest messages of ``kind`` (unverified answers)."""
        ...

    async def seed(self, blobs: Mapping[str, Path]) -> None:
        """Offer exactly ``blobs`` (sha256 -> a verified local file) to peers (``seed``).

        Called by a node's agent with the transfer blobs it keeps (``NODE/blobs``) after each
        cycle: a blob not offered yet is published (IPFS: added and pinned; BitTorrent:
        seeded); one offered by an earlier call -- or an earlier process with the same
        ``state_dir`` -- that is no longer in ``blobs`` is withdrawn (unpinned, no longer
        seeded). Idempotent; a file that does not match its sha256 is not offered.
        """
        ...

    def addresses(self) -> list[str]:
        """Where peers can reach this transport (multiaddrs, host:port); empty if nowhere."""
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

    def _unsupported(self, capability: str) -> NotImplementedError:
        return NotImplementedError(f"transport {self.name!r} lacks the {capability!r} capability")

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        raise self._unsupported(CAP_FETCH)

    async def read_range(
        self, locator: Locator, start: int, length: int, *, max_length: int
    ) -> bytes:
        raise self._unsupported(CAP_READ_RANGE)

    async def publish(self, path: Path, *, sha256: str) -> list[Locator]:
        raise self._unsupported(CAP_PUBLISH)

    def locate(self, path: Path) -> list[Locator]:
        raise self._unsupported(CAP_LOCATE)

    async def announce(self, kind: str, payload: bytes) -> None:
        raise self._unsupported(CAP_ANNOUNCE)

    def subscribe(self, kinds: Iterable[str]) -> AsyncIterator[PeerMessage]:
        raise self._unsupported(CAP_SUBSCRIBE)

    async def query(self, kind: str) -> list[PeerMessage]:
        raise self._unsupported(CAP_QUERY)

    async def seed(self, blobs: Mapping[str, Path]) -> None:
        raise self._unsupported(CAP_SEED)

    def addresses(self) -> list[str]:
        return []

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


class GuardedTransport:
    """The core's side of the plugin boundary: a transport whose failures are always ours.

    Whatever a plugin raises that is not one of the library's own errors (an ``OSError``, a
    ``KeyError`` from a bug, an ``aiohttp`` exception it forgot to wrap) becomes a
    :class:`DownloadError` naming the transport, so the fallback chain moves on to the next
    source instead of aborting. The library's errors (security refusals included) and
    cancellation pass through unchanged. The transport pool hands out only guarded transports.
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def capabilities(self) -> frozenset[str]:
        return self.inner.capabilities

    def _wrap(self, exc: Exception, operation: str) -> DownloadError:
        return DownloadError(
            f"transport {self.inner.name!r} failed to {operation}: {type(exc).__name__}: {exc}"
        )

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        try:
            await self.inner.fetch(locator, sink, max_length=max_length, start=start)
        except BlackholeSyncError:
            raise
        except Exception as exc:
            raise self._wrap(exc, f"fetch {locator}") from exc

    async def read_range(
        self, locator: Locator, start: int, length: int, *, max_length: int
    ) -> bytes:
        try:
            return await self.inner.read_range(locator, start, length, max_length=max_length)
        except BlackholeSyncError:
            raise
        except Exception as exc:
            raise self._wrap(exc, f"read a range of {locator}") from exc

    async def publish(self, path: Path, *, sha256: str) -> list[Locator]:
        try:
            return await self.inner.publish(path, sha256=sha256)
        except BlackholeSyncError:
            raise
        except Exception as exc:
            raise self._wrap(exc, f"publish {path.name}") from exc

    def locate(self, path: Path) -> list[Locator]:
        try:
            return self.inner.locate(path)
        except BlackholeSyncError:
            raise
        except Exception as exc:
            raise self._wrap(exc, f"locate {path.name}") from exc

    async def announce(self, kind: str, payload: bytes) -> None:
        try:
            await self.inner.announce(kind, payload)
        except BlackholeSyncError:
            raise
        except Exception as exc:
            raise self._wrap(exc, f"announce a {kind}") from exc

    async def subscribe(self, kinds: Iterable[str]) -> AsyncIterator[PeerMessage]:
        try:
            async for message in self.inner.subscribe(kinds):
                yield message
        except BlackholeSyncError:
            raise
        except Exception as exc:
            raise self._wrap(exc, "subscribe") from exc

    async def query(self, kind: str) -> list[PeerMessage]:
        try:
            return await self.inner.query(kind)
        except BlackholeSyncError:
            raise
        except Exception as exc:
            raise self._wrap(exc, f"query {kind}") from exc

    async def seed(self, blobs: Mapping[str, Path]) -> None:
        try:
            await self.inner.seed(blobs)
        except BlackholeSyncError:
            raise
        except Exception as exc:
            raise self._wrap(exc, "seed the kept blobs") from exc

    def addresses(self) -> list[str]:
        try:
            return list(self.inner.addresses())
        except BlackholeSyncError:
            raise
        except Exception as exc:
            raise self._wrap(exc, "list its addresses") from exc

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        except BlackholeSyncError:
            raise
        except Exception as exc:
            raise self._wrap(exc, "close") from exc

    async def __aenter__(self) -> Self:
        """Start the transport (a P2P transport brings up its host here)."""
        try:
            await self.inner.__aenter__()
        except BlackholeSyncError:
            raise
        except Exception as exc:
            raise self._wrap(exc, "start") from exc
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


class _RangeDone(BlackholeSyncError):
    """Internal: a ranged read has all its bytes; stops the underlying stream.

    One of the library's own errors, so the plugin boundary lets it through unchanged.
    """


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

    Uses the transport's own ``read_range`` when it declares that capability (HTTP asks for
    just that range);
    otherwise it streams from ``start`` with :meth:`Transport.fetch` and stops once it has the
    bytes. Raises :class:`DownloadError` when the source ends early.
    """
    if start < 0 or length < 0 or start + length > max_length:
        raise ValueError(f"bad range {start}+{length} (cap {max_length})")
    if CAP_READ_RANGE in transport.capabilities:
        data = await transport.read_range(locator, start, length, max_length=max_length)
        if len(data) != length:
            raise DownloadError(f"{locator}: got {len(data)} of {length} range bytes")
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
    "message_validator": "the core's MessageValidator: decides every inbound peer message",
    "network_id": "the network's id: peer-to-peer transports keep networks apart by it",
    "identity_key": "the node's 32-byte ed25519 seed: its peer identity (libp2p peer id)",
    "loopback_only": "True: listen and connect on 127.0.0.1 only; no UPnP, NAT-PMP, LSD, "
    "mDNS, public bootstrap or DHT routers (tests, benchmarks, the demo)",
    "listen": "addresses to listen on (transport-specific strings)",
    "bootstrap": "peers to connect to first (transport-specific strings)",
    "state_dir": "a directory this transport owns (NODE/<transport name>/; the pool derives it "
    "from state_root)",
    "node_config": "the node's config.toml as plain tables: a plugin reads its own table "
    "([gossip], [bittorrent], [ipfs]...)",
    "index_key": "the online index key's 32-byte ed25519 seed, given only to the origin by "
    "serve --index-key (BEP 44 puts of announcements)",
    "index_keys": "a callable returning the raw 32-byte public keys of the trusted root's index "
    "role (BEP 44 lookups of announcements)",
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
    #: The transport API version the plugin implements (:data:`TRANSPORT_API`); no default,
    #: so a plugin written for another version fails loudly instead of half-working.
    api: int = field(kw_only=True)
    #: The anyio backends it runs under; no default (an aiohttp transport would otherwise be
    #: started under trio and fail deep inside).
    backends: frozenset[str] = field(kw_only=True, converter=_names)
    schemes: frozenset[str] = field(factory=frozenset, converter=_names, kw_only=True)
    locator_kinds: frozenset[str] = field(factory=frozenset, converter=_names, kw_only=True)
    description: str = field(default="", kw_only=True)
    #: True: a manifest's locators this transport handles are tried before the node's sources
    #: (a swarm that falls back to those sources itself, as web seeds, only when peers fall
    #: short -- trying it first is what keeps load off the origin).
    before_sources: bool = field(default=False, kw_only=True)
    #: ``companions(blob_path)``: files a repository serves next to a blob (relative path ->
    #: bytes, e.g. ``torrents/<btih>.torrent``), made offline; the release builder writes them
    #: into the draft and ``publish`` moves them into the repository with the blobs.
    companions: Callable[[Path], Mapping[str, bytes]] | None = field(default=None, kw_only=True)

    @backends.validator
    def _check_backends(self, _attribute: object, value: frozenset[str]) -> None:
        unknown = value - {"asyncio", "trio"}
        if not value or unknown:
            raise ValueError(
                f"transport {self.name!r}: backends must name asyncio and/or trio, got {sorted(value)}"
            )

    def check_api(self) -> None:
        """Raise :class:`PluginError` naming the plugin unless it implements this API."""
        if self.api != TRANSPORT_API:
            raise PluginError(
                f"transport {self.name!r} implements transport API {self.api}; this "
                f"blackhole-sync implements API {TRANSPORT_API} (upgrade the plugin or the core)"
            )

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
        "ipfs+rpc": "blackhole-sync-ipfs",
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
        sink.url = str(locator)
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
