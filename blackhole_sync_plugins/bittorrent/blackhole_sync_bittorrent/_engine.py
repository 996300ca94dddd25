"""The engine: one libtorrent session per process, driven from anyio (asyncio or trio).

::

    async with Engine(EngineConfig(state_dir=...)) as engine:
        seed = await engine.seed(torrent, "/srv/node/blobs/<sha256>", upload_limit=2_000_000)
        download = await engine.download(torrent, staging_dir, max_length=cap, peers=[...])
        async for event in download.events(): ...
        path = await download.wait_finished()
        await download.stop()

Threads: every call into libtorrent that may block runs in a worker thread
(``anyio.to_thread``). One background task (the *pump*) waits for alerts in a worker thread
(``session.wait_for_alert``), converts them to plain records while they are valid, polls the
status and peers of every transfer once per tick, and hands the batch back to the event loop,
which updates counters, sends events and runs the stall detector. Nothing here blocks the
event loop, and nothing starts a hidden event loop.

Seeding: a complete file is seeded from where it is, read-only: its directory is the save
path and the torrent's file is renamed to the file's name. By default the torrent is added in
*seed mode* (libtorrent trusts that the file is complete and hashes each piece the first time
it is requested, so seeding starts at once without reading the whole file); ``verify=True``
hashes the whole file first instead (slower start, and a damaged file is seen before anything
is served). In both cases the torrent is in *upload mode*, so a seed never requests a piece
and never writes to the file, even if a piece turns out damaged.

Downloads write ``<staging_dir>/<sha256>``; libtorrent verifies every piece against both the
v1 and v2 hashes, and the smart-ban plugin bans a peer that sent bad data. The caller still
checks the sha256 of the finished file before using it. Resume data is saved in
``state_dir/<btih>.fastresume`` every ``resume_save_interval`` seconds (only if it changed)
and when the download is stopped, and is loaded when the same torrent is downloaded again.

Closing (:meth:`Engine.aclose`, or leaving ``async with``) stops every transfer (saving resume
data of unfinished downloads), pauses the session, stops the tasks and destroys the session
in a worker thread; libtorrent's destructor joins its threads and closes every socket.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, cast

import anyio
import anyio.abc
import libtorrent as lt
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from nacl.signing import SigningKey

from ._dht import DhtClient, MutableItem, libtorrent_secret_key
from ._errors import DhtError, LengthMismatch, TooLarge, TransferFailed
from ._events import (
    EngineStats,
    Event,
    Finished,
    PeerBanned,
    PieceHashFailed,
    Progress,
    ResumeDataRejected,
    Stalled,
    Started,
    TransferError,
    TransferStats,
    WebSeedFailed,
)
from ._settings import EngineConfig, build_settings, peer_class_filter
from ._torrent import MAX_TORRENT_BYTES, Torrent

__all__ = ["Download", "Engine", "Seed"]

BLOCK_SIZE: Final = 16 * 1024
EVENT_BUFFER: Final = 1024
"""Events buffered per download; past that, new events are dropped (and counted)."""
STOP_TIMEOUT: Final = 10.0
"""Longest wait for resume data when a download stops."""
STARTUP_TIMEOUT: Final = 10.0
"""Longest wait for the session to listen."""

_ACTIVE_LOCK = threading.Lock()
_ACTIVE = False

_WEB_CONNECTIONS: Final = frozenset({int(lt.peer_info.web_seed), int(lt.peer_info.http_seed)})


# ----------------------------------------------------------------------------- pump records


@dataclass(frozen=True)
class _Record:
    """An alert turned into plain data inside the pump thread."""

    kind: str
    handle: lt.torrent_handle | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Status:
    checking: bool
    have_bytes: int
    payload_downloaded: int
    payload_uploaded: int
    num_peers: int
    num_seeds: int
    download_rate: int
    upload_rate: int
    finished: bool
    need_save_resume: bool
    peers: tuple[tuple[str, int, str, int, int], ...]
    """(peer id hex, connection type, ip, port, payload bytes received) of each connection."""


def _endpoint(alert: Any) -> tuple[str, int]:
    host, port = alert.endpoint
    return str(host), int(port)


def _convert(alert: Any) -> _Record | None:
    """Plain data from one alert (alerts die at the next ``pop_alerts``)."""
    if isinstance(alert, lt.block_finished_alert):
        return _Record(
            "block",
            alert.handle,
            {
                "endpoint": _endpoint(alert),
                "piece": int(alert.piece_index),
                "block": int(alert.block_index),
            },
        )
    if isinstance(alert, lt.hash_failed_alert):
        return _Record("hash_failed", alert.handle, {"piece": int(alert.piece_index)})
    if isinstance(alert, lt.peer_ban_alert):
        return _Record("banned", alert.handle, {"endpoint": _endpoint(alert)})
    if isinstance(alert, lt.torrent_finished_alert):
        return _Record("finished", alert.handle)
    if isinstance(alert, lt.torrent_checked_alert):
        return _Record("checked", alert.handle)
    if isinstance(alert, lt.save_resume_data_alert):
        return _Record(
            "resume", alert.handle, {"data": bytes(lt.write_resume_data_buf(alert.params))}
        )
    if isinstance(alert, lt.save_resume_data_failed_alert):
        return _Record("resume_failed", alert.handle, {"message": alert.message()})
    if isinstance(alert, lt.fastresume_rejected_alert):
        return _Record("resume_rejected", alert.handle, {"message": alert.message()})
    if isinstance(alert, lt.url_seed_alert):
        return _Record(
            "web_seed_failed",
            alert.handle,
            {"url": str(alert.server_url), "message": alert.message()},
        )
    if isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
        return _Record("error", alert.handle, {"message": alert.message()})
    if isinstance(alert, lt.dht_bootstrap_alert):
        return _Record("dht_bootstrap")
    if isinstance(alert, lt.dht_put_alert):
        return _Record(
            "dht_put",
            data={
                "key": (bytes(alert.public_key), bytes(alert.salt)),
                "seq": int(alert.seq),
                "num_success": int(alert.num_success),
            },
        )
    if isinstance(alert, lt.dht_mutable_item_alert):
        return _Record(
            "dht_item",
            data={
                "key": (bytes(alert.key), bytes(alert.salt)),
                "seq": int(alert.seq),
                "value": alert.item,
                "signature": bytes(alert.signature),
                "authoritative": bool(alert.authoritative),
            },
        )
    if isinstance(alert, lt.alerts_dropped_alert):
        return _Record("dropped")
    return None


def _snapshot(handle: lt.torrent_handle) -> _Status | None:
    if not handle.is_valid():
        return None
    status = handle.status()
    peers = tuple(
        (
            bytes(p.pid.to_bytes()).hex(),
            int(p.connection_type),
            str(p.ip[0]),
            int(p.ip[1]),
            int(p.total_download),
        )
        for p in handle.get_peer_info()
    )
    return _Status(
        checking=status.state
        in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data),
        have_bytes=int(status.total_wanted_done),
        payload_downloaded=int(status.total_payload_download),
        payload_uploaded=int(status.total_payload_upload),
        num_peers=int(status.num_peers),
        num_seeds=int(status.num_seeds),
        download_rate=int(status.download_payload_rate),
        upload_rate=int(status.upload_payload_rate),
        finished=bool(status.is_finished),
        need_save_resume=bool(status.need_save_resume),
        peers=peers,
    )


# ----------------------------------------------------------------------------- transfers


class _Transfer:
    """What seeds and downloads share: the handle, counters and stopping."""

    role: Literal["seed", "download"]

    def __init__(self, engine: Engine, torrent: Torrent, handle: lt.torrent_handle) -> None:
        self._engine = engine
        self._handle = handle
        self.torrent = torrent
        self._status: _Status | None = None
        self._web_by_blocks = 0
        self._web_by_connection: dict[tuple[str, int], tuple[int, int]] = {}
        self._hash_failures = 0
        self._banned = 0
        self._peers_seen: set[str] = set()
        self._web_endpoints: set[tuple[str, int]] = set()
        self._stopped = False
        last_piece = torrent.length - (torrent.num_pieces - 1) * torrent.piece_length
        self._last_piece_length = last_piece

    @property
    def btih(self) -> str:
        return self.torrent.btih

    def _block_length(self, piece: int, block: int) -> int:
        size = (
            self._last_piece_length
            if piece == self.torrent.num_pieces - 1
            else self.torrent.piece_length
        )
        return max(0, min(BLOCK_SIZE, size - block * BLOCK_SIZE))

    @property
    def _from_web_seeds(self) -> int:
        # Two lower bounds of the truth: received blocks from web seed endpoints (libtorrent
        # posts no block alert for the blocks of the piece that completes the torrent) and the
        # per-connection counters polled each tick (which miss what arrives after the last
        # poll of a connection).
        by_connection = sum(done + current for done, current in self._web_by_connection.values())
        return max(self._web_by_blocks, by_connection)

    def stats(self) -> TransferStats:
        """The latest counters (updated once per engine tick and on every alert).

        ``from_web_seeds`` is measured; ``from_peers`` is the rest of ``payload_downloaded``.
        """
        status = self._status
        downloaded = status.payload_downloaded if status else 0
        from_web = min(self._from_web_seeds, downloaded)
        return TransferStats(
            btih=self.btih,
            role=self.role,
            length=self.torrent.length,
            have_bytes=status.have_bytes if status else 0,
            payload_downloaded=downloaded,
            payload_uploaded=status.payload_uploaded if status else 0,
            from_peers=downloaded - from_web,
            from_web_seeds=from_web,
            hash_failures=self._hash_failures,
            peers_banned=self._banned,
            peers_seen=len(self._peers_seen),
            num_peers=status.num_peers if status else 0,
            num_seeds=status.num_seeds if status else 0,
            download_rate=status.download_rate if status else 0,
            upload_rate=status.upload_rate if status else 0,
            finished=status.finished if status else False,
        )

    # Called on the event loop by the engine.

    def _on_record(self, record: _Record) -> None:
        if record.kind == "block":
            if record.data["endpoint"] in self._web_endpoints:
                self._web_by_blocks += self._block_length(record.data["piece"], record.data["block"])
        elif record.kind == "hash_failed":
            self._hash_failures += 1
            self._emit(PieceHashFailed(self.btih, record.data["piece"]))
        elif record.kind == "banned":
            self._banned += 1
            self._emit(PeerBanned(self.btih, record.data["endpoint"]))

    def _on_status(self, status: _Status, now: float) -> None:
        self._status = status
        for pid, kind, host, port, received in status.peers:
            if kind in _WEB_CONNECTIONS:
                endpoint = (host, port)
                self._web_endpoints.add(endpoint)
                done, current = self._web_by_connection.get(endpoint, (0, 0))
                if received < current:  # a new connection to the same server
                    done += current
                self._web_by_connection[endpoint] = (done, received)
            elif pid.strip("0"):
                self._peers_seen.add(pid)

    def _emit(self, event: Event) -> None:
        """Seeds have no event stream."""

    async def stop(self) -> None:
        """Stop the transfer (the file is left where it is)."""
        await self._remove()

    async def _remove(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        session = self._engine._live_session()
        await anyio.to_thread.run_sync(session.remove_torrent, self._handle)
        self._engine._forget(self)


class Seed(_Transfer):
    """A complete file being seeded (made by :meth:`Engine.seed`)."""

    role: Literal["seed", "download"] = "seed"

    async def set_upload_limit(self, bytes_per_second: int) -> None:
        """Change this seed's upload limit (0: none beyond the session's)."""
        if bytes_per_second < 0:
            raise ValueError("limit must be >= 0")
        await anyio.to_thread.run_sync(self._handle.set_upload_limit, bytes_per_second)

    async def stop(self) -> None:
        """Stop seeding (the file is left untouched)."""
        await self._remove()


class Download(_Transfer):
    """A download into a staging directory (made by :meth:`Engine.download`)."""

    role: Literal["seed", "download"] = "download"

    def __init__(
        self,
        engine: Engine,
        torrent: Torrent,
        handle: lt.torrent_handle,
        *,
        path: Path,
        resume_path: Path,
        from_resume_data: bool,
        stall_timeout: float,
    ) -> None:
        super().__init__(engine, torrent, handle)
        self.path = path
        self._resume_path = resume_path
        self._from_resume_data = from_resume_data
        self._stall_timeout = stall_timeout
        send, receive = anyio.create_memory_object_stream[Event](EVENT_BUFFER)
        self._send: MemoryObjectSendStream[Event] = send
        self._receive: MemoryObjectReceiveStream[Event] = receive
        self._finished = anyio.Event()
        self._failure: str | None = None
        self._started_sent = False
        self._last_have = -1
        self._last_progress = time.monotonic()
        self._stalled = False
        self._last_reported: TransferStats | None = None
        self._resume_saved: anyio.Event | None = None
        self._last_resume_request = time.monotonic()
        self.events_dropped = 0

    def events(self) -> MemoryObjectReceiveStream[Event]:
        """The event stream; it ends when the download stops.

        Each call returns a new receiver of the *same* stream (events are not copied to every
        receiver): have one consumer, and close it (``with download.events() as events:``).
        """
        return self._receive.clone()

    @property
    def finished(self) -> bool:
        return self._finished.is_set() and self._failure is None

    async def wait_finished(self) -> Path:
        """Wait until every piece is verified; the path of the complete file.

        Raises :class:`TransferFailed` if libtorrent reports an error or the download is
        stopped first. Bound it with a cancel scope (``anyio.fail_after``).
        """
        await self._finished.wait()
        if self._failure is not None:
            raise TransferFailed(self._failure)
        return self.path

    async def add_peers(self, peers: Iterable[tuple[str, int]]) -> None:
        """Connect to these ``(host, port)`` peers."""
        checked = [self._engine._check_peer(host, port) for host, port in peers]
        for peer in checked:
            await anyio.to_thread.run_sync(self._handle.connect_peer, peer)

    async def add_web_seed(self, url: str) -> None:
        """Add a BEP 19 web seed (an HTTP(S) URL of the file, Range-capable).

        Only when the caller asks (after a :class:`Stalled` event, or when no seeder is
        present): the engine never adds one by itself. With ``loopback_only`` the host must be
        a loopback address or ``localhost``.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a web seed is an http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ValueError("a web seed URL has no query or fragment")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = await anyio.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        for *_, sockaddr in addresses:
            host = str(sockaddr[0])
            if self._engine.config.loopback_only and not ipaddress.ip_address(host).is_loopback:
                raise ValueError(
                    f"loopback-only engine: web seed host {parts.hostname} is not local"
                )
            self._web_endpoints.add((host, port))
        await anyio.to_thread.run_sync(self._handle.add_url_seed, url)

    async def save_resume_data(self) -> None:
        """Save resume data now (waits until it is on disk, at most :data:`STOP_TIMEOUT`)."""
        saved = anyio.Event()
        self._resume_saved = saved
        flags = lt.torrent_handle.flush_disk_cache | lt.torrent_handle.save_info_dict
        await anyio.to_thread.run_sync(self._handle.save_resume_data, flags)
        with anyio.move_on_after(STOP_TIMEOUT):
            await saved.wait()

    async def stop(self, *, keep_resume_data: bool | None = None) -> None:
        """Stop the download (the file stays in the staging directory).

        ``keep_resume_data`` defaults to "if unfinished": resume data is saved so that the
        next :meth:`Engine.download` of this torrent continues; a finished download's resume
        data is deleted.
        """
        if self._stopped:
            return
        keep = not self.finished if keep_resume_data is None else keep_resume_data
        if keep:
            await self.save_resume_data()
        else:
            with contextlib.suppress(FileNotFoundError):
                await anyio.to_thread.run_sync(self._resume_path.unlink)
        await self._remove()
        if not self._finished.is_set():
            self._failure = "the download was stopped before it finished"
            self._finished.set()
        self._send.close()
        self._receive.close()

    # Called on the event loop by the engine.

    def _emit(self, event: Event) -> None:
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.events_dropped += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def _on_record(self, record: _Record) -> None:
        super()._on_record(record)
        if record.kind == "finished" and not self._finished.is_set():
            if self._status is not None:  # the tick's snapshot may predate the last piece
                self._status = replace(self._status, have_bytes=self.torrent.length, finished=True)
            self._finished.set()
            self._emit(Finished(self.btih, self.path))
        elif record.kind == "error":
            if not self._finished.is_set():
                self._failure = record.data["message"]
                self._finished.set()
            self._emit(TransferError(self.btih, record.data["message"]))
        elif record.kind == "web_seed_failed":
            self._emit(WebSeedFailed(self.btih, record.data["url"], record.data["message"]))
        elif record.kind == "resume_rejected":
            self._from_resume_data = False
            self._emit(ResumeDataRejected(self.btih, record.data["message"]))
        elif record.kind in ("resume", "resume_failed"):
            saved = self._resume_saved
            self._resume_saved = None
            if record.kind == "resume":
                self._engine._spawn(self._write_resume, record.data["data"], saved)
            elif saved is not None:
                saved.set()

    async def _write_resume(self, data: bytes, saved: anyio.Event | None) -> None:
        try:
            if not self._stopped or saved is not None:
                await anyio.to_thread.run_sync(_atomic_write, self._resume_path, data)
        finally:
            if saved is not None:
                saved.set()

    def _on_status(self, status: _Status, now: float) -> None:
        super()._on_status(status, now)
        if status.checking:
            self._last_progress = now
            return
        if not self._started_sent:
            self._started_sent = True
            self._emit(Started(self.btih, status.have_bytes, self._from_resume_data))
        if status.finished:
            self._stalled = False
        elif status.have_bytes > self._last_have:
            self._last_have = status.have_bytes
            self._last_progress = now
            self._stalled = False
        elif not self._stalled and now - self._last_progress >= self._stall_timeout:
            self._stalled = True
            self._emit(
                Stalled(self.btih, now - self._last_progress, status.num_peers, status.num_seeds)
            )
        stats = self.stats()
        if stats != self._last_reported and not self._finished.is_set():
            self._last_reported = stats
            self._emit(Progress(stats))
        interval = self._engine.config.resume_save_interval
        if (
            not status.finished
            and status.need_save_resume
            and self._resume_saved is None
            and now - self._last_resume_request >= interval
        ):
            self._last_resume_request = now
            flags = lt.torrent_handle.flush_disk_cache | lt.torrent_handle.save_info_dict
            self._engine._spawn_call(self._handle.save_resume_data, flags)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- the engine


class Engine:
    """The process's libtorrent session and everything it transfers.

    Use as ``async with Engine(config) as engine``. Only one engine may be open per process
    (a second one raises ``RuntimeError``).
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._session: lt.session | None = None
        self._listen_port = 0
        self._stack: contextlib.AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._transfers: dict[lt.torrent_handle, _Transfer] = {}
        self._closing = False
        self._totals = dict.fromkeys(
            (
                "payload_downloaded",
                "payload_uploaded",
                "from_peers",
                "from_web_seeds",
                "hash_failures",
                "peers_banned",
            ),
            0,
        )
        self._peers_seen: set[str] = set()
        self._alerts_dropped = 0
        self._dht_waiters: dict[
            tuple[str, bytes, bytes], list[tuple[anyio.Event, list[dict[str, Any]]]]
        ] = {}
        self._keep_alive: dict[tuple[bytes, bytes], anyio.CancelScope] = {}
        self.dht: DhtClient | None = None
        """The BEP 44 client (``None`` when the DHT is off)."""

    # -- lifecycle

    async def __aenter__(self) -> Self:
        global _ACTIVE
        with _ACTIVE_LOCK:
            if _ACTIVE:
                raise RuntimeError("one libtorrent engine per process: another one is open")
            _ACTIVE = True
        try:
            await self._start()
        except BaseException:
            self._closing = True
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _start(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self._session, self._listen_port = await anyio.to_thread.run_sync(self._make_session)
        stack = contextlib.AsyncExitStack()
        self._stack = stack
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        await self._tg.start(self._pump)
        if self.config.enable_dht:
            self.dht = DhtClient(
                self._dht_seed_nodes,
                loopback_only=self.config.loopback_only,
                bind_host=self.config.bind_host,
            )
            await self._tg.start(self.dht.serve)

    def _make_session(self) -> tuple[lt.session, int]:
        settings = build_settings(self.config)
        if self.config.listen_port:
            settings["listen_system_port_fallback"] = False
        session = lt.session(cast("lt.settings_pack", settings))
        if self.config.limit_local_peers:
            session.set_peer_class_filter(peer_class_filter())
        deadline = time.monotonic() + STARTUP_TIMEOUT
        port = 0
        failure = ""
        while not port and not failure and time.monotonic() < deadline:
            session.wait_for_alert(100)
            for alert in session.pop_alerts():
                if isinstance(alert, lt.listen_succeeded_alert):
                    port = int(session.listen_port())
                elif isinstance(alert, lt.listen_failed_alert):
                    failure = alert.message()
        if not port:
            session.pause()
            del session
            raise OSError(f"libtorrent could not listen: {failure or 'timed out'}")
        for host, node_port in self.config.dht_nodes:
            session.add_dht_node((host, node_port))
        return session, port

    async def aclose(self) -> None:
        """Stop every transfer, stop the tasks, destroy the session. Idempotent."""
        if self._closing:
            return
        self._closing = True
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Runs to the end even when the caller is cancelled (the steps are shielded)."""
        global _ACTIVE
        try:
            with anyio.CancelScope(shield=True):
                for transfer in list(self._transfers.values()):
                    with anyio.move_on_after(STOP_TIMEOUT + 5):
                        await transfer.stop()
                if self._session is not None:
                    await anyio.to_thread.run_sync(self._session.pause)
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
            if self._stack is not None:
                # Not inside a shield: the task group's scope must be the innermost one here.
                await self._stack.aclose()
        finally:
            with anyio.CancelScope(shield=True):
                if self._session is not None:
                    holder = [self._session]
                    self._session = None
                    # The worker thread drops the last reference: libtorrent's destructor
                    # aborts the session, joins its threads and closes its sockets.
                    await anyio.to_thread.run_sync(holder.clear)
            with _ACTIVE_LOCK:
                _ACTIVE = False

    def _live_session(self) -> lt.session:
        if self._session is None:
            raise RuntimeError("the engine is closed")
        return self._session

    def _check_open(self) -> lt.session:
        if self._closing or self._session is None:
            raise RuntimeError("the engine is not open")
        return self._session

    def _spawn(self, func: Any, *args: Any) -> None:
        if self._tg is not None:
            self._tg.start_soon(func, *args)

    def _spawn_call(self, func: Any, *args: Any) -> None:
        """Call a libtorrent function in a worker thread, in the background. libtorrent raises
        ``RuntimeError`` for a handle whose torrent was removed meanwhile: that is ignored."""

        async def call() -> None:
            with contextlib.suppress(RuntimeError):
                await anyio.to_thread.run_sync(func, *args)

        self._spawn(call)

    # -- facts

    @property
    def listen_port(self) -> int:
        """The TCP and UDP port the session listens on (the DHT node's port too)."""
        return self._listen_port

    @property
    def dht_address(self) -> tuple[str, int]:
        """This engine's DHT node, to give other nodes as a known node."""
        return (
            "127.0.0.1" if self.config.loopback_only else self.config.bind_host,
            self._listen_port,
        )

    async def get_settings(self) -> dict[str, Any]:
        """The effective settings libtorrent reports (``session.get_settings()``)."""
        session = self._check_open()
        settings = await anyio.to_thread.run_sync(session.get_settings)
        return dict(settings)

    def stats(self) -> EngineStats:
        """Totals over the engine's life, and the running transfers."""
        running = tuple(t.stats() for t in self._transfers.values())
        totals = dict(self._totals)
        for s in running:
            totals["payload_downloaded"] += s.payload_downloaded
            totals["payload_uploaded"] += s.payload_uploaded
            totals["from_peers"] += s.from_peers
            totals["from_web_seeds"] += s.from_web_seeds
            totals["hash_failures"] += s.hash_failures
            totals["peers_banned"] += s.peers_banned
        seen = set(self._peers_seen)
        for t in self._transfers.values():
            seen |= t._peers_seen
        return EngineStats(
            **totals, peers_seen=len(seen), alerts_dropped=self._alerts_dropped, transfers=running
        )

    def _forget(self, transfer: _Transfer) -> None:
        self._transfers.pop(transfer._handle, None)
        s = transfer.stats()
        self._totals["payload_downloaded"] += s.payload_downloaded
        self._totals["payload_uploaded"] += s.payload_uploaded
        self._totals["from_peers"] += s.from_peers
        self._totals["from_web_seeds"] += s.from_web_seeds
        self._totals["hash_failures"] += s.hash_failures
        self._totals["peers_banned"] += s.peers_banned
        self._peers_seen |= transfer._peers_seen

    def _check_peer(self, host: str, port: int) -> tuple[str, int]:
        address = ipaddress.ip_address(host)
        if self.config.loopback_only and not address.is_loopback:
            raise ValueError(f"loopback-only engine: peer {host} is not local")
        if not 0 < port < 65536:
            raise ValueError("bad peer port")
        return str(address), port

    # -- transfers

    def _find(self, btih: str) -> _Transfer | None:
        return next((t for t in self._transfers.values() if t.btih == btih), None)

    async def seed(
        self,
        torrent: Torrent,
        path: str | os.PathLike[str],
        *,
        upload_limit: int = 0,
        super_seeding: bool = False,
        verify: bool = False,
        use_dht: bool = True,
    ) -> Seed:
        """Seed the complete file at ``path`` (read-only; see the module docstring).

        ``upload_limit`` is bytes per second for this torrent (0: only the session's limit).
        ``super_seeding`` (BEP 16) hands each peer pieces nobody else has, which lowers what a
        lone seeder uploads. ``verify`` hashes the whole file before serving instead of seed
        mode's lazy check. Refuses a file whose length is not the torrent's
        (:class:`LengthMismatch`).
        """
        session = self._check_open()
        if upload_limit < 0:
            raise ValueError("upload_limit must be >= 0")
        if self._find(torrent.btih) is not None:
            raise RuntimeError(f"torrent {torrent.btih} is already in the engine")
        source = Path(path).resolve()
        size = (await anyio.to_thread.run_sync(source.stat)).st_size
        if size != torrent.length:
            raise LengthMismatch(f"{source} is {size} bytes, the torrent's file {torrent.length}")
        params = lt.add_torrent_params()
        params.ti = torrent.torrent_info()
        params.save_path = str(source.parent)
        if source.name != torrent.name:
            params.renamed_files = {0: source.name}
        flags = params.flags | lt.torrent_flags.upload_mode
        flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        if not verify:
            flags |= lt.torrent_flags.seed_mode
        if super_seeding:
            flags |= lt.torrent_flags.super_seeding
        if not use_dht:
            flags |= lt.torrent_flags.disable_dht
        params.flags = flags
        params.upload_limit = upload_limit
        handle = await anyio.to_thread.run_sync(session.add_torrent, params)
        seed = Seed(self, torrent, handle)
        self._transfers[handle] = seed
        if use_dht:
            await self._announce(handle)
        return seed

    async def download(
        self,
        torrent: Torrent,
        staging_dir: str | os.PathLike[str],
        *,
        max_length: int,
        peers: Sequence[tuple[str, int]] = (),
        use_dht: bool = False,
        stall_timeout: float = 60.0,
        upload_limit: int = 0,
        download_limit: int = 0,
    ) -> Download:
        """Download the torrent's file into ``staging_dir/<sha256>``.

        Refuses a file larger than ``max_length`` (:class:`TooLarge`) before touching the
        session. Peers come from ``peers`` and, with ``use_dht``, the DHT (libtorrent announces
        and looks up both info hashes). Continues from resume data in ``state_dir`` when there
        is some for this torrent. ``stall_timeout`` is the idle time before a :class:`Stalled`
        event. The download keeps seeding what it has until :meth:`Download.stop`.
        """
        session = self._check_open()
        if torrent.length > max_length:
            raise TooLarge(
                f"torrent's file is {torrent.length} bytes, more than the cap {max_length}"
            )
        if stall_timeout <= 0 or upload_limit < 0 or download_limit < 0:
            raise ValueError("stall_timeout > 0, limits >= 0")
        if self._find(torrent.btih) is not None:
            raise RuntimeError(f"torrent {torrent.btih} is already in the engine")
        checked_peers = [self._check_peer(host, port) for host, port in peers]
        staging = Path(staging_dir).resolve()
        if not staging.is_dir():
            raise ValueError(f"staging directory {staging} does not exist")
        resume_path = self.config.state_dir / f"{torrent.btih}.fastresume"
        params, from_resume = await anyio.to_thread.run_sync(
            _download_params, torrent, staging, resume_path
        )
        flags = params.flags
        flags &= ~(
            lt.torrent_flags.auto_managed
            | lt.torrent_flags.paused
            | lt.torrent_flags.seed_mode
            | lt.torrent_flags.upload_mode
            | lt.torrent_flags.super_seeding
            | lt.torrent_flags.disable_dht
        )
        if not use_dht:
            flags |= lt.torrent_flags.disable_dht
        params.flags = flags
        params.upload_limit = upload_limit
        params.download_limit = download_limit
        handle = await anyio.to_thread.run_sync(session.add_torrent, params)
        download = Download(
            self,
            torrent,
            handle,
            path=staging / torrent.name,
            resume_path=resume_path,
            from_resume_data=from_resume,
            stall_timeout=stall_timeout,
        )
        self._transfers[handle] = download
        if checked_peers:
            await download.add_peers(checked_peers)
        if use_dht:
            await self._announce(handle)
        return download

    async def _announce(self, handle: lt.torrent_handle) -> None:
        session = self._check_open()
        if await anyio.to_thread.run_sync(session.is_dht_running):
            await anyio.to_thread.run_sync(handle.force_dht_announce)

    # -- the pump

    async def _pump(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        session = self._session
        assert session is not None
        tick = self.config.tick_interval
        wait_ms = max(10, int(tick * 1000))
        next_tick = time.monotonic()
        task_status.started()
        while True:
            now = time.monotonic()
            due = now >= next_tick
            handles = list(self._transfers) if due else []
            records, statuses = await anyio.to_thread.run_sync(_collect, session, handles, wait_ms)
            for record in records:
                self._dispatch(record)
            if due:
                now = time.monotonic()
                next_tick = now + tick
                for handle, status in statuses:
                    transfer = self._transfers.get(handle)
                    if transfer is not None and status is not None:
                        transfer._on_status(status, now)

    def _dispatch(self, record: _Record) -> None:
        if record.handle is not None:
            transfer = self._transfers.get(record.handle)
            if transfer is not None:
                transfer._on_record(record)
            return
        if record.kind == "dropped":
            self._alerts_dropped += 1
        elif record.kind == "dht_bootstrap":
            for handle in self._transfers:
                self._spawn_call(handle.force_dht_announce)
        elif record.kind in ("dht_put", "dht_item"):
            public_key, salt = record.data["key"]
            if record.kind == "dht_item" and not record.data["authoritative"]:
                return
            for done, slot in self._dht_waiters.pop((record.kind, public_key, salt), []):
                slot.append(record.data)
                done.set()

    # -- DHT

    async def _dht_seed_nodes(self) -> list[tuple[str, int]]:
        return [self.dht_address, *self.config.dht_nodes]

    def _require_dht(self) -> DhtClient:
        self._check_open()
        if self.dht is None:
            raise DhtError("the DHT is off in this engine")
        return self.dht

    async def dht_put(self, item: MutableItem) -> Any:
        """Put ``item`` as signed (see :meth:`DhtClient.put`); returns its ``PutResult``."""
        return await self._require_dht().put(item)

    async def dht_get(self, public_key: bytes, salt: bytes = b"") -> Any:
        """Every candidate under ``(public_key, salt)`` (see :meth:`DhtClient.get`)."""
        return await self._require_dht().get(public_key, salt)

    async def keep_published(self, item: MutableItem, *, interval: float = 1800.0) -> None:
        """Re-put ``item`` now and every ``interval`` seconds until the engine closes or a
        newer item under the same key and salt replaces it (BEP 44 items expire after about
        two hours without a put). Needs no private key: the item is re-put as signed."""
        client = self._require_dht()
        if interval <= 0:
            raise ValueError("interval must be positive")
        key = (item.public_key, item.salt)
        previous = self._keep_alive.pop(key, None)
        if previous is not None:
            previous.cancel()
        scope = anyio.CancelScope()
        self._keep_alive[key] = scope

        async def republish() -> None:
            with scope:
                while True:
                    with anyio.move_on_after(max(interval, 30.0)):
                        with contextlib.suppress(DhtError):
                            await client.put(item)
                    await anyio.sleep(interval)

        self._spawn(republish)

    async def _wait_dht(
        self, kind: str, public_key: bytes, salt: bytes, call: Any
    ) -> dict[str, Any]:
        done = anyio.Event()
        slot: list[dict[str, Any]] = []
        self._dht_waiters.setdefault((kind, public_key, salt), []).append((done, slot))
        try:
            await anyio.to_thread.run_sync(call)
            await done.wait()
        finally:
            waiters = self._dht_waiters.get((kind, public_key, salt), [])
            with contextlib.suppress(ValueError):
                waiters.remove((done, slot))
        return slot[0]

    async def dht_put_native(
        self, key: SigningKey, value: bytes, salt: bytes = b""
    ) -> tuple[int, int]:
        """Put through libtorrent's own BEP 44 code: ``seq`` becomes (highest found) + 1.

        Signs with the 64-byte expanded secret (:func:`libtorrent_secret_key`). Returns
        ``(seq, nodes that stored it)`` when libtorrent's put completes (bound the wait with a
        cancel scope). Prefer :meth:`dht_put` to choose ``seq``.
        """
        session = self._check_open()
        self._require_dht()
        public_key = bytes(key.verify_key)
        secret = libtorrent_secret_key(bytes(key))

        def call() -> None:
            session.dht_put_mutable_item(secret, public_key, value, salt)

        result = await self._wait_dht("dht_put", public_key, salt, call)
        return result["seq"], result["num_success"]

    async def dht_get_native(self, public_key: bytes, salt: bytes = b"") -> MutableItem | None:
        """libtorrent's own lookup: the highest-seq valid item it found, or ``None`` (bound the
        wait with a cancel scope)."""
        session = self._check_open()
        self._require_dht()

        def call() -> None:
            session.dht_get_mutable_item(public_key, salt)

        result = await self._wait_dht("dht_item", public_key, salt, call)
        if not isinstance(result["value"], bytes) or not any(result["signature"]):
            return None
        return MutableItem(public_key, salt, result["seq"], result["value"], result["signature"])


def _collect(
    session: lt.session, handles: list[lt.torrent_handle], wait_ms: int
) -> tuple[list[_Record], list[tuple[lt.torrent_handle, _Status | None]]]:
    """The pump's worker-thread half: wait, drain, convert, poll."""
    session.wait_for_alert(wait_ms)
    records = [r for a in session.pop_alerts() if (r := _convert(a)) is not None]
    statuses = [(h, _snapshot(h)) for h in handles]
    return records, statuses


def _download_params(
    torrent: Torrent, staging: Path, resume_path: Path
) -> tuple[lt.add_torrent_params, bool]:
    """Parameters from saved resume data when it matches the torrent, else fresh ones."""
    params: lt.add_torrent_params | None = None
    try:
        with open(resume_path, "rb") as f:
            data = f.read(2 * MAX_TORRENT_BYTES + 1)
        if len(data) <= 2 * MAX_TORRENT_BYTES:
            candidate = lt.read_resume_data(data)
            if str(candidate.info_hashes.v1) == torrent.btih:
                params = candidate
    except (OSError, RuntimeError):
        params = None
    from_resume = params is not None
    if params is None:
        with contextlib.suppress(FileNotFoundError):
            resume_path.unlink()
        params = lt.add_torrent_params()
    params.ti = torrent.torrent_info()
    params.save_path = str(staging)
    params.renamed_files = {}
    params.url_seeds = []
    params.http_seeds = []
    params.trackers = []
    return params, from_resume
