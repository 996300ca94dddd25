"""The engine: one libtorrent session per process, driven from anyio (asyncio or trio).

::

    async with Engine(EngineConfig(state_dir=...)) as engine:
        seed = await engine.seed(torrent, "/srv/node/blobs/<sha256>", upload_limit=2_000_000)
        download = await engine.download(torrent, staging_dir, max_length=cap, peers=[...])
        with download.events() as events:
            async for event in events: ...
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
import gc
import ipaddress
import os
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, cast

import anyio
import anyio.abc
import libtorrent as lt
from nacl.signing import SigningKey

from ._dht import DhtClient, GetResult, MutableItem, PutResult, libtorrent_secret_key
from ._errors import DhtError, LengthMismatch, TooLarge
from ._events import (
    EngineStats,
)
from ._settings import EngineConfig, build_settings, loopback_ip_filter, peer_class_filter
from ._torrent import MAX_TORRENT_BYTES, Torrent
from ._transfers import (
    STOP_TIMEOUT,
    Download,
    Seed,
    _convert,
    _Record,
    _snapshot,
    _Status,
    _Transfer,
)

STARTUP_TIMEOUT: Final = 10.0
"""Longest wait for the session to listen."""

_ACTIVE_LOCK = threading.Lock()
_ACTIVE = False


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
        self._next_poll = 0.0
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
        self._known_dht_nodes: list[tuple[str, int]] = []
        self._shields: set[anyio.CancelScope] = set()
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
        await self._tg.start(self._shielded, self._pump)
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
        if self.config.loopback_only:
            session.set_ip_filter(loopback_ip_filter())
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
            for scope in list(self._shields):
                scope.cancel()
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
            if self._stack is not None:
                # Not inside a shield: the task group's scope must be the innermost one here.
                await self._stack.aclose()
        finally:
            with anyio.CancelScope(shield=True):
                if self._session is not None:
                    alive = weakref.ref(self._session)
                    self._session = None
                    # libtorrent's destructor aborts the session, joins its threads and closes
                    # its sockets; it runs in a worker thread, when the last reference goes.
                    await anyio.to_thread.run_sync(_destroy, alive)
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

    async def _shielded(
        self,
        func: Any,
        *args: Any,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run an engine task shielded from the caller's cancellation: when the caller's scope
        is cancelled, the pump and the resume-data writes must go on until :meth:`_shutdown`
        has saved what it needs and cancels them itself."""
        scope = anyio.CancelScope(shield=True)
        self._shields.add(scope)
        try:
            with scope:
                await func(*args, task_status=task_status)
        finally:
            self._shields.discard(scope)

    def _spawn(self, func: Any, *args: Any) -> None:
        """Start a short engine task (shielded like the pump)."""
        if self._tg is not None:

            async def run(
                *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
            ) -> None:
                task_status.started()
                await func(*args)

            self._tg.start_soon(self._shielded, run)

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
        # No local reference to the session here: a cancelled task's frame can outlive it in a
        # traceback cycle, and the session must die when _shutdown drops it.
        tick = self.config.tick_interval
        wait_ms = max(10, int(tick * 1000))
        task_status.started()
        while True:
            now = time.monotonic()
            urgent = self._next_poll == 0.0
            due = now >= self._next_poll
            handles = list(self._transfers) if due else []
            records, statuses = await anyio.to_thread.run_sync(
                _collect, self, handles, 0 if urgent else wait_ms
            )
            if due:
                self._next_poll = time.monotonic() + tick
            for record in records:
                self._dispatch(record)
            if due:
                now = time.monotonic()
                for handle, status in statuses:
                    transfer = self._transfers.get(handle)
                    if transfer is not None and status is not None:
                        transfer._on_status(status, now)

    def _poll_soon(self) -> None:
        """Poll every transfer's status on the pump's next round instead of the next tick."""
        self._next_poll = 0.0

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
        known = [self.dht_address, *self.config.dht_nodes, *self._known_dht_nodes]
        return list(dict.fromkeys(known))

    async def add_dht_nodes(self, nodes: Iterable[tuple[str, int]]) -> None:
        """Tell libtorrent's DHT node about these nodes (``add_dht_node``), and start BEP 44
        lookups from them too. With ``loopback_only`` they must be loopback addresses."""
        session = self._check_open()
        checked = [self._check_peer(host, port) for host, port in nodes]
        for node in checked:
            await anyio.to_thread.run_sync(session.add_dht_node, node)
            if node not in self._known_dht_nodes:
                self._known_dht_nodes.append(node)

    def _require_dht(self) -> DhtClient:
        self._check_open()
        if self.dht is None:
            raise DhtError("the DHT is off in this engine")
        return self.dht

    async def dht_put(self, item: MutableItem) -> PutResult:
        """Put ``item`` as signed (see :meth:`DhtClient.put`); returns its ``PutResult``."""
        return await self._require_dht().put(item)

    async def dht_get(self, public_key: bytes, salt: bytes = b"") -> GetResult:
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


def _destroy(alive: weakref.ref[lt.session]) -> None:
    """Make sure the session is destroyed now (in this worker thread).

    A cancelled ``to_thread`` call keeps its arguments in the frames of its traceback, which
    may sit in a reference cycle: the session would then live, and listen, until the garbage
    collector runs. So collect now if anything still holds it.
    """
    if alive() is not None:
        gc.collect()
    if alive() is not None:
        raise RuntimeError("the libtorrent session is still referenced after shutdown")


def _collect(
    engine: Engine, handles: list[lt.torrent_handle], wait_ms: int
) -> tuple[list[_Record], list[tuple[lt.torrent_handle, _Status | None]]]:
    """The pump's worker-thread half: wait, drain, convert, poll."""
    session = engine._live_session()
    session.wait_for_alert(wait_ms)
    records = []
    for alert in session.pop_alerts():
        try:
            record = _convert(alert)
        except RuntimeError:  # a handle that became invalid meanwhile
            continue
        if record is not None:
            records.append(record)
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
