"""Seeds and downloads: what the engine's pump feeds with alerts and status polls.

The pump (in :mod:`._engine`) converts alerts into :class:`_Record` and polls each transfer
into a :class:`_Status` in a worker thread; the methods here run on the event loop.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import tempfile
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
import anyio.abc
import libtorrent as lt
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._errors import TransferFailed
from ._events import (
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
from ._torrent import Torrent

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Download", "Seed"]

BLOCK_SIZE: Final = 16 * 1024
EVENT_BUFFER: Final = 1024
"""Events buffered per download; past that, new events are dropped (and counted)."""
STOP_TIMEOUT: Final = 10.0
"""Longest wait for resume data when a download stops."""

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
    """The handle's status and peers, or ``None`` once its torrent is removed (libtorrent
    raises ``RuntimeError`` for a handle that became invalid, even between two calls)."""
    try:
        return _snapshot_valid(handle)
    except RuntimeError:
        return None


def _snapshot_valid(handle: lt.torrent_handle) -> _Status:
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
        self._by_endpoint: dict[tuple[str, int], tuple[int, int]] = {}
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
                self._web_by_blocks += self._block_length(
                    record.data["piece"], record.data["block"]
                )
        elif record.kind == "hash_failed":
            self._hash_failures += 1
            self._emit(PieceHashFailed(self.btih, record.data["piece"]))
        elif record.kind == "banned":
            self._banned += 1
            self._emit(PeerBanned(self.btih, record.data["endpoint"]))

    def received_from(self, endpoints: Iterable[tuple[str, int]]) -> int:
        """Payload bytes received from connections to these ``(host, port)`` endpoints (as
        polled each tick: what arrives after a connection's last poll is missed)."""
        total = 0
        for endpoint in set(endpoints):
            done, current = self._by_endpoint.get(endpoint, (0, 0))
            total += done + current
        return total

    def _on_status(self, status: _Status, now: float) -> None:
        self._status = status
        for pid, kind, host, port, received in status.peers:
            done, current = self._by_endpoint.get((host, port), (0, 0))
            if received < current:  # a new connection to the same endpoint
                done += current
            self._by_endpoint[(host, port)] = (done, received)
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
        try:
            await anyio.to_thread.run_sync(session.remove_torrent, self._handle)
        except RuntimeError:  # libtorrent already dropped it
            pass
        finally:
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
        self._finish_pending = False
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

    async def verified_pieces(self) -> list[bool]:
        """Which pieces are verified and on disk, by index (a status query with the piece
        bitfield; blocking work runs in a worker thread)."""
        return await anyio.to_thread.run_sync(_pieces_of, self._handle)

    async def set_piece_deadlines(self, pieces: Iterable[int], deadline_ms: int) -> None:
        """Ask for these pieces first, from the fastest peers (libtorrent's time-critical
        pieces), within about ``deadline_ms``; the rest still follows rarest-first."""
        wanted = [int(p) for p in pieces]

        def call() -> None:
            for index in wanted:
                self._handle.set_piece_deadline(index, deadline_ms)

        await anyio.to_thread.run_sync(call)

    async def clear_piece_deadlines(self) -> None:
        """Back to rarest-first for every piece."""
        await anyio.to_thread.run_sync(self._handle.clear_piece_deadlines)

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
            # Finish on the next status poll, asked for now, so that the stats are fresh.
            self._finish_pending = True
            self._engine._poll_soon()
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
        if self._finish_pending and not self._finished.is_set():
            self._finish_pending = False
            if not status.finished:
                self._status = replace(status, have_bytes=self.torrent.length, finished=True)
            self._finished.set()
            self._emit(Finished(self.btih, self.path))
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


def _pieces_of(handle: lt.torrent_handle) -> list[bool]:
    status = handle.status(lt.torrent_handle.query_pieces)
    return [bool(p) for p in status.pieces]


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
