"""RepositoryClient: the I/O side of a node -- metadata refresh and verified blob downloads.

This is the orchestrator layer of the TUF split: :mod:`trust` decides, this module fetches. It
walks the root chain, fetches the index and manifests with their size caps, and downloads
blobs into staging through whichever transports the plugin manager offers, falling back from
one source to the next. Sources are repository base URLs (``http://``, ``https://``,
``file://``, or a local path); a manifest's own locators (info hashes, CIDs) are tried too
when a plugin handles them.

Every byte goes through a :class:`~blackhole_sync.fetch.transport.VerifyingSink`; nothing is
trusted until :class:`~blackhole_sync.documents.trust.TrustedState` accepted it.

Time is bounded here, around every ``transport.fetch``, whatever the plugin: a document has
``document_timeout``; a blob download from one source has a minimum rate and a deadline
(:class:`ClientLimits`), past which the next source continues from the bytes already
received. A blob download can keep its bytes in a partial file (a node's
``NODE/partial/<sha256>``) and resume from it after an interruption or a restart: the kept
prefix is re-hashed, the rest fetched by range, the whole verified. ``--debug`` shows one log
line per blob naming the transports and locators that served it, with bytes and seconds.

One concern, one module (over 700 lines): getting verified bytes of one repository -- metadata
in python-tuf's order, blobs across sources with fallback, resume, deadlines and parallel
ranges -- whose limits only hold if they are applied in one place.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import math
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import sniffio
from attrs import define, field, frozen, validators

from .._fsutil import fsync_fd, replace
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
    """Caps on what a client fetches. Sizes of documents come from ``metadata.MAX_SIZES``.

    Every blob download from one source runs under two time limits enforced by the client
    itself, whatever the transport (a plugin's own timeouts come on top): a minimum rate
    (``blob_min_rate`` over each ``blob_rate_window``) and a deadline
    (``blob_deadline_base`` plus the bytes still missing at ``blob_deadline_rate``). A source
    that misses either is abandoned with :class:`~blackhole_sync.errors.StallError` and the
    next source continues from the bytes already received (by range, where its transport
    has the ``range`` capability); the whole blob is verified at the end. When the node has a
    bandwidth limit (the transports' ``rate_limit`` option), both rates are capped at half of
    it, so the node's own throttle never trips them.
    """

    max_root_rotations: int = MAX_ROOT_ROTATIONS
    max_blob_length: int = 64 * 1024**3
    #: Seconds one source may take to deliver one signed document (root, index, manifest);
    #: a slower source is skipped (a slow-drip source cannot hold a check for long).
    document_timeout: float = 120.0
    #: Bytes per second a source must deliver, on average over each ``blob_rate_window``
    #: seconds of a blob download (the first window includes connecting), or it is abandoned
    #: for the next source; 0: no minimum rate.
    blob_min_rate: int = field(default=16 * 1024, validator=validators.ge(0))
    blob_rate_window: float = field(default=30.0, validator=validators.gt(0.0))
    #: One source gets at most ``blob_deadline_base`` seconds plus the bytes still missing at
    #: ``blob_deadline_rate`` bytes per second for a blob (a 300 MB blob: about 78 minutes),
    #: after which the next source continues; a source just above the minimum rate cannot
    #: hold a download for its whole length. ``blob_deadline_rate`` 0: no deadline.
    blob_deadline_base: float = field(default=120.0, validator=validators.ge(0.0))
    blob_deadline_rate: int = field(default=64 * 1024, validator=validators.ge(0))
    #: Blobs at least this large are split into ranges fetched from several sources at once.
    parallel_min_length: int = 8 * 1024**2
    #: Size of one range in a parallel fetch (the most one source can waste on a race). Each
    #: range fetch has the blob deadline for its own length; ranges are written in order, at
    #: most ``2 * parallel_sources`` of them held in memory ahead of the first missing one.
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

    def before_sources(self, locator: Locator) -> bool:
        """Whether the transport for ``locator`` is tried before the node's sources
        (:attr:`TransportSpec.before_sources`: a swarm with web seeds)."""
        spec = next((s for s in self._usable_specs() if s.handles(locator)), None)
        return spec is not None and spec.before_sources

    @property
    def rate_limit(self) -> int | None:
        """The bandwidth limit (bytes/s) given to the transports, if any."""
        value = self._options.get("rate_limit")
        return int(value) if value else None

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
        peers_first: bool = False,
    ) -> None:
        if not sources:
            raise ConfigurationError("the node has no sources configured")
        self.sources = [normalize_source(s) for s in sources]
        self.pool = pool
        self.limits = limits or ClientLimits()
        self.progress = progress
        #: blob locators of peer transports (a manifest's ``cid`` ...) before the sources
        self.peers_first = peers_first
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

    async def fetch_listed(self, relpath: str, listed: MetaFile) -> bytes:
        """Fetch a document the trusted index lists by length and sha256 (a coordination
        document: ``governance/...``, ``downgrades/...``) from the first source that delivers
        exactly those bytes. The caller verifies its signatures."""
        security: SecurityError | None = None
        download: Exception | None = None
        for source in self.sources:
            try:
                return await self._fetch_doc(
                    source, relpath, max_length=listed.length, expected=listed
                )
            except SecurityError as exc:
                security = security or exc
            except (DownloadError, MissingPluginError) as exc:
                download = exc
        if security is not None:
            raise security
        raise SourceUnavailableError(f"{relpath}: no source could deliver it ({download})")

    # -- blobs ------------------------------------------------------------------------------------

    def source_of(self, locator: Locator) -> str:
        """The source a locator reaches: the node's source URL it lies under (what metrics
        and progress name), else the locator itself (a peer transport's ``btih:``, ``cid:``)."""
        if locator.kind == "url":
            for source in self.sources:
                if locator.value.startswith(source):
                    return source
        return str(locator)

    def blob_candidates(
        self, meta: MetaFile, extra: Iterable[Mapping[str, str]] = ()
    ) -> list[tuple[Transport, Locator]]:
        """Where to fetch ``meta`` from, in the order to try: a swarm that falls back to the
        sources itself (``before_sources``), then the node's sources, then the other locators
        the signed manifest names (``extra``) -- or those before the sources when
        :attr:`peers_first`. Every candidate's bytes are checked against ``meta`` alike."""
        out: list[tuple[Transport, Locator]] = []
        for source in self.sources:
            locator = Locator.url(join_url(source, f"blobs/{meta.sha256}"))
            try:
                out.append((self.pool.for_locator(locator), locator))
            except MissingPluginError as exc:
                log.info("skipping source %s: %s", source, exc)
        first: list[tuple[Transport, Locator]] = []
        peers: list[tuple[Transport, Locator]] = []
        for item in extra:
            locator = Locator(item["kind"], item["value"])
            if self.pool.handles(locator):
                candidate = (self.pool.for_locator(locator), locator)
                if self.pool.before_sources(locator):
                    first.append(candidate)
                else:
                    peers.append(candidate)
        return first + peers + out if self.peers_first else first + out + peers

    async def fetch_blob(
        self,
        meta: MetaFile,
        dest: Path,
        *,
        extra_locators: Iterable[Mapping[str, str]] = (),
        partial: Path | None = None,
    ) -> int:
        """Download the blob ``meta`` describes to ``dest`` (a new file in staging), verified.

        Sources are tried in turn (a large blob is split into ranges fetched from several at
        once); each attempt runs under the blob limits of :class:`ClientLimits`. A source that
        fails or stalls leaves the bytes it delivered for the next one to continue from, by
        range; bytes that do not verify are discarded and the next source starts over.

        ``partial`` keeps the download across interruptions and restarts (a node passes
        ``NODE/partial/<sha256>``): the bytes already there are re-hashed, never trusted, the
        download continues after them, and the whole is verified before it is moved to
        ``dest``. The file stays when the download fails or is cancelled, unless what it held
        did not verify; it is gone once the blob is in ``dest``. Without ``partial``, ``dest``
        is written directly and removed on failure.

        Returns the bytes transferred for it (a resumed prefix is not counted).
        """
        if meta.length > self.limits.max_blob_length:
            raise LengthOrHashMismatchError(
                f"blob of {meta.length} bytes exceeds the {self.limits.max_blob_length}-byte limit"
            )
        candidates = self.blob_candidates(meta, extra_locators)
        if not candidates:
            raise MissingPluginError("no installed transport can reach any source of this node")
        resume = partial is not None
        target = partial if partial is not None else dest
        label = meta.sha256[:12]
        served = _Served()
        started = time.monotonic()
        fd = _open_target(target, resume=resume, length=meta.length)
        try:
            with os.fdopen(fd, "r+b") as fileobj:
                sink = await anyio.to_thread.run_sync(
                    lambda: VerifyingSink(
                        fileobj,
                        max_length=meta.length,
                        expected_length=meta.length,
                        expected_sha256=meta.sha256,
                        progress=self.progress,
                        source=label,
                        resume=resume,
                    )
                )
                resumed = sink.received
                if resumed:
                    log.info("blob %s: resuming at byte %d of %d", label, resumed, meta.length)
                    if self.progress is not None:
                        self.progress(ProgressEvent(resumed, meta.length, label, resumed))
                await self._fetch_into(meta, sink, candidates, served)
                fileobj.flush()
                fsync_fd(fileobj.fileno())
            if partial is not None:
                replace(partial, dest)
        except BaseException:
            if partial is None:
                dest.unlink(missing_ok=True)
            else:
                _drop_if_empty(partial)
            raise
        log.info(
            "blob %s (%d bytes): %s in %.3f s%s",
            label,
            meta.length,
            served.describe(),
            time.monotonic() - started,
            f", resumed at byte {resumed}" if resumed else "",
        )
        return served.total

    async def _fetch_into(
        self,
        meta: MetaFile,
        sink: VerifyingSink,
        candidates: Sequence[tuple[Transport, Locator]],
        served: _Served,
    ) -> None:
        """Fill ``sink`` (possibly holding a resumed prefix) with ``meta``'s verified bytes."""
        ranged = _distinct([c for c in candidates if CAP_RANGE in c[0].capabilities])
        # a swarm tried before the sources (TransportSpec.before_sources) goes first, alone
        swarm_first = bool(candidates) and self.pool.before_sources(candidates[0][1])
        if (
            not swarm_first
            and len(ranged) >= 2
            and meta.length - sink.received >= self.limits.parallel_min_length
        ):
            try:
                await self._fetch_parallel(meta, sink, ranged, served)
                sink.verify()
                return
            except LengthOrHashMismatchError as exc:
                log.warning(
                    "parallel fetch of %s did not verify (%s); fetching it whole",
                    meta.sha256[:12],
                    exc,
                )
                sink.reset()
            except DownloadError as exc:
                log.warning(
                    "parallel fetch of %s stopped at byte %d (%s); one source at a time",
                    meta.sha256[:12],
                    sink.received,
                    exc,
                )
        await self._fetch_sequential(meta, sink, candidates, served)

    async def _fetch_sequential(
        self,
        meta: MetaFile,
        sink: VerifyingSink,
        candidates: Sequence[tuple[Transport, Locator]],
        served: _Served,
    ) -> None:
        """One source at a time, each continuing from the bytes the sink already holds.

        A source that fails or stalls keeps its bytes (the final hash judges them); one whose
        result does not verify makes the sink start over -- and when that result was built on
        a prefix from earlier (a resumed file, another source), the same source is asked once
        more from byte 0, since the prefix may be what was wrong. Raises the mismatch if there
        was one (it outranks download errors), else the last download error.
        """
        order = list(candidates)
        if sink.received:  # resuming: sources that can continue from an offset go first
            # (after a swarm tried before the sources: it resumes from its own state)
            order.sort(
                key=lambda c: (
                    not self.pool.before_sources(c[1]),
                    CAP_RANGE not in c[0].capabilities,
                )
            )
        mismatch: LengthOrHashMismatchError | None = None
        failure: DownloadError | None = None
        for transport, locator in order:
            for _ in range(2):
                start = sink.received
                if start and CAP_RANGE not in transport.capabilities:
                    sink.reset()  # it can only send from byte 0
                    start = 0
                try:
                    if start < meta.length:
                        await self._fetch_guarded(transport, locator, sink, meta.length, served)
                    if sink.received < meta.length:
                        # the source said "that is all" (a cut connection raises instead): it
                        # serves a blob shorter than the signed length
                        raise LengthOrHashMismatchError(
                            f"{locator}: ended after {sink.received} of {meta.length} bytes"
                        )
                    sink.verify()
                    return
                except LengthOrHashMismatchError as exc:
                    sink.reset()
                    if start:  # the prefix may be what was wrong: not this source's fault yet
                        log.info(
                            "%s: the blob did not verify after resuming at byte %d (%s); "
                            "fetching it again from byte 0",
                            locator,
                            start,
                            exc,
                        )
                        continue
                    self.stats.record_failure(locator, exc)
                    mismatch = exc
                    break
                except DownloadError as exc:
                    self.stats.record_failure(locator, exc)
                    # what a source that answered said outranks "this source has nothing"
                    if failure is None or not isinstance(
                        exc, SourceUnavailableError | BlobNotFoundError
                    ):
                        failure = exc
                    break
        if mismatch is not None:
            raise mismatch
        if failure is not None:
            raise failure
        raise BlobNotFoundError(f"no source to fetch {meta.sha256[:12]} from")

    def _blob_rates(self, share: int) -> tuple[float, float]:
        """(minimum rate, deadline rate) for one of ``share`` concurrent fetches, in bytes/s.

        Both are capped at half the node's bandwidth limit (split between concurrent fetches),
        so the node's own throttle never trips them; 0 means off.
        """
        floor: float = self.limits.blob_min_rate
        rate: float = self.limits.blob_deadline_rate
        limit = self.pool.rate_limit
        if limit:
            cap = limit / (2 * max(1, share))
            floor = min(floor, cap)
            rate = min(rate, cap)
        return floor, rate

    def _deadline(self, missing: int, rate: float) -> float | None:
        """Seconds one source gets for ``missing`` bytes (None: no deadline)."""
        if not rate:
            return None
        return self.limits.blob_deadline_base + missing / rate

    async def _fetch_guarded(
        self,
        transport: Transport,
        locator: Locator,
        sink: VerifyingSink,
        length: int,
        served: _Served,
    ) -> None:
        """``transport.fetch`` from ``sink.received`` under the minimum rate and the deadline.

        The cancel scope's deadline is the end of the current rate window (moved forward each
        time the window's quota of bytes arrived) or the attempt's deadline, whichever is
        first; when it fires the attempt is cancelled and :class:`StallError` raised.
        """
        floor, rate = self._blob_rates(1)
        start = sink.received
        budget = self._deadline(length - start, rate)
        guard = _Guard(sink, floor, self.limits.blob_rate_window, budget)
        scope = guard.arm()
        sink.url = self.source_of(locator)  # progress (and metrics) name the source by it
        try:
            with scope:
                await transport.fetch(locator, guard, max_length=length, start=start)
        except DownloadError as exc:
            if scope.cancel_called:  # a transport that turned our cancellation into an error
                raise guard.stall_error(locator) from exc
            raise
        finally:
            served.add(transport, locator, guard.count)
            self.stats.bytes_fetched += guard.count
        if scope.cancelled_caught:
            raise guard.stall_error(locator)

    async def _read_range(
        self,
        transport: Transport,
        locator: Locator,
        start: int,
        length: int,
        *,
        total: int,
        share: int,
    ) -> bytes:
        """One range of a parallel fetch, within the blob deadline for its length."""
        _floor, rate = self._blob_rates(share)
        budget = self._deadline(length, rate)
        try:
            with anyio.fail_after(budget):
                return await read_range(transport, locator, start, length, max_length=total)
        except TimeoutError as exc:
            raise StallError(
                f"{locator}: range {start}+{length} not delivered within {budget:.0f} s"
            ) from exc

    async def _fetch_parallel(
        self,
        meta: MetaFile,
        sink: VerifyingSink,
        sources: Sequence[tuple[Transport, Locator]],
        served: _Served,
    ) -> None:
        """Fetch the rest of ``meta`` (after ``sink.received``) by ranges from several sources.

        Sources pull the next range from a shared queue, so a faster source fetches more of
        them; ranges are written into the sink in order, so what it holds is always a prefix
        (a kill leaves a resumable file), and a source may run at most ``2 * sources`` ranges
        ahead of the first missing one. When there is nothing new to take, an idle source
        races the first range still in flight (the first answer wins), so a slow source cannot
        hold up the rest. A source that fails is dropped and its range goes back to the
        queue. Ranges carry no hashes of their own: the caller verifies the whole; when every
        source failed, :class:`DownloadError` leaves the prefix for one-at-a-time fetching.
        """
        chunk = self.limits.parallel_chunk
        base = sink.received
        count = -(-(meta.length - base) // chunk)
        workers = list(sources[: self.limits.parallel_sources])
        ahead = 2 * len(workers)
        pending = deque(range(count))
        inflight: dict[int, int] = {}  # range -> attempts running now
        ready: dict[int, tuple[bytes, str]] = {}  # fetched (and from where), waiting for
        # the ranges before them
        written = 0  # ranges in the sink
        changed = anyio.Event()
        writing = anyio.Lock()

        def notify() -> None:
            nonlocal changed
            changed.set()
            changed = anyio.Event()

        def pick() -> int | None:
            if pending and pending[0] < written + ahead:
                return pending.popleft()
            for index in sorted(inflight):  # race the first range still missing
                if index >= written and index not in ready and inflight[index] < 2:
                    return index
            return None

        def finished(index: int) -> None:
            inflight[index] -= 1
            if not inflight[index]:
                del inflight[index]

        async def worker(transport: Transport, locator: Locator) -> None:
            nonlocal written
            while written < count:
                index = pick()
                if index is None:
                    await changed.wait()
                    continue
                inflight[index] = inflight.get(index, 0) + 1
                start = base + index * chunk
                length = min(chunk, meta.length - start)
                try:
                    data = await self._read_range(
                        transport, locator, start, length, total=meta.length, share=len(workers)
                    )
                except (DownloadError, LengthOrHashMismatchError) as exc:
                    finished(index)
                    if index >= written and index not in ready and index not in inflight:
                        pending.appendleft(index)
                    self.stats.record_failure(locator, exc)
                    notify()
                    return
                finished(index)
                served.add(transport, locator, len(data))
                self.stats.bytes_fetched += len(data)
                if index >= written and index not in ready:  # else another source won the race
                    ready[index] = (data, self.source_of(locator))
                    async with writing:
                        while written in ready:
                            data, sink.url = ready.pop(written)
                            await sink.write(data)
                            written += 1
                    if written == count:
                        tg.cancel_scope.cancel()  # stop the losers of a race still running
                notify()

        async with anyio.create_task_group() as tg:
            for transport, locator in workers:
                tg.start_soon(worker, transport, locator)
        if written < count:
            raise DownloadError(f"parallel fetch: {count - written} range(s) not fetched")


def _open_target(path: Path, *, resume: bool, length: int) -> int:
    """Open the file a download writes: a new one, or (``resume``) a kept partial download.

    A partial file that is not a regular file is replaced; one longer than the blob is emptied.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
    if not resume:
        return os.open(path, flags | os.O_EXCL, 0o600)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        path.unlink()  # a symlink where the partial file belongs: never followed
        fd = os.open(path, flags | os.O_EXCL, 0o600)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DownloadError(f"{path} is not a regular file")
        if info.st_size > length:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _drop_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        if os.stat(path, follow_symlinks=False).st_size == 0:
            path.unlink()


def _distinct(candidates: Sequence[tuple[Transport, Locator]]) -> list[tuple[Transport, Locator]]:
    seen: set[str] = set()
    out = []
    for transport, locator in candidates:
        if str(locator) not in seen:
            seen.add(str(locator))
            out.append((transport, locator))
    return out


@define
class _Served:
    """Bytes each (transport, locator) delivered for one blob (the ``--debug`` line)."""

    by_source: dict[tuple[str, str], int] = field(factory=dict)

    def add(self, transport: Transport, locator: Locator, count: int) -> None:
        key = (transport.name, str(locator))
        self.by_source[key] = self.by_source.get(key, 0) + count

    @property
    def total(self) -> int:
        return sum(self.by_source.values())

    def describe(self) -> str:
        parts = [f"{n} bytes from {name} {where}" for (name, where), n in self.by_source.items()]
        return ", ".join(parts) or "nothing fetched (the kept partial file was whole)"


class _Guard:
    """The sink a transport writes to during one guarded attempt (see ``_fetch_guarded``).

    It passes bytes to the real sink, counts them, and moves the attempt's cancel-scope
    deadline: each time ``floor * window`` bytes arrived, the next window starts (so a source
    must average ``floor`` bytes/s over every window), never past the attempt's deadline.
    """

    def __init__(
        self, inner: VerifyingSink, floor: float, window: float, budget: float | None
    ) -> None:
        self._inner = inner
        self._floor = floor
        self._window = window
        self._budget = budget
        self._quota = floor * window
        self._window_bytes = 0
        self._begun = 0.0
        self._final = math.inf
        self._scope = anyio.CancelScope()
        self.count = 0

    def arm(self) -> anyio.CancelScope:
        self._begun = anyio.current_time()
        self._final = math.inf if self._budget is None else self._begun + self._budget
        self._scope.deadline = self._next_deadline(self._begun)
        return self._scope

    def _next_deadline(self, now: float) -> float:
        return min(self._final, now + self._window) if self._floor else self._final

    @property
    def received(self) -> int:
        return self._inner.received

    async def write(self, data: bytes) -> None:
        await self._inner.write(data)
        self.count += len(data)
        if self._floor:
            self._window_bytes += len(data)
            if self._window_bytes >= self._quota:
                self._window_bytes = 0
                self._scope.deadline = self._next_deadline(anyio.current_time())

    def stall_error(self, locator: Locator) -> StallError:
        elapsed = anyio.current_time() - self._begun
        got = f"{self.count} bytes in {elapsed:.1f} s"
        if self._scope.deadline >= self._final:
            return StallError(
                f"{locator}: not done within the blob deadline of {self._budget:.0f} s ({got})"
            )
        return StallError(
            f"{locator}: slower than {self._floor:.0f} bytes/s over {self._window:g} s ({got})"
        )
