"""The process's BitTorrent host: one libtorrent engine shared by every transport instance.

libtorrent runs one session per process (:class:`~blackhole_sync_bittorrent.Engine` enforces
it), yet a process holds several transport instances: ``node run`` has the agent's peer
network (announcements, seeding) and, each cycle, an update manager's pool (fetching); the
origin has its peer network. They share one :class:`Host` through a lease (:func:`acquire`):
the first starts it, the last to let go stops it.

The engine lives in a task of its own, spawned on the host's event loop (an asyncio task, or
a trio system task), so that it is not tied to the task that happened to use it first: any
task may acquire and release it. It starts with the first lease and stops with the last one --
that is, with the host's transports: the agent's and the origin's peer network close theirs
when their task group ends; a pool closes its own with the manager. Closing stops every
transfer (unfinished downloads keep their resume data and staging file for the next process),
writes the status and the seeding record, and destroys the session.

State (``state_dir``, ``NODE/bittorrent/``), owned by one process at a time (a lock file; a
second process on the same directory -- ``node update`` while ``node run`` seeds -- runs on a
private temporary directory instead, without resume data)::

    resume/<btih>.fastresume   resume data of unfinished downloads
    downloads/<sha256>         downloads in progress, and finished ones while still seeded
                               from there (until ``seed`` adopts them from NODE/blobs)
    torrents/<btih>.torrent    torrents fetched or made here (checked again on every use)
    torrents/index.json        sha256 -> btih, and the file facts of the last verification
    seeding.json               the seeding record: what ``seed`` offers, since when, its
                               generation, bytes uploaded, why it stopped (ratio, time)
    status.json                what ``node status`` shows: what is seeded, ratios, totals
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.lowlevel
import anyio.to_thread
import sniffio

from blackhole_sync.errors import (
    ConfigurationError,
    DownloadError,
    LengthExceededError,
    LengthOrHashMismatchError,
    SourceUnavailableError,
    StallError,
)
from blackhole_sync.fetch import Sink

from ._engine import Engine
from ._errors import BittorrentError, TooLarge, TorrentRefused
from ._events import (
    Finished,
    PeerBanned,
    PieceHashFailed,
    ResumeDataRejected,
    Stalled,
    Started,
    TransferError,
    WebSeedFailed,
)
from ._options import BittorrentSettings
from ._settings import EngineConfig
from ._torrent import Torrent, create_torrent, sha256_file
from ._transfers import Download, Seed

__all__ = ["FetchReport", "Host", "Lease", "NoPeersError", "SwarmStalledError", "acquire"]

log = logging.getLogger("blackhole_sync_bittorrent")

#: Seconds between two looks at a download (prefix written, web seeds, time limits).
TICK: Final = 0.25
#: Seconds the verified prefix may stay put before its next pieces are asked for first.
PREFIX_LAG: Final = 3.0
#: Pieces after the prefix asked for first when it lags, and their deadline in milliseconds.
PREFIX_WINDOW: Final = 8
PREFIX_DEADLINE_MS: Final = 2000
#: Seconds from its first connected peer that a fetch waits for its first verified piece
#: before a stall brings in web seeds. A super-seeding seed (BEP 16: the origin) reveals
#: nothing to a new connection at first: libtorrent 2.1 skips the bootstrap HAVEs it means to
#: send at the handshake, and offers the first piece once the peer has been connected (and
#: uninterested) for 10 s -- a stall detector at the default ``stall_timeout`` (10 s) would
#: take that wait for a stall and fetch the blob from the origin's web seed instead of from
#: the swarm. 20 s leaves room for a busy host.
FIRST_PIECE_GRACE: Final = 20.0
#: Bytes read from a file and written into a sink per step.
COPY_CHUNK: Final = 1024 * 1024
#: Seconds between housekeeping rounds (seeding limits, status, record).
HOUSEKEEPING: Final = 2.0
#: Largest state file read back (seeding record, torrent index).
MAX_STATE_FILE: Final = 8 * 1024 * 1024
#: Torrents read from a repository's ``torrents/`` folder at most (once per folder): what an
#: origin seeds older releases under (the info hashes their manifests signed).
MAX_REPOSITORY_TORRENTS: Final = 10_000

STATUS_FILE: Final = "status.json"
SEEDING_FILE: Final = "seeding.json"


class NoPeersError(SourceUnavailableError):
    """No peer was known, or none connected within ``peer_timeout``."""


class SwarmStalledError(StallError):
    """The swarm delivered no verified byte for ``give_up_after`` seconds."""


@dataclass
class FetchReport:
    """What one fetch took, and from whom (logged, and summed into the status)."""

    btih: str
    length: int
    seconds: float = 0.0
    local: bool = False
    resumed: int = 0
    from_peers: int = 0
    from_web_seeds: int = 0
    from_origin: int = 0
    peers_seen: int = 0
    hash_failures: int = 0
    peers_banned: int = 0
    web_seeds_added: bool = False

    def describe(self) -> str:
        if self.local:
            return f"btih:{self.btih}: {self.length} bytes from a local copy"
        resumed = f", {self.resumed} resumed" if self.resumed else ""
        return (
            f"btih:{self.btih}: {self.length} bytes in {self.seconds:.1f} s{resumed}: "
            f"{self.from_peers} from peers ({self.from_origin} of them from configured peers), "
            f"{self.from_web_seeds} from web seeds; {self.peers_seen} peers seen, "
            f"{self.hash_failures} hash failures, {self.peers_banned} peers banned"
        )


@dataclass
class _Offered:
    """A blob ``seed`` offers (or ``publish`` seeds), while it is seeded."""

    sha256: str
    torrent: Torrent
    path: Path
    seed: Seed
    role: str  # "seed" | "publish"
    base_uploaded: int = 0  # uploaded by earlier seeds of it (the record's total)

    def uploaded(self) -> int:
        return self.base_uploaded + self.seed.stats().payload_uploaded


@dataclass
class _Totals:
    downloaded: int = 0
    from_peers: int = 0
    from_web_seeds: int = 0
    from_origin: int = 0
    fetches: int = 0
    hash_failures: int = 0
    peers_banned: int = 0
    last_fetch: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- the lease

_lock = threading.Lock()
_active: Host | None = None
_tasks: set[Any] = set()


class Lease:
    """One transport's use of the process's host; :meth:`release` it exactly once."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._released = False

    async def release(self) -> None:
        """Give the host back; the last lease stops it (idempotent)."""
        if self._released:
            return
        self._released = True
        await self.host._release()


async def acquire(settings: BittorrentSettings) -> Lease:
    """A lease on the process's host, started with ``settings`` if it is not running.

    A host on another ``state_dir`` is an error (:class:`ConfigurationError`); one that
    cannot start raises :class:`SourceUnavailableError`.
    """
    global _active
    while True:
        with _lock:
            host = _active
            if host is None:
                host = _active = Host(settings)
                host.users = 1
                creator = True
                break
            if not host.stopping:
                mine, theirs = settings.state_dir, host.settings.state_dir
                if mine is not None and theirs is not None and mine != theirs:
                    raise ConfigurationError(
                        f"a BitTorrent session on {theirs} already runs in this process; one "
                        f"on {mine} cannot run beside it (one libtorrent session per process)"
                    )
                host.users += 1
                creator = False
                break
            stopped = host.stopped
        await stopped.wait()
    if creator:
        _spawn_system_task(host._serve)
    await host.ready.wait()
    if host.error is not None or host._engine is None:
        await host._release()
        raise SourceUnavailableError(f"bittorrent: the session did not start: {host.error}")
    return Lease(host)


def _spawn_system_task(func: Any) -> None:
    """Run ``func()`` in a task of its own on the running event loop (not in a caller's task
    group: the engine must outlive the task that first used it)."""
    if sniffio.current_async_library() == "trio":
        import trio

        trio.lowlevel.spawn_system_task(func, name="blackhole-sync-bittorrent")
    else:
        import asyncio

        task = asyncio.get_running_loop().create_task(func(), name="blackhole-sync-bittorrent")
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


# ----------------------------------------------------------------------------- the host


class Host:
    """The engine and what it transfers for every transport instance of the process."""

    def __init__(self, settings: BittorrentSettings) -> None:
        self.settings = settings
        self.users = 0
        self.stopping = False
        self.ready = anyio.Event()
        self.stopped = anyio.Event()
        self.error: BaseException | None = None
        self._stop = anyio.Event()
        self._engine: Engine | None = None
        self._lock_fd: int | None = None
        self._temporary: Path | None = None
        self.state: Path = Path()
        self.shared_state = False
        self._running: dict[str, Download] = {}
        self._finished: dict[str, Download] = {}
        self._offered: dict[str, _Offered] = {}
        self._published: dict[str, _Offered] = {}
        self._record: dict[str, Any] = {"generation": 0, "blobs": {}}
        self._index: dict[str, dict[str, Any]] = {}
        #: a repository's ``torrents/`` folder -> its torrents by blob name (the origin's)
        self._repository_torrents: dict[Path, dict[str, list[Torrent]]] = {}
        self._seed_lock = anyio.Lock()
        self._totals = _Totals()
        self._last_status = ""
        self._record_dirty = False

    # -- facts

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise SourceUnavailableError("bittorrent: the session is not running")
        return self._engine

    def addresses(self) -> list[str]:
        if self._engine is None:
            return []
        host, port = self._engine.dht_address
        if not self.settings.loopback_only and self.settings.listen_host not in ("0.0.0.0", "::"):  # noqa: S104
            host = self.settings.listen_host
        return [f"{host}:{port}"]

    # -- lifecycle

    async def _release(self) -> None:
        with _lock:
            self.users -= 1
            last = self.users == 0
            if last:
                self.stopping = True
        if last:
            with anyio.CancelScope(shield=True):
                self._stop.set()
                await self.stopped.wait()

    async def _serve(self) -> None:
        global _active
        try:
            await anyio.to_thread.run_sync(self._open_state)
            config = await self._engine_config()
            async with Engine(config) as engine:
                self._engine = engine
                self.ready.set()
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._housekeeping)
                        await self._stop.wait()
                        tg.cancel_scope.cancel()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._wind_down()
        except Exception as exc:  # noqa: BLE001 - reported to every acquirer (and logged)
            self.error = exc
            log.warning("bittorrent: the session stopped: %s: %s", type(exc).__name__, exc)
        finally:
            self._engine = None
            with _lock:
                if _active is self:
                    _active = None
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close_state)
            self.ready.set()
            self.stopped.set()

    async def _engine_config(self) -> EngineConfig:
        s = self.settings
        nodes = [await _resolve(host, port) for host, port in s.dht_bootstrap]
        return EngineConfig(
            state_dir=self.state / "resume",
            loopback_only=s.loopback_only,
            listen_port=s.port if self.shared_state else 0,
            listen_host=s.listen_host,
            upload_rate_limit=s.upload_limit,
            download_rate_limit=s.download_limit,
            enable_dht=s.dht,
            dht_nodes=tuple(nodes),
            dht_routers=s.dht_routers,
            max_connections=s.max_connections,
        )

    def _open_state(self) -> None:
        """Take the state directory (or a private temporary one: see the module docstring)."""
        wanted = self.settings.state_dir
        if wanted is not None:
            wanted.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(wanted / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                log.warning(
                    "bittorrent: %s is used by another process; this one runs on a "
                    "temporary directory (no resume data, no seeding record)",
                    wanted,
                )
            else:
                self._lock_fd = fd
                self.state = wanted
                self.shared_state = True
        if not self.shared_state:
            self._temporary = Path(tempfile.mkdtemp(prefix="bhsync-bt-"))
            self.state = self._temporary
        for sub in ("resume", "downloads", "torrents"):
            (self.state / sub).mkdir(mode=0o700, exist_ok=True)
        self._record = _load_json(self.state / SEEDING_FILE, {"generation": 0, "blobs": {}})
        if not isinstance(self._record.get("blobs"), dict):
            self._record = {"generation": 0, "blobs": {}}
        self._index = _load_json(self.state / "torrents" / "index.json", {})
        # Finished downloads of an earlier process are not resumable (no resume data): gone.
        resumable = {p.stem for p in (self.state / "resume").glob("*.fastresume")}
        for path in (self.state / "downloads").iterdir():
            if self._entry(path.name).get("btih") not in resumable:
                with contextlib.suppress(OSError):
                    path.unlink()

    def _close_state(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None

    async def _wind_down(self) -> None:
        """Stop every transfer; finished downloads' staging copies go (the core holds the
        verified blob); write the record and the status one last time."""
        for btih, download in list(self._finished.items()):
            self._finished.pop(btih, None)
            await download.stop()
            with contextlib.suppress(OSError):
                await anyio.to_thread.run_sync(download.path.unlink)
        for offered in [*self._offered.values(), *self._published.values()]:
            self._fold(offered)
            await offered.seed.stop()
        self._offered.clear()
        self._published.clear()
        await self._write_state(force=True)

    # -- torrents

    def _entry(self, sha256: str) -> dict[str, Any]:
        entry = self._index.get(sha256)
        if not isinstance(entry, dict):
            entry = self._index[sha256] = {}
        return entry

    def _torrent_path(self, btih: str) -> Path:
        return self.state / "torrents" / f"{btih}.torrent"

    def cached_torrent(self, btih: str, max_length: int) -> Torrent | None:
        """A torrent of ``btih`` kept here, checked again (blocking)."""
        try:
            with open(self._torrent_path(btih), "rb") as f:
                data = f.read(MAX_STATE_FILE)
            return Torrent.from_bytes(data, expected_btih=btih, max_length=max_length)
        except TooLarge as exc:
            raise LengthExceededError(f"btih:{btih}: {exc}") from exc
        except (OSError, TorrentRefused, ValueError):
            return None

    def keep_torrent(self, torrent: Torrent) -> None:
        """Keep a checked torrent for later fetches and seeds (blocking)."""
        path = self._torrent_path(torrent.btih)
        if not path.exists():
            _write_atomic(path, torrent.data)

    async def verified_torrent(self, path: Path, sha256: str) -> Torrent:
        """The torrent of the file at ``path`` after checking that its sha256 is ``sha256``
        (the check is skipped when the file's size, mtime, inode and device are those of the
        last check here); :class:`LengthOrHashMismatchError` when it is not."""
        return await anyio.to_thread.run_sync(self._verified_torrent, Path(path), sha256)

    def _verified_torrent(self, path: Path, sha256: str) -> Torrent:
        try:
            info = os.stat(path)
        except OSError as exc:
            raise DownloadError(f"bittorrent: cannot read {path}: {exc}") from exc
        facts = [info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev]
        known = self._entry(sha256)
        checked_before = known.get("stat") == facts
        if not checked_before and sha256_file(path) != sha256:
            raise LengthOrHashMismatchError(f"{path.name}: its sha256 is not {sha256}")
        torrent = None
        btih = known.get("btih")
        if isinstance(btih, str):
            torrent = self.cached_torrent(btih, info.st_size)
            if torrent is not None and (torrent.name != sha256 or torrent.length != info.st_size):
                torrent = None
        from_repository = False
        if torrent is None:
            torrent = self._repository_torrent(path, sha256, info.st_size)
            from_repository = torrent is not None
            checked_before = checked_before and not from_repository  # rebuilt and compared below
        try:
            if torrent is not None and not checked_before:
                # The torrent a download used came from a signed locator: the blob is seeded
                # under it (its piece size may be an earlier rule's) once the file gives the
                # same info hash -- a lying locator's torrent may carry this blob's name and
                # length with other pieces, and seeding under it would serve nobody.
                made = create_torrent(path, sha256_hex=sha256, piece_size=torrent.piece_length)
                torrent = torrent if made.btih == torrent.btih else None
                if torrent is not None and from_repository:
                    self.keep_torrent(torrent)  # found by its info hash from now on
            if torrent is None:
                torrent = create_torrent(path, sha256_hex=sha256)
                self.keep_torrent(torrent)
        except (BittorrentError, ValueError) as exc:
            raise DownloadError(f"bittorrent: no torrent for {path.name}: {exc}") from exc
        self._index[sha256] = {"btih": torrent.btih, "stat": facts}
        _write_atomic(self.state / "torrents" / "index.json", _dump(self._index))
        return torrent

    def _repository_torrent(self, path: Path, sha256: str, length: int) -> Torrent | None:
        """The ``.torrent`` a repository serves for the blob at ``path`` (``REPO/blobs/<sha>``
        beside ``REPO/torrents/``), or None: the torrent the release's manifest signed, which
        an origin must seed under even when it was built under an earlier piece-size rule.
        A candidate only: the caller seeds under it only if the file rebuilds its info hash.
        At most :data:`MAX_REPOSITORY_TORRENTS` files are read, once per folder."""
        if path.parent.name != "blobs":
            return None
        folder = path.parent.parent / "torrents"
        by_name = self._repository_torrents.get(folder)
        if by_name is None:
            by_name = {}
            try:
                entries = sorted(folder.glob("*.torrent"))[:MAX_REPOSITORY_TORRENTS]
            except OSError:
                entries = []
            for entry in entries:
                try:
                    with open(entry, "rb") as f:
                        found = Torrent.from_bytes(f.read(MAX_STATE_FILE))
                except (OSError, TorrentRefused, ValueError):
                    continue  # not a torrent this plugin made: ignored
                by_name.setdefault(found.name, []).append(found)
            self._repository_torrents[folder] = by_name
        return next((t for t in by_name.get(sha256, []) if t.length == length), None)

    # -- fetching

    def local_copy(self, btih: str) -> Path | None:
        """A verified complete file of ``btih`` this process seeds, if any."""
        for offered in [*self._offered.values(), *self._published.values()]:
            if offered.torrent.btih == btih:
                return offered.path
        finished = self._finished.get(btih)
        return None if finished is None else finished.path

    async def fetch_into(
        self,
        torrent: Torrent,
        sink: Sink,
        *,
        max_length: int,
        web_seeds: list[str],
    ) -> FetchReport:
        """Fill ``sink`` with the torrent's file: from a local copy, else from the swarm (see
        :class:`_SwarmFetch`). The caller's sink judges the whole."""
        if torrent.length > max_length:
            raise LengthExceededError(
                f"btih:{torrent.btih}: the torrent's file is {torrent.length} bytes, more than "
                f"the {max_length}-byte cap"
            )
        local = self.local_copy(torrent.btih)
        if local is not None:
            await copy_into(local, sink, 0, torrent.length)
            return FetchReport(torrent.btih, torrent.length, local=True)
        if torrent.btih in self._running:
            raise SourceUnavailableError(f"btih:{torrent.btih} is being fetched already here")
        await anyio.to_thread.run_sync(self._index_download, torrent)
        engine = self.engine
        try:
            download = await engine.download(
                torrent,
                self.state / "downloads",
                max_length=max_length,
                peers=list(self.settings.peers),
                use_dht=self.settings.dht,
                stall_timeout=self.settings.stall_timeout,
            )
        except TooLarge as exc:
            raise LengthExceededError(f"btih:{torrent.btih}: {exc}") from exc
        except (BittorrentError, RuntimeError, ValueError, OSError) as exc:
            raise SourceUnavailableError(f"btih:{torrent.btih}: {exc}") from exc
        self._running[torrent.btih] = download
        done = False
        try:
            report = await _SwarmFetch(self, torrent, download, sink, web_seeds).run()
            done = True
        finally:
            self._running.pop(torrent.btih, None)
            if done:
                self._finished[torrent.btih] = download  # seeded from staging until adopted
            else:
                with anyio.CancelScope(shield=True):
                    await download.stop()
        self._count(report)
        log.info("bittorrent: %s", report.describe())
        return report

    def _index_download(self, torrent: Torrent) -> None:
        self.keep_torrent(torrent)
        entry = self._entry(torrent.name)
        if entry.get("btih") != torrent.btih:
            entry["btih"] = torrent.btih
            entry.pop("stat", None)
            _write_atomic(self.state / "torrents" / "index.json", _dump(self._index))

    def _count(self, report: FetchReport) -> None:
        t = self._totals
        t.fetches += 1
        t.downloaded += report.from_peers + report.from_web_seeds
        t.from_peers += report.from_peers
        t.from_web_seeds += report.from_web_seeds
        t.from_origin += report.from_origin
        t.hash_failures += report.hash_failures
        t.peers_banned += report.peers_banned
        t.last_fetch = {
            "btih": report.btih,
            "length": report.length,
            "seconds": round(report.seconds, 3),
            "resumed": report.resumed,
            "from_peers": report.from_peers,
            "from_web_seeds": report.from_web_seeds,
            "from_origin": report.from_origin,
            "peers_seen": report.peers_seen,
            "web_seeds_added": report.web_seeds_added,
        }

    # -- seeding

    async def publish(self, path: Path, sha256: str) -> Torrent:
        """Seed the verified file at ``path`` (the origin; not subject to the seeding policy)."""
        torrent = await self.verified_torrent(path, sha256)
        async with self._seed_lock:
            if sha256 in self._published or sha256 in self._offered:
                return torrent
            await self._drop_finished(torrent.btih)
            seed = await self._start_seed(torrent, path, super_seeding=self.settings.super_seeding)
            self._published[sha256] = _Offered(sha256, torrent, Path(path), seed, "publish")
        return torrent

    async def offer(self, blobs: Mapping[str, Path]) -> list[str]:
        """Seed exactly ``blobs`` as the seeding policy allows; withdraw what an earlier call
        offered that is no longer among them. Returns the problems met (each blob is tried)."""
        problems: list[str] = []
        async with self._seed_lock:
            record: dict[str, Any] = self._record["blobs"]
            new = [sha for sha in blobs if sha not in record]
            if new:
                self._record["generation"] = int(self._record.get("generation", 0)) + 1
            generation = int(self._record.get("generation", 0))
            now = time.time()
            for sha in new:
                record[sha] = {"since": now, "generation": generation, "uploaded": 0}
                self._record_dirty = True
            for sha in sorted(set(record) - set(blobs)):  # withdrawn: pruned by the node
                offered = self._offered.pop(sha, None)
                if offered is not None:
                    await offered.seed.stop()
                del record[sha]
                self._record_dirty = True
            newest = max((int(record[sha].get("generation", 0)) for sha in blobs), default=0)
            for sha, path in sorted(blobs.items()):
                entry = record[sha]
                reason = self._policy_stop(entry, newest, now)
                if reason is not None:
                    await self._stop_offered(sha, reason)
                    continue
                if sha in self._offered or sha in self._published:
                    continue
                try:
                    torrent = await self.verified_torrent(Path(path), sha)
                except (DownloadError, LengthOrHashMismatchError) as exc:
                    problems.append(f"{sha[:12]}: {exc}")
                    continue
                if torrent.btih in self._running:
                    continue  # being fetched: offered once it is in NODE/blobs and done
                await self._drop_finished(torrent.btih)
                try:
                    seed = await self._start_seed(torrent, Path(path), super_seeding=False)
                except DownloadError as exc:
                    problems.append(f"{sha[:12]}: {exc}")
                    continue
                entry["btih"] = torrent.btih
                entry["length"] = torrent.length
                self._offered[sha] = _Offered(
                    sha, torrent, Path(path), seed, "seed", int(entry.get("uploaded", 0))
                )
                self._record_dirty = True
        await self._write_state(force=True)
        return problems

    def _policy_stop(self, entry: Mapping[str, Any], newest: int, now: float) -> str | None:
        """Why the seeding policy stops this blob now (None: it may be seeded)."""
        s = self.settings
        if s.seed_policy == "none":
            return "policy none"
        if entry.get("stopped"):
            return str(entry["stopped"])
        if s.seed_policy == "current" and int(entry.get("generation", 0)) < newest:
            return "not the current version's"
        if s.seed_time and now - float(entry.get("since", now)) >= s.seed_time:
            return "seed_time reached"
        length = int(entry.get("length", 0))
        if s.seed_ratio and length and int(entry.get("uploaded", 0)) >= s.seed_ratio * length:
            return "seed_ratio reached"
        return None

    async def _stop_offered(self, sha: str, reason: str) -> None:
        offered = self._offered.pop(sha, None)
        if offered is not None:
            self._fold(offered)
            await offered.seed.stop()
            log.info("bittorrent: stopped seeding %s: %s", sha[:12], reason)
        entry = self._record["blobs"].get(sha)
        if entry is not None and reason in ("seed_time reached", "seed_ratio reached"):
            if entry.get("stopped") != reason:
                entry["stopped"] = reason
                self._record_dirty = True

    def _fold(self, offered: _Offered) -> None:
        """Record what a seed uploaded into the seeding record (before it stops)."""
        entry = self._record["blobs"].get(offered.sha256)
        if entry is not None and offered.role == "seed":
            entry["uploaded"] = offered.uploaded()
            self._record_dirty = True

    async def _start_seed(self, torrent: Torrent, path: Path, *, super_seeding: bool) -> Seed:
        try:
            return await self.engine.seed(
                torrent, path, super_seeding=super_seeding, use_dht=self.settings.dht
            )
        except (BittorrentError, RuntimeError, ValueError, OSError) as exc:
            raise DownloadError(f"bittorrent: cannot seed {path.name}: {exc}") from exc

    async def _drop_finished(self, btih: str) -> None:
        """A finished download of ``btih`` gives way to a seed of the kept blob."""
        download = self._finished.pop(btih, None)
        if download is not None:
            await download.stop()
            with contextlib.suppress(OSError):
                await anyio.to_thread.run_sync(download.path.unlink)

    # -- housekeeping: limits, status, record

    async def _housekeeping(self) -> None:
        while True:
            await anyio.sleep(HOUSEKEEPING)
            async with self._seed_lock:
                now = time.time()
                record = self._record["blobs"]
                newest = max((int(e.get("generation", 0)) for e in record.values()), default=0)
                for sha, offered in list(self._offered.items()):
                    entry = record.get(sha)
                    if entry is None:
                        continue
                    uploaded = offered.uploaded()
                    if uploaded != entry.get("uploaded"):
                        entry["uploaded"] = uploaded
                        self._record_dirty = True
                    reason = self._policy_stop(entry, newest, now)
                    if reason is not None:
                        await self._stop_offered(sha, reason)
            await self._write_state()

    def status(self) -> dict[str, Any]:
        """What ``node status`` shows (also ``status.json``)."""
        seeding = []
        for offered in [*self._published.values(), *self._offered.values()]:
            stats = offered.seed.stats()
            uploaded = offered.uploaded()
            length = offered.torrent.length
            seeding.append(
                {
                    "sha256": offered.sha256,
                    "btih": offered.torrent.btih,
                    "length": length,
                    "role": offered.role,
                    "uploaded": uploaded,
                    "ratio": round(uploaded / length, 3) if length else 0.0,
                    "peers": stats.num_peers,
                }
            )
        engine_stats = self._engine.stats() if self._engine is not None else None
        uploaded = engine_stats.payload_uploaded if engine_stats else 0
        t = self._totals
        total_length = sum(x["length"] for x in seeding)
        total_up = sum(x["uploaded"] for x in seeding)
        ratio = round(total_up / total_length, 3) if total_length else 0.0
        summary = (
            f"seeding {len(seeding)} blob{'s' if len(seeding) != 1 else ''}, ratio {ratio}; "
            f"{uploaded} bytes uploaded, {t.downloaded} downloaded by this process"
        )
        return {
            "summary": summary,
            "pid": os.getpid(),
            "listen": (self.addresses() or [None])[0],
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seeding": seeding,
            "ratio": ratio,
            "uploaded": uploaded,
            "downloaded": t.downloaded,
            "from_peers": t.from_peers,
            "from_web_seeds": t.from_web_seeds,
            "from_origin": t.from_origin,
            "fetches": t.fetches,
            "hash_failures": t.hash_failures,
            "peers_banned": t.peers_banned,
            "peers_seen": engine_stats.peers_seen if engine_stats else 0,
            "last_fetch": t.last_fetch or None,
        }

    async def _write_state(self, *, force: bool = False) -> None:
        if not self.shared_state:
            return
        status = self.status()
        text = _dump({k: v for k, v in status.items() if k != "updated"})
        writes: list[tuple[Path, bytes]] = []
        if force or text != self._last_status:
            self._last_status = text
            writes.append((self.state / STATUS_FILE, _dump(status)))
        if force or self._record_dirty:
            self._record_dirty = False
            writes.append((self.state / SEEDING_FILE, _dump(self._record)))
        for path, data in writes:
            with contextlib.suppress(OSError):
                await anyio.to_thread.run_sync(_write_atomic, path, data)


# ----------------------------------------------------------------------------- one fetch


class _SwarmFetch:
    """One download from the swarm into a sink, written as its verified prefix grows.

    Each tick: the pieces libtorrent verified that continue the prefix are read from the
    staging file, each checked against its piece hash (libtorrent may report a piece before
    all of it is written), and written into the sink (so the core sees steady progress and
    checks the whole at the end); when the prefix has not moved for :data:`PREFIX_LAG`
    seconds, the next :data:`PREFIX_WINDOW` pieces are asked for first (the rest stays
    rarest-first, which is what spreads pieces over the swarm). The node's http(s) sources
    become web seeds after a stall (:class:`Stalled`, ``stall_timeout``; before the first
    verified piece, not within :data:`FIRST_PIECE_GRACE` seconds from the first connected
    peer: a super-seeding origin starts slowly) -- so peers carry the load while there are
    any. Without any peer for ``peer_timeout`` seconds, or without a verified byte for
    ``give_up_after`` seconds, the fetch fails and the core moves on to its other sources.
    """

    def __init__(
        self, host: Host, torrent: Torrent, download: Download, sink: Sink, web_seeds: list[str]
    ) -> None:
        self.host = host
        self.torrent = torrent
        self.download = download
        self.sink = sink
        self.web_seeds = web_seeds if host.settings.web_seed else []
        self.report = FetchReport(torrent.btih, torrent.length)
        self.web_added = False
        self.next_piece = 0
        self.deadlines = False
        self.progressed = False  # a piece was verified during this fetch
        self.hashes = torrent.piece_hashes()
        self.unwritten: tuple[int, float] | None = None  # (piece, since) verified, not on disk
        self.deferred_stall = False  # a stall before the first piece, judged at the grace

    async def add_web_seeds(self, why: str) -> None:
        if self.web_added or not self.web_seeds:
            return
        self.web_added = True
        self.report.web_seeds_added = True
        for url in self.web_seeds:
            try:
                await self.download.add_web_seed(url)
            except (ValueError, OSError, RuntimeError) as exc:
                log.info("bittorrent: web seed %s not added: %s", url, exc)
        log.info("bittorrent: btih:%s: web seeds added (%s)", self.torrent.btih, why)

    async def run(self) -> FetchReport:
        s = self.host.settings
        torrent = self.torrent
        started = last_progress = prefix_moved = time.monotonic()
        last_have = -1
        peer_seen = False
        first_peer_at: float | None = None
        finished = False

        def first_piece_due(now: float) -> bool:
            """Whether a stall now counts: a piece came before, or the grace from the first
            connected peer is over (with no peer yet, ``peer_timeout`` decides)."""
            if self.progressed:
                return True
            return first_peer_at is not None and now - first_peer_at >= FIRST_PIECE_GRACE

        with self.download.events() as events:
            while True:
                for event in _drain(events):
                    if isinstance(event, Stalled):
                        if first_piece_due(time.monotonic()):
                            await self.add_web_seeds(f"stalled for {event.idle_seconds:.0f} s")
                        else:
                            self.deferred_stall = True  # a super-seeding seed may be starting
                    elif isinstance(event, Started):
                        self.report.resumed = event.have_bytes if event.from_resume_data else 0
                    elif isinstance(event, Finished):
                        finished = True
                    elif isinstance(event, PeerBanned):
                        log.warning("bittorrent: banned peer %s:%d", *event.address)
                    elif isinstance(event, PieceHashFailed):
                        log.info("bittorrent: piece %d failed its hash check", event.piece)
                    elif isinstance(event, WebSeedFailed):
                        log.info("bittorrent: web seed %s: %s", event.url, event.message)
                    elif isinstance(event, ResumeDataRejected):
                        log.info("bittorrent: resume data rejected: %s", event.message)
                    elif isinstance(event, TransferError):
                        raise SourceUnavailableError(f"btih:{torrent.btih}: {event.message}")
                now = time.monotonic()
                stats = self.download.stats()
                if stats.have_bytes > last_have:
                    self.progressed = self.progressed or last_have >= 0
                    last_have = stats.have_bytes
                    last_progress = now
                if stats.num_peers and not peer_seen:
                    peer_seen = True
                    first_peer_at = now
                if self.deferred_stall and first_piece_due(now):
                    self.deferred_stall = False
                    if not self.progressed:
                        await self.add_web_seeds(f"no piece in {now - started:.0f} s")
                if await self._write_prefix(finished or self.download.finished):
                    prefix_moved = now
                if self.next_piece >= torrent.num_pieces:
                    break
                if now - prefix_moved >= PREFIX_LAG and not self.deadlines:
                    await self._ask_prefix_first()
                if not peer_seen and now - started >= s.peer_timeout:
                    # No swarm to relieve the origin: the core's own sources serve the blob
                    # faster, and resume by range (web seeds are for a swarm that stalls).
                    raise NoPeersError(f"btih:{torrent.btih}: no peer within {s.peer_timeout:g} s")
                can_web = bool(self.web_seeds)
                if now - last_progress >= s.give_up_after and (self.web_added or not can_web):
                    raise SwarmStalledError(
                        f"btih:{torrent.btih}: no verified byte for {s.give_up_after:g} s "
                        f"({stats.num_peers} peers, {stats.num_seeds} seeds"
                        f"{', web seeds on' if self.web_added else ''})"
                    )
                await anyio.sleep(TICK)
        stats = self.download.stats()
        self.report.seconds = time.monotonic() - started
        self.report.from_peers = stats.from_peers
        self.report.from_web_seeds = stats.from_web_seeds
        self.report.from_origin = min(
            stats.from_peers, self.download.received_from(self.host.settings.peers)
        )
        self.report.peers_seen = stats.peers_seen
        self.report.hash_failures = stats.hash_failures
        self.report.peers_banned = stats.peers_banned
        return self.report

    async def _write_prefix(self, complete: bool) -> bool:
        """Write the verified pieces that continue the prefix; whether it moved."""
        torrent = self.torrent
        if complete:
            ready = torrent.num_pieces
        else:
            pieces = await self.download.verified_pieces()
            ready = self.next_piece
            while ready < len(pieces) and pieces[ready]:
                ready += 1
        if ready <= self.next_piece:
            return False
        moved = False
        with open(self.download.path, "rb") as f:
            while self.next_piece < ready:
                index = self.next_piece
                start = index * torrent.piece_length
                size = min(torrent.piece_length, torrent.length - start)
                data = await anyio.to_thread.run_sync(
                    _read_piece, f.fileno(), start, size, self.hashes[index]
                )
                if data is None:
                    # libtorrent counts a piece as verified once its hash passed, which can
                    # be before all of it is written: read it again at the next tick
                    self._not_written_yet(index)
                    break
                await self.sink.write(data)
                self.next_piece += 1
                moved = True
        if not moved:
            return False
        self.unwritten = None
        if self.deadlines:
            self.deadlines = False
            await self.download.clear_piece_deadlines()
        return True

    def _not_written_yet(self, index: int) -> None:
        """Note that piece ``index`` is verified but its bytes on disk are not (yet) its own;
        past ``give_up_after`` seconds that is a failure, not a write in progress."""
        now = time.monotonic()
        if self.unwritten is None or self.unwritten[0] != index:
            self.unwritten = (index, now)
        elif now - self.unwritten[1] >= self.host.settings.give_up_after:
            raise DownloadError(
                f"bittorrent: btih:{self.torrent.btih}: piece {index} on disk does not match "
                f"its hash {now - self.unwritten[1]:.0f} s after libtorrent verified it"
            )

    async def _ask_prefix_first(self) -> None:
        window = range(
            self.next_piece, min(self.next_piece + PREFIX_WINDOW, self.torrent.num_pieces)
        )
        self.deadlines = True
        await self.download.set_piece_deadlines(window, PREFIX_DEADLINE_MS)


def _drain(events: Any) -> list[Any]:
    out = []
    while True:
        try:
            out.append(events.receive_nowait())
        except anyio.WouldBlock:
            return out
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return out


async def copy_into(path: Path, sink: Sink, start: int, end: int) -> None:
    """Write bytes ``start..end`` of the file at ``path`` into ``sink``, a chunk at a time
    (a cancellation point between chunks)."""
    position = start
    with open(path, "rb") as f:
        while position < end:
            size = min(COPY_CHUNK, end - position)
            chunk = await anyio.to_thread.run_sync(_pread, f.fileno(), size, position)
            if len(chunk) != size:
                raise DownloadError(
                    f"bittorrent: {path.name} ended at byte {position + len(chunk)}"
                )
            await sink.write(chunk)
            position += size
            await anyio.lowlevel.checkpoint()


def _read_piece(fd: int, offset: int, size: int, sha1: bytes) -> bytes | None:
    """The ``size`` bytes at ``offset`` when their SHA-1 is ``sha1``, else None (blocking)."""
    data = os.pread(fd, size, offset)
    if len(data) != size or hashlib.sha1(data).digest() != sha1:  # noqa: S324 - BitTorrent v1
        return None
    return data


def _pread(fd: int, size: int, offset: int) -> bytes:
    return os.pread(fd, size, offset)


async def _resolve(host: str, port: int) -> tuple[str, int]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    return str(infos[0][4][0]), port


def _dump(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()


def _load_json(path: Path, default: Any) -> Any:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATE_FILE + 1)
        if len(data) > MAX_STATE_FILE:
            return default
        value = json.loads(data)
    except (OSError, ValueError):
        return default
    return value if isinstance(value, type(default)) else default


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
