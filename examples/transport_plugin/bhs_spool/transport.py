"""The spool transport: blobs and peer messages through a shared directory.

A *spool* is a directory every participant can read and write: an NFS export, a shared
volume, a USB stick carried between air-gapped sites. Blobs are ordinary files, addressed by
``spool://`` URLs (``spool:///srv/spool/blobs/<sha256>``; a repository copied into the
spool is a node source: ``node init NODE --source spool:///srv/spool/repo``). Peer messages
are files too::

    SPOOL/messages/<kind>/<time>-<peer>-<n>.msg   every announced message, in order
    SPOOL/newest/<kind>/<peer>                    each peer's newest message of a kind (query)

The transport implements transport API 2 (:data:`blackhole_sync.TRANSPORT_API`) and declares
what it does in ``capabilities``. Like every transport it holds no trust logic: it moves bytes
and asks the core's ``message_validator`` about every inbound message before it delivers it.
Options (unknown ones ignored, as every factory must): ``spool_dir`` (else ``[spool] dir`` in
the node's config.toml, the ``node_config`` option), ``message_validator``, ``identity_key``
(the node's seed: the peer id is derived from it), ``peer_id``, ``poll_interval``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import anyio
import anyio.lowlevel

from blackhole_sync import (
    CAP_ANNOUNCE,
    CAP_FETCH,
    CAP_PUBLISH,
    CAP_QUERY,
    CAP_RANGE,
    CAP_SUBSCRIBE,
    TRANSPORT_API,
    BaseTransport,
    BlobNotFoundError,
    ConfigurationError,
    DownloadError,
    LengthExceededError,
    LengthOrHashMismatchError,
    Locator,
    PeerMessage,
    Sink,
    TransportSpec,
    Verdict,
)

__all__ = ["SPOOL_TRANSPORT_SPEC", "SpoolTransport", "path_to_url", "url_to_path"]

SCHEME = "spool"
CHUNK_SIZE = 256 * 1024
#: Largest peer message written or read.
MAX_MESSAGE = 64 * 1024
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def path_to_url(path: str | os.PathLike[str]) -> str:
    """The ``spool://`` URL of a file or directory."""
    return SCHEME + Path(os.path.abspath(path)).as_uri().removeprefix("file")


def url_to_path(value: str) -> Path:
    parts = urlsplit(value)
    if parts.scheme != SCHEME or parts.netloc not in ("", "localhost") or not parts.path:
        raise ValueError(f"not a spool:// URL of an absolute path: {value!r}")
    return Path(unquote(parts.path))


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class SpoolSubscription:
    """Messages of some kinds that peers announced after it was made, each accepted by the
    message validator first. Iterate it; ``aclose`` ends it."""

    def __init__(self, transport: SpoolTransport, kinds: frozenset[str]) -> None:
        self._transport = transport
        self._kinds = kinds
        self._seen = {name for kind in kinds for name in transport._message_names(kind)}
        self._closed = False

    def __aiter__(self) -> SpoolSubscription:
        return self

    async def __anext__(self) -> PeerMessage:
        transport = self._transport
        while not self._closed and not transport.closed:
            for kind in sorted(self._kinds):
                for name in transport._message_names(kind):
                    if name in self._seen:
                        continue
                    self._seen.add(name)
                    message = transport._inbound(kind, name)
                    if message is not None:
                        return message
            await anyio.sleep(transport.poll_interval)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._closed = True


class SpoolTransport(BaseTransport):
    name: ClassVar[str] = "spool"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {CAP_FETCH, CAP_RANGE, CAP_PUBLISH, CAP_ANNOUNCE, CAP_SUBSCRIBE, CAP_QUERY}
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        table = dict((options.get("node_config") or {}).get("spool", {}))
        spool = options.get("spool_dir") or table.get("dir")
        self.spool: Path | None = Path(spool) if spool else None
        self.validator = options.get("message_validator")
        seed = options.get("identity_key")
        default_id = (
            hashlib.sha256(seed).hexdigest()[:16] if seed else f"{os.getpid()}x{id(self):x}"
        )
        self.peer_id: str = str(options.get("peer_id") or default_id)
        if not _NAME.fullmatch(self.peer_id):
            raise ValueError(f"peer_id must match {_NAME.pattern}: {self.peer_id!r}")
        self.poll_interval = float(options.get("poll_interval", 0.05))
        #: sender peer id -> messages of theirs the validator rejected (a real transport would
        #: score the peer down and disconnect it).
        self.penalties: dict[str, int] = {}
        self._sent = 0

    # -- blobs ------------------------------------------------------------------------------

    def _path(self, locator: Locator) -> Path:
        if locator.kind != "url" or locator.scheme != SCHEME:
            raise ValueError(f"the spool transport cannot fetch {locator}")
        return url_to_path(locator.value)

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        if self.closed:
            raise RuntimeError("transport is closed")
        path = self._path(locator)
        try:
            file = await anyio.open_file(path, "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"{locator}: not in the spool") from None
        except OSError as exc:
            raise DownloadError(f"{locator}: {exc}") from exc
        async with file:
            size = os.fstat(file.wrapped.fileno()).st_size
            if size > max_length:  # refuse early: the size is known before any byte is sent
                raise LengthExceededError(f"{locator}: {size} bytes exceed the {max_length} cap")
            if start > size:
                raise DownloadError(f"{locator}: start {start} is past the end ({size})")
            await file.seek(start)
            offset = start
            while chunk := await file.read(CHUNK_SIZE):
                if offset + len(chunk) > max_length:  # the file grew while it was read
                    raise LengthExceededError(f"{locator}: longer than the {max_length} cap")
                await sink.write(chunk)
                offset += len(chunk)
                await anyio.lowlevel.checkpoint()  # a cancelled caller stops it here

    def _spool(self) -> Path:
        if self.spool is None:
            raise ConfigurationError("the spool transport needs spool_dir (or [spool] dir)")
        return self.spool

    async def publish(self, path: Path, *, sha256: str) -> list[Locator]:
        if self.closed:
            raise RuntimeError("transport is closed")
        data = await anyio.Path(path).read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise LengthOrHashMismatchError(f"{path}: sha256 {actual}, expected {sha256}")
        target = self._spool() / "blobs" / sha256
        await anyio.to_thread.run_sync(_write_atomically, target, data)
        return [Locator.url(path_to_url(target))]

    # -- peer messages ----------------------------------------------------------------------

    def _kind_dir(self, kind: str, area: str) -> Path:
        if not _NAME.fullmatch(kind):
            raise ValueError(f"message kind must match {_NAME.pattern}: {kind!r}")
        return self._spool() / area / kind

    def _message_names(self, kind: str) -> list[str]:
        try:
            return sorted(
                n for n in os.listdir(self._kind_dir(kind, "messages")) if n.endswith(".msg")
            )
        except FileNotFoundError:
            return []

    def _inbound(self, kind: str, name: str) -> PeerMessage | None:
        """The message in file ``name`` if the validator accepts it, else None."""
        sender = name.split("-")[1]
        if sender == self.peer_id or self.validator is None:
            return None
        path = self._kind_dir(kind, "messages") / name
        try:
            with path.open("rb") as f:
                payload = f.read(MAX_MESSAGE + 1)
        except OSError:
            return None
        if len(payload) > MAX_MESSAGE:
            return None
        message = PeerMessage(kind, payload, peer=sender, transport=self.name)
        verdict = self.validator(message)  # the core decides; the transport only obeys
        if verdict is Verdict.REJECT:
            self.penalties[sender] = self.penalties.get(sender, 0) + 1
            return None
        if verdict is not Verdict.ACCEPT:
            return None  # ignored: stale, duplicate, expired -- dropped without penalty
        _write_atomically(self._kind_dir(kind, "newest") / self.peer_id, payload)  # held now
        return message

    async def announce(self, kind: str, payload: bytes) -> None:
        if self.closed:
            raise RuntimeError("transport is closed")
        if len(payload) > MAX_MESSAGE:
            raise ValueError(f"a peer message is at most {MAX_MESSAGE} bytes")
        self._sent += 1
        name = f"{time.time_ns():020d}-{self.peer_id}-{self._sent:06d}.msg"

        def write() -> None:
            _write_atomically(self._kind_dir(kind, "messages") / name, payload)
            _write_atomically(self._kind_dir(kind, "newest") / self.peer_id, payload)

        await anyio.to_thread.run_sync(write)

    def subscribe(self, kinds: Iterable[str]) -> AsyncIterator[PeerMessage]:
        if self.closed:
            raise RuntimeError("transport is closed")
        if self.validator is None:
            raise ConfigurationError("the spool transport needs a message_validator to subscribe")
        return SpoolSubscription(self, frozenset(kinds))

    async def query(self, kind: str) -> list[PeerMessage]:
        """Every other peer's newest message of ``kind`` (unverified: the core decides)."""
        if self.closed:
            raise RuntimeError("transport is closed")

        def read() -> list[PeerMessage]:
            folder = self._kind_dir(kind, "newest")
            answers = []
            for peer in sorted(os.listdir(folder)) if folder.is_dir() else []:
                if peer == self.peer_id or peer.startswith("."):
                    continue
                payload = (folder / peer).read_bytes()[: MAX_MESSAGE + 1]
                if len(payload) <= MAX_MESSAGE:
                    answers.append(PeerMessage(kind, payload, peer=peer, transport=self.name))
            return answers

        return await anyio.to_thread.run_sync(read)


SPOOL_TRANSPORT_SPEC = TransportSpec(
    "spool",
    SpoolTransport,
    api=TRANSPORT_API,  # the version this plugin implements; another core refuses it by name
    backends={"asyncio", "trio"},  # anyio only, no asyncio-only library: both
    schemes={SCHEME},
    description="a shared spool directory (NFS, a USB stick): blobs and peer messages",
)
