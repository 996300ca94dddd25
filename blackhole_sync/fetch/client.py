"""RepositoryClient: the I/O side of a node -- metadata refresh and verified blob downloads.

This is the orchestrator layer of the TUF split: :mod:`trust` decides, this module fetches. It
walks the root chain, fetches the index and manifests with their size caps, and downloads
blobs into staging through whichever transports the plugin manager offers, falling back from
one source to the next. Sources are repository base URLs (``http://``, ``https://``,
``file://``, or a local path); a manifest's own locators (info hashes, CIDs) are tried too
when a plugin handles them.

Every byte goes through a :class:`~blackhole_sync.fetch.transport.VerifyingSink`; nothing is
trusted until :class:`~blackhole_sync.documents.trust.TrustedState` accepted it.
"""

from __future__ import annotations

import io
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.lowlevel
import sniffio
from attrs import define, field, frozen

from .._fsutil import fsync_fd, sha256
from ..documents import MAX_ROOT_ROTATIONS, MAX_SIZES, MetaFile, TrustedState
from ..errors import (
    BlackholeSyncError,
    BlobNotFoundError,
    ConfigurationError,
    DownloadError,
    LengthOrHashMismatchError,
    MissingPluginError,
    PluginError,
    SecurityError,
    SourceUnavailableError,
    StallError,
)
from .local import path_to_url
from .plugins import PluginHost
from .transport import (
    CAP_RANGE,
    GuardedTransport,
    Locator,
    ProgressEvent,
    Transport,
    TransportSpec,
    VerifyingSink,
    fetch_with_fallback,
    join_url,
    pick_spec,
    read_range,
)

__all__ = ["ClientLimits", "FetchStats", "RepositoryClient", "TransportPool", "normalize_source"]

log = logging.getLogger(__name__)


def normalize_source(source: str) -> str:
    """A repository base URL: URLs are kept, local paths become ``file://`` URLs."""
    if not source:
        raise ConfigurationError("empty source")
    if "://" in source:
        scheme = source.split("://", 1)[0].lower()
        if not scheme.isascii() or not scheme.replace("+", "").isalnum():
            raise ConfigurationError(f"bad source URL {source!r}")
        return source if source.endswith("/") else source + "/"
    return path_to_url(os.path.abspath(source)) + "/"


@frozen
class ClientLimits:
    """Caps on what a client fetches. Sizes of documents come from ``metadata.MAX_SIZES``."""

    max_root_rotations: int = MAX_ROOT_ROTATIONS
    max_blob_length: int = 64 * 1024**3
    #: Seconds one source may take to deliver one signed document (root, index, manifest);
    #: a slower source is skipped (a slow-drip source cannot hold a check for long).
    document_timeout: float = 120.0
    #: Blobs at least this large are split into ranges fetched from several sources at once.
    parallel_min_length: int = 8 * 1024**2
    #: Size of one range in a parallel fetch (the most one source can waste on a race).
    parallel_chunk: int = 4 * 1024**2
    #: Sources used at once in a parallel fetch.
    parallel_sources: int = 4


@define
class FetchStats:
    """Bytes fetched (including failed attempts) and source failures during one operation."""

    bytes_fetched: int = 0
    failures: list[tuple[str, str]] = field(factory=list)

    def record_failure(self, locator: Locator, exc: BaseException) -> None:
        self.failures.append((str(locator), f"{type(exc).__name__}: {exc}"))


class TransportPool:
    """Transport instances by spec, created on first use, closed together."""

    def __init__(
        self, specs: Sequence[TransportSpec], options: Mapping[str, Any] | None = None
    ) -> None:
        self._specs = list(specs)
        self._options = dict(options or {})
        self._instances: dict[str, GuardedTransport] = {}

    @classmethod
    def from_plugins(
        cls, plugins: PluginHost, options: Mapping[str, Any] | None = None
    ) -> TransportPool:
        return cls(plugins.transport_specs(), options)

    def _usable_specs(self) -> list[TransportSpec]:
        try:
            backend = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            backend = "asyncio"
        return [s for s in self._specs if backend in s.backends]

    def for_locator(self, locator: Locator) -> GuardedTransport:
        try:
            spec = pick_spec(self._usable_specs(), locator)
        except MissingPluginError:
            if any(s.handles(locator) for s in self._specs):
                raise MissingPluginError(
                    f"the transport for {locator.scheme!r} does not run under "
                    f"{sniffio.current_async_library()}"
                ) from None
            raise
        return self.instance(spec)

    def instance(self, spec: TransportSpec) -> GuardedTransport:
        """The pool's (guarded) instance of ``spec``, created on first use."""
        spec.check_api()
        transport = self._instances.get(spec.name)
        if transport is None:
            options = dict(self._options)
            state_root = options.pop("state_root", None)
            if state_root is not None:  # each transport owns NODE/<its name>/
                options["state_dir"] = Path(state_root) / spec.name
            try:
                inner = spec.factory(**options)
            except BlackholeSyncError:
                raise
            except Exception as exc:
                raise PluginError(f"transport {spec.name!r} failed to start: {exc}") from exc
            transport = GuardedTransport(inner)
            self._instances[spec.name] = transport
        return transport

    def usable(self) -> list[GuardedTransport]:
        """An instance of every transport that runs under the current async library."""
        return [self.instance(spec) for spec in self._usable_specs()]

    def handles(self, locator: Locator) -> bool:
        return any(s.handles(locator) for s in self._usable_specs())

    async def aclose(self) -> None:
        instances, self._instances = list(self._instances.values()), {}
        for transport in instances:
            await transport.aclose()


class RepositoryClient:
    """Fetches signed metadata and blobs from a node's sources."""

    def __init__(
        self,
        sources: Sequence[str],
        pool: TransportPool,
        *,
        limits: ClientLimits | None = None,
        progress: Callable[[ProgressEvent], None] | None = None,
    ) -> None:
        if not sources:
            raise ConfigurationError("the node has no sources configured")
        self.sources = [normalize_source(s) for s in sources]
        self.pool = pool
        self.limits = limits or ClientLimits()
        self.progress = progress
        self.stats = FetchStats()
        self._parallel_received = 0

    # -- small documents ------------------------------------------------------------------------

    async def _fetch_doc(
        self, source: str, relpath: str, *, max_length: int, expected: MetaFile | None
    ) -> bytes:
        locator = Locator.url(join_url(source, relpath))
        transport = self.pool.for_locator(locator)
        buffer = io.BytesIO()
        sink = VerifyingSink(
            buffer,
            max_length=max_length,
            expected_length=None if expected is None else expected.length,
            expected_sha256=None if expected is None else expected.sha256,
            source=str(locator),
        )
        try:
            with anyio.fail_after(self.limits.document_timeout):
                await transport.fetch(locator, sink, max_length=max_length)
        except TimeoutError as exc:
            raise StallError(
                f"{locator}: not delivered within {self.limits.document_timeout:g} s"
            ) from exc
        finally:
            self.stats.bytes_fetched += sink.received
        sink.verify()
        return buffer.getvalue()

    async def refresh(self, state: TrustedState) -> bool:
        """Walk the root chain and take the newest valid index any source offers.

        Every source is asked (indexes are small), so one stale mirror cannot hide a release
        that another source already serves. A source that cannot deliver, or serves something
        the trusted state refuses (an older index, a bad signature), is skipped. When no source
        succeeds, the security error is raised if there was one (it outranks download errors).
        Returns True when the trusted index changed.
        """
        before = state.index_bytes
        security: SecurityError | None = None
        download: Exception | None = None
        succeeded = 0
        for source in self.sources:
            try:
                await self._refresh_root(state, source)
                state.check_root_fresh()
                data = await self._fetch_doc(
                    source, "index.json", max_length=MAX_SIZES["index"], expected=None
                )
                state.update_index(data)
                succeeded += 1
            except SecurityError as exc:
                log.warning("source %s refused: %s", source, exc)
                security = security or exc
            except (DownloadError, MissingPluginError) as exc:
                log.info("source %s unavailable: %s", source, exc)
                download = exc
        if succeeded:
            return state.index_bytes != before
        if security is not None:
            raise security
        if isinstance(download, BlobNotFoundError):
            raise SourceUnavailableError(f"no source serves an index yet ({download})")
        raise SourceUnavailableError(f"no source could be reached ({download})")

    async def _refresh_root(self, state: TrustedState, source: str) -> None:
        for _ in range(self.limits.max_root_rotations):
            name = f"{state.root.version + 1}.root.json"
            try:
                data = await self._fetch_doc(
                    source, name, max_length=MAX_SIZES["root"], expected=None
                )
            except BlobNotFoundError:
                return
            state.update_root(data)
        raise SecurityError(f"more than {self.limits.max_root_rotations} root rotations at once")

    async def fetch_manifest(self, state: TrustedState, version: str) -> bytes:
        """Fetch and verify the manifest of ``version``; returns its bytes."""
        listed = state.listed_manifest(version)  # the entry, or the precise refusal
        security: SecurityError | None = None
        download: Exception | None = None
        for source in self.sources:
            try:
                data = await self._fetch_doc(
                    source, f"manifests/{version}.json", max_length=listed.length, expected=listed
                )
                state.update_manifest(version, data)
                return data
            except SecurityError as exc:
                security = security or exc
            except (DownloadError, MissingPluginError) as exc:
                download = exc
        if security is not None:
            raise security
        raise SourceUnavailableError(f"manifest {version}: no source could deliver it ({download})")

    # -- blobs ------------------------------------------------------------------------------------

    def blob_candidates(
        self, meta: MetaFile, extra: Iterable[Mapping[str, str]] = ()
    ) -> list[tuple[Transport, Locator]]:
        out: list[tuple[Transport, Locator]] = []
        for source in self.sources:
            locator = Locator.url(join_url(source, f"blobs/{meta.sha256}"))
            try:
                out.append((self.pool.for_locator(locator), locator))
            except MissingPluginError as exc:
                log.info("skipping source %s: %s", source, exc)
        for item in extra:
            locator = Locator(item["kind"], item["value"])
            if self.pool.handles(locator):
                out.append((self.pool.for_locator(locator), locator))
        return out

    async def fetch_blob(
        self, meta: MetaFile, dest: Path, *, extra_locators: Iterable[Mapping[str, str]] = ()
    ) -> int:
        """Download the blob ``meta`` describes to ``dest`` (a new file in staging), verified.

        Returns the bytes transferred for it. On failure ``dest`` is removed.
        """
        if meta.length > self.limits.max_blob_length:
            raise LengthOrHashMismatchError(
                f"blob of {meta.length} bytes exceeds the {self.limits.max_blob_length}-byte limit"
            )
        candidates = self.blob_candidates(meta, extra_locators)
        if not candidates:
            raise MissingPluginError("no installed transport can reach any source of this node")
        fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        received = 0
        try:
            with os.fdopen(fd, "w+b") as fileobj:
                ranged = _distinct([c for c in candidates if CAP_RANGE in c[0].capabilities])
                if len(ranged) >= 2 and meta.length >= self.limits.parallel_min_length:
                    try:
                        await self._fetch_parallel(meta, fileobj, ranged)
                        fileobj.flush()
                        fsync_fd(fileobj.fileno())
                        return self._parallel_received
                    except (DownloadError, LengthOrHashMismatchError) as exc:
                        log.warning(
                            "parallel fetch of %s failed (%s); fetching it whole",
                            meta.sha256[:12],
                            exc,
                        )
                        received += self._parallel_received
                        fileobj.seek(0)
                        fileobj.truncate()
                sink = _CountingSink(
                    fileobj,
                    max_length=meta.length,
                    expected_length=meta.length,
                    expected_sha256=meta.sha256,
                    progress=self.progress,
                    source=meta.sha256[:12],
                )
                try:
                    await fetch_with_fallback(
                        candidates, sink, on_failure=self.stats.record_failure
                    )
                finally:
                    received += sink.total_written
                    self.stats.bytes_fetched += sink.total_written
                fileobj.flush()
                fsync_fd(fileobj.fileno())
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return received

    async def _fetch_parallel(
        self, meta: MetaFile, fileobj: BinaryIO, sources: Sequence[tuple[Transport, Locator]]
    ) -> None:
        """Fetch ``meta`` by ranges from several sources at once into ``fileobj``.

        Sources pull the next range from a shared queue, so a faster source fetches more of
        them; when the queue is empty an idle source races a range still in flight (the first
        answer wins), so a slow source cannot hold up the end. A source that fails is dropped
        and its range goes back to the queue. Ranges carry no hashes of their own: the whole
        file is verified at the end, and any failure makes the caller fetch it whole instead.
        """
        chunk = self.limits.parallel_chunk
        count = -(-meta.length // chunk)
        pending = deque(range(count))
        done: set[int] = set()
        attempts: dict[int, int] = {}
        self._parallel_received = 0

        async def worker(transport: Transport, locator: Locator) -> None:
            while len(done) < count:
                if pending:
                    index = pending.popleft()
                else:
                    racing = [i for i, n in attempts.items() if i not in done and n < 2]
                    if not racing:
                        return
                    index = racing[0]
                attempts[index] = attempts.get(index, 0) + 1
                start = index * chunk
                length = min(chunk, meta.length - start)
                try:
                    data = await read_range(
                        transport, locator, start, length, max_length=meta.length
                    )
                except (DownloadError, LengthOrHashMismatchError) as exc:
                    attempts[index] -= 1
                    if index not in done and attempts[index] == 0 and index not in pending:
                        pending.append(index)
                    self.stats.record_failure(locator, exc)
                    return
                self._parallel_received += len(data)
                self.stats.bytes_fetched += len(data)
                await anyio.lowlevel.checkpoint()  # let the other sources take their turn
                if index in done:
                    continue  # another source won the race for this range
                fileobj.seek(start)
                fileobj.write(data)
                done.add(index)
                if self.progress is not None:
                    got = sum(min(chunk, meta.length - i * chunk) for i in done)
                    self.progress(ProgressEvent(got, meta.length, meta.sha256[:12]))

        async with anyio.create_task_group() as tg:
            for transport, locator in sources[: self.limits.parallel_sources]:
                tg.start_soon(worker, transport, locator)
        if len(done) < count:
            raise DownloadError(f"parallel fetch: {count - len(done)} range(s) not fetched")
        fileobj.flush()
        fileobj.seek(0)
        digest = sha256()
        while block := fileobj.read(1 << 20):
            digest.update(block)
        if fileobj.tell() != meta.length or digest.hexdigest() != meta.sha256:
            raise LengthOrHashMismatchError("parallel fetch: the assembled blob does not verify")


def _distinct(candidates: Sequence[tuple[Transport, Locator]]) -> list[tuple[Transport, Locator]]:
    seen: set[str] = set()
    out = []
    for transport, locator in candidates:
        if str(locator) not in seen:
            seen.add(str(locator))
            out.append((transport, locator))
    return out


class _CountingSink(VerifyingSink):
    """A verifying sink that also counts every byte written across retries."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.total_written = 0

    async def write(self, data: bytes) -> None:
        await super().write(data)
        self.total_written += len(data)
