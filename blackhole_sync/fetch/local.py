"""The core's local-directory transport: a repository on disk.

Used by tests, air-gapped nodes and USB sideloading. Locators are ``file:///abs/path`` URLs
(build them with :func:`path_to_url`). The URL is trusted configuration: the transport opens
exactly the file it names and nothing derived from the content it reads.

Options (unknown ones are ignored, as :class:`~blackhole_sync.fetch.transport.TransportSpec` asks):

``root``
    A repository directory. Required by :meth:`LocalTransport.publish`, which copies a
    verified file to ``<root>/blobs/<sha256>`` atomically.
``chunk_size``
    Read size while streaming; default :data:`~blackhole_sync.fetch.transport.CHUNK_SIZE`.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, ClassVar
from urllib.parse import unquote, urlsplit

from .._fsutil import fsync_fd, replace, sha256
from ..errors import (
    BlobNotFoundError,
    ConfigurationError,
    DownloadError,
    LengthExceededError,
    LengthOrHashMismatchError,
    SourceUnavailableError,
)
from .transport import (
    CAP_FETCH,
    CAP_PUBLISH,
    CAP_RANGE,
    CHUNK_SIZE,
    TRANSPORT_API,
    BaseTransport,
    Locator,
    Sink,
    TransportSpec,
)

__all__ = ["LOCAL_TRANSPORT_SPEC", "LocalTransport", "path_to_url", "url_to_path"]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def path_to_url(path: str | os.PathLike[str]) -> str:
    """The ``file://`` URL of ``path`` (made absolute; symlinks are not resolved)."""
    return Path(os.path.abspath(path)).as_uri()


def url_to_path(url: str) -> Path:
    """The local path a ``file://`` URL names. Raises ``ValueError`` for anything else.

    Only ``file:///abs/path`` and ``file://localhost/abs/path`` are accepted; a remote host,
    a relative path, a query, a fragment or a NUL byte is refused.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "file":
        raise ValueError(f"not a file:// URL: {url!r}")
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file:// URL names a remote host: {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"file:// URL has a query or fragment: {url!r}")
    path = unquote(parts.path)
    if "\x00" in path or not path.startswith("/"):
        raise ValueError(f"file:// URL does not name an absolute path: {url!r}")
    return Path(path)


class LocalTransport(BaseTransport):
    """Fetch from and publish to a directory on this machine."""

    name: ClassVar[str] = "local"
    capabilities: ClassVar[frozenset[str]] = frozenset({CAP_FETCH, CAP_RANGE, CAP_PUBLISH})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        root = options.get("root")
        self.root: Path | None = Path(root) if root is not None else None
        self.chunk_size: int = int(options.get("chunk_size", CHUNK_SIZE))
        if self.chunk_size <= 0:
            raise ValueError("chunk_size must be > 0")

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        if self.closed:
            raise RuntimeError("transport is closed")
        if locator.kind != "url" or locator.scheme != "file":
            raise ValueError(f"local transport cannot fetch {locator}")
        if start < 0:
            raise ValueError("start must be >= 0")
        path = url_to_path(locator.value)
        try:
            # A short blocking open of a trusted local path; reads below yield between chunks.
            fileobj: BinaryIO = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise BlobNotFoundError(f"{locator}: no such file") from e
        except OSError as e:
            raise SourceUnavailableError(f"{locator}: {e.strerror or e}") from e
        with fileobj:
            try:
                info = os.fstat(fileobj.fileno())
            except OSError as e:
                raise SourceUnavailableError(f"{locator}: {e.strerror or e}") from e
            if not stat.S_ISREG(info.st_mode):
                raise BlobNotFoundError(f"{locator}: not a regular file")
            if info.st_size > max_length:
                raise LengthExceededError(
                    f"{locator}: {info.st_size} bytes exceed the {max_length}-byte cap"
                )
            if start > info.st_size:
                raise DownloadError(f"{locator}: start {start} is past the end ({info.st_size})")
            await self._stream(fileobj, locator, sink, max_length=max_length, start=start)

    async def _stream(
        self, fileobj: BinaryIO, locator: Locator, sink: Sink, *, max_length: int, start: int
    ) -> None:
        import anyio.lowlevel  # here, not at import: a host that only lists specs needs none

        position = start
        try:
            fileobj.seek(start)
        except OSError as e:
            raise SourceUnavailableError(f"{locator}: {e.strerror or e}") from e
        while True:
            # The file may grow while we read: never read more than one byte past the cap.
            want = min(self.chunk_size, max_length - position + 1)
            try:
                block = fileobj.read(want)
            except OSError as e:
                raise SourceUnavailableError(f"{locator}: {e.strerror or e}") from e
            if not block:
                return
            if position + len(block) > max_length:
                raise LengthExceededError(f"{locator}: grew past the {max_length}-byte cap")
            await sink.write(block)
            position += len(block)
            await anyio.lowlevel.checkpoint()

    async def publish(self, path: Path, *, sha256: str) -> list[Locator]:
        """Copy the file at ``path`` to ``<root>/blobs/<sha256>`` atomically.

        The bytes are re-hashed while copying; a mismatch raises
        :class:`LengthOrHashMismatchError` and leaves nothing behind.
        """
        if self.closed:
            raise RuntimeError("transport is closed")
        if self.root is None:
            raise ConfigurationError("the local transport needs a 'root' option to publish")
        if not _SHA256_HEX.fullmatch(sha256):
            raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
        import anyio.to_thread

        blobs = self.root / "blobs"
        dest = blobs / sha256
        await anyio.to_thread.run_sync(self._copy_verified, Path(path), blobs, dest, sha256)
        return [Locator.url(path_to_url(dest))]

    def _copy_verified(self, source: Path, blobs: Path, dest: Path, expected: str) -> None:
        blobs.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=blobs)
        try:
            digest = sha256()
            with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
                while block := src.read(self.chunk_size):
                    digest.update(block)
                    out.write(block)
                out.flush()
                fsync_fd(out.fileno())
            if digest.hexdigest() != expected:
                raise LengthOrHashMismatchError(
                    f"{source}: sha256 {digest.hexdigest()} is not the expected {expected}"
                )
            os.chmod(tmp_name, 0o644)
            replace(tmp_name, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise


LOCAL_TRANSPORT_SPEC = TransportSpec(
    name="local",
    factory=LocalTransport,
    api=TRANSPORT_API,
    schemes=frozenset({"file"}),
    backends=frozenset({"asyncio", "trio"}),
    description="a repository directory on this machine (file:// URLs)",
)
