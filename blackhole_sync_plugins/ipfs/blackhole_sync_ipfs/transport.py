"""The IPFS transport: the engine (embedded Kubo or a Kubo daemon) behind the core's API.

=============== =============================================================================
capability      what it does here
=============== =============================================================================
``fetch``       a ``cid`` locator (or an ``ipfs://<CID>`` URL): the file's blocks, verified
                against their hashes, streamed into the core's sink under the length cap; a CID
                no reachable peer delivers within ``fetch_timeout`` raises
                :class:`CidUnavailableError` (a ``BlobNotFoundError``). The sink checks the
                sha256 from signed metadata: a CID is only a hint.
``publish``     check the file against its sha256, add it (CIDv1, raw leaves, 256 KiB chunks,
                balanced layout: the CID ``locate`` computes) and pin it; ``[cid locator]``
``locate``      the CID of a file, offline (pure Python): the release builder signs it
``announce``    Kubo pubsub on the gossip plugin's topic ``/blackhole/<network>/<kind>/1``,
                payload the signed document's bytes
``subscribe``   pubsub messages of those topics that the ``message_validator`` accepted (see
                :mod:`._inbox` for the limits applied before it)
``seed``        pin exactly the blobs a node keeps; unpin those it pruned (the pins this
                transport made are recorded in ``state_dir``)
=============== =============================================================================

Lifecycle: ``async with`` starts the backend (the embedded node, or checks the daemon
answers) and connects to the ``bootstrap`` peers; a transport used without it (the core's
transport pool) starts on its first operation. ``aclose`` ends subscriptions and stops the
node (the process's embedded node is shared by its transports, see :mod:`._lease`, and stops
with the last one). ``locate`` and ``addresses`` never start anything.

Identity: the embedded node's libp2p key is derived from the node's identity key
(``identity_key``) by a domain-separated hash, so the peer id is stable and tied to the node
key, but differs from the gossip plugin's (which uses the key itself): two libp2p hosts in one
process must not share a peer id. Without ``identity_key`` the repo keeps its own random key.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import anyio
import anyio.to_thread

from blackhole_sync.errors import (
    BlobNotFoundError,
    ConfigurationError,
    DownloadError,
    LengthExceededError,
    LengthOrHashMismatchError,
    SourceUnavailableError,
    StallError,
)
from blackhole_sync.fetch import (
    CAP_ANNOUNCE,
    CAP_FETCH,
    CAP_LOCATE,
    CAP_PUBLISH,
    CAP_SEED,
    CAP_SUBSCRIBE,
    BaseTransport,
    Locator,
    MessageValidator,
    PeerMessage,
    Sink,
)

from ._api import IpfsBackend
from ._cid import Cid, CidError, cid_of_file
from ._config import EmbeddedConfig, derive_seed, kubo_identity
from ._errors import (
    BackendUnavailableError,
    FetchTimeoutError,
    IpfsError,
    LengthExceededError as EngineLengthExceeded,
    NodeClosedError,
    PinError,
)
from ._inbox import InboundGuard, Inbox
from ._lease import EmbeddedLease, acquire_embedded
from ._rpc import RpcNode
from ._settings import IpfsSettings
from ._spec import IPFS_TRANSPORT_SPEC

__all__ = [
    "IPFS_TRANSPORT_SPEC",
    "SEED_RECORD",
    "CidUnavailableError",
    "IpfsTransport",
    "kind_of_topic",
    "peer_id_for",
    "topic_for",
]

log = logging.getLogger(__name__)

#: The file in ``state_dir`` recording the pins :meth:`IpfsTransport.seed` made (sha256 -> CID).
SEED_RECORD = "blackhole-seeded.json"
#: Seconds between attempts to reach bootstrap peers that could not be reached.
BOOTSTRAP_RETRY = 5.0
_HASH_BLOCK = 1024 * 1024
_KIND = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")


#: What a node's identity seed is stretched with to give its embedded Kubo node's key.
_PEER_IDENTITY = "ipfs-peer-identity"


def peer_id_for(identity_seed: bytes) -> str:
    """The peer id the embedded node of a node whose identity key has this 32-byte seed runs
    under (the ``identity_key`` option): peers can be told ``/ip4/.../p2p/<id>`` in advance."""
    return kubo_identity(derive_seed(identity_seed, _PEER_IDENTITY)).peer_id


def topic_for(network: str, kind: str) -> str:
    """The pubsub topic of one message kind on one network: ``/blackhole/<network>/<kind>/1``.

    The gossip plugin's layout (``blackhole_sync_gossip.topic_for``), duplicated so this plugin
    does not depend on it; a test checks they agree.
    """
    return f"/blackhole/{network}/{kind}/1"


def kind_of_topic(network: str, topic: str) -> str | None:
    """The kind a topic of ``network`` carries, or None for any other topic."""
    prefix = f"/blackhole/{network}/"
    if not topic.startswith(prefix) or not topic.endswith("/1"):
        return None
    kind = topic[len(prefix) : -2]
    return kind if _KIND.match(kind) else None


class CidUnavailableError(BlobNotFoundError):
    """No reachable peer delivered the CID within the fetch timeout (IPFS cannot tell "nobody
    has it" from "nobody answered")."""

    def __init__(self, cid: str, timeout: float) -> None:
        super().__init__(f"ipfs: no reachable peer delivered {cid} within {timeout:g} s")
        self.cid = cid
        self.timeout = timeout


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as reader:
        while block := reader.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class _Pacer:
    """Keeps a stream under ``rate`` bytes per second (sleeps between writes)."""

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.sent = 0

    async def pace(self, size: int) -> None:
        if not self.rate:
            return
        self.sent += size
        ahead = self.sent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            await anyio.sleep(ahead)


class IpfsTransport(BaseTransport):
    """The ``ipfs`` transport (see the module docstring). Built by the core with the standard
    options; settings come from ``node_config["ipfs"]`` (:class:`IpfsSettings`)."""

    name: ClassVar[str] = "ipfs"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {CAP_FETCH, CAP_PUBLISH, CAP_LOCATE, CAP_ANNOUNCE, CAP_SUBSCRIBE, CAP_SEED}
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.settings = IpfsSettings.from_options(options)
        validator = options.get("message_validator")
        if validator is not None and not callable(validator):
            raise ConfigurationError("message_validator must be callable")
        self._validator: MessageValidator | None = validator
        self.guard = InboundGuard(
            rate=self.settings.message_rate,
            burst=self.settings.message_burst,
            reject_limit=self.settings.reject_limit,
            mute_seconds=self.settings.mute_seconds,
        )
        self._node: IpfsBackend | None = None
        self._lease: EmbeddedLease | None = None
        self._rpc: RpcNode | None = None
        self._start_lock: anyio.Lock | None = None
        self._seed_lock: anyio.Lock | None = None
        self._peer_id = ""
        self._addresses: list[str] = []
        self._unreached: set[str] = set()
        self._last_reach = 0.0
        self._inboxes: set[Inbox] = set()
        self._memory_record: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def backend(self) -> IpfsBackend | None:
        """The engine backend once started (None before)."""
        return self._node

    @property
    def peer_id(self) -> str:
        """This node's libp2p peer id once started ("" before)."""
        return self._peer_id

    async def __aenter__(self) -> Self:
        await self._ready()
        return self

    async def _ready(self) -> IpfsBackend:
        """The started backend; starts it on first use."""
        if self.closed:
            raise DownloadError("the ipfs transport is closed")
        if self._node is not None:
            return self._node
        if self._start_lock is None:
            self._start_lock = anyio.Lock()
        async with self._start_lock:
            if self._node is None:
                if self.closed:
                    raise DownloadError("the ipfs transport is closed")
                await self._start()
        assert self._node is not None
        return self._node

    async def _start(self) -> None:
        settings = self.settings
        state_dir = settings.state_dir
        if state_dir is not None:
            await anyio.to_thread.run_sync(
                functools.partial(state_dir.mkdir, mode=0o700, parents=True, exist_ok=True)
            )
        node: IpfsBackend
        if settings.backend == "rpc":
            assert settings.rpc_url is not None
            rpc = RpcNode(settings.rpc_url)
            try:
                await rpc.start()
                info = await rpc.id()
            except IpfsError as exc:
                await rpc.aclose()
                raise SourceUnavailableError(
                    f"ipfs: the Kubo daemon at {settings.rpc_url}: {exc}"
                ) from exc
            self._rpc = node = rpc
        else:
            lease = await acquire_embedded(state_dir, self._embedded_config)
            try:
                info = await lease.node.id()
            except BaseException as exc:
                await lease.release()
                if isinstance(exc, IpfsError):
                    raise SourceUnavailableError(f"ipfs: the embedded node: {exc}") from exc
                raise
            self._lease = lease
            node = lease.node
        self._peer_id = info.peer_id
        self._addresses = list(info.addresses)
        self._node = node
        self._unreached = set(settings.bootstrap)
        await self._reach_bootstrap(force=True)

    def _embedded_config(self, repo: Path) -> EmbeddedConfig:
        s = self.settings
        seed = s.identity_seed
        return EmbeddedConfig(
            repo=repo,
            loopback_only=s.loopback_only,
            port=s.port,
            listen=s.listen,
            bootstrap=s.bootstrap,
            mdns=s.mdns,
            fsync=s.fsync,
            prefetch=s.prefetch,
            max_pending_blocks=max(256, 2 * s.prefetch),
            identity_seed=None if seed is None else derive_seed(seed, _PEER_IDENTITY),
            log_dir=repo,
        )

    async def _reach_bootstrap(self, *, force: bool = False) -> None:
        """Connect to the bootstrap peers not reached yet (at most every few seconds)."""
        node = self._node
        if node is None or not self._unreached:
            return
        now = time.monotonic()
        if not force and now - self._last_reach < BOOTSTRAP_RETRY:
            return
        self._last_reach = now
        timeout = self.settings.connect_timeout

        async def dial(addr: str) -> None:
            try:
                await node.connect(addr, timeout=timeout)
            except IpfsError as exc:
                log.info("ipfs: bootstrap peer %s not reached: %s", addr, exc)
            else:
                self._unreached.discard(addr)

        async with anyio.create_task_group() as tg:
            for addr in sorted(self._unreached):
                tg.start_soon(dial, addr)

    async def aclose(self) -> None:
        """End subscriptions and stop the backend (idempotent)."""
        if self.closed:
            return
        self.closed = True
        with anyio.CancelScope(shield=True):
            for inbox in list(self._inboxes):
                await inbox.aclose()
            self._node = None
            if self._rpc is not None:
                rpc, self._rpc = self._rpc, None
                await rpc.aclose()
            if self._lease is not None:
                lease, self._lease = self._lease, None
                await lease.release()

    def addresses(self) -> list[str]:
        """The node's multiaddrs (``.../p2p/<id>``) once started; empty before."""
        return list(self._addresses)

    # ------------------------------------------------------------------ content

    def _cid_of(self, locator: Locator) -> str:
        """The CID a locator names; :class:`BlobNotFoundError` for an IPFS URL that names none
        (``ipfs://blobs/<sha256>`` from an ``ipfs://`` source: IPFS finds blobs by the CIDs in
        signed manifests, not by path)."""
        if locator.kind == "cid":
            text = locator.value
        elif locator.kind == "url" and locator.scheme == "ipfs":
            text = locator.value.split("://", 1)[1].strip("/")
            if text.startswith("ipfs/"):
                text = text[len("ipfs/") :]
        else:
            raise BlobNotFoundError(
                f"{locator}: IPFS fetches blobs by the cid locators of signed manifests, "
                "not by repository path"
            )
        try:
            Cid.parse(text)
        except CidError as exc:
            if locator.kind == "cid":
                raise DownloadError(f"{locator}: not a CID this transport handles: {exc}") from exc
            raise BlobNotFoundError(
                f"{locator}: IPFS fetches blobs by the cid locators of signed manifests, "
                "not by repository path"
            ) from exc
        return text

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        """Stream the file at ``locator`` into ``sink`` (from byte ``start``: earlier bytes are
        fetched and skipped -- IPFS has no ranged read here, so no ``range`` capability)."""
        cid = self._cid_of(locator)
        node = await self._ready()
        await self._reach_bootstrap()
        skip = start
        delivered = 0
        pacer = _Pacer(self.settings.rate_limit)

        async def write(chunk: bytes) -> None:
            nonlocal skip, delivered
            delivered += len(chunk)
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    return
                chunk, skip = chunk[skip:], 0
            await pacer.pace(len(chunk))
            await sink.write(chunk)

        timeout = self.settings.fetch_timeout
        try:
            await node.get(cid, write, max_length=max_length, timeout=timeout)
        except FetchTimeoutError as exc:
            if delivered == 0:
                raise CidUnavailableError(cid, timeout) from exc
            raise StallError(
                f"ipfs: {cid} stalled after {delivered} bytes ({timeout:g} s)"
            ) from exc
        except EngineLengthExceeded as exc:
            raise LengthExceededError(
                f"ipfs: {cid} is longer than the {max_length}-byte cap"
            ) from exc
        except (BackendUnavailableError, NodeClosedError) as exc:
            raise SourceUnavailableError(f"ipfs: {exc}") from exc
        except IpfsError as exc:
            raise DownloadError(f"ipfs: fetching {cid} failed: {exc}") from exc

    def locate(self, path: Path) -> list[Locator]:
        """The CID ``path`` gets when published (CIDv1, raw leaves), computed offline."""
        return [Locator("cid", cid_of_file(path))]

    async def publish(self, path: Path, *, sha256: str) -> list[Locator]:
        """Check ``path`` against ``sha256``, add it and pin it; its ``cid`` locator."""
        node = await self._ready()
        return [Locator("cid", await self._add_verified(node, Path(path), sha256))]

    async def _add_verified(self, node: IpfsBackend, path: Path, sha256: str) -> str:
        rpc = node is self._rpc

        def check() -> str | None:
            if _sha256_of(path) != sha256:
                raise LengthOrHashMismatchError(f"{path.name}: its sha256 is not {sha256}")
            # A daemon chooses the DAG itself: make sure it is the one manifests name.
            return cid_of_file(path) if rpc else None

        try:
            expected = await anyio.to_thread.run_sync(check)
        except OSError as exc:
            raise DownloadError(f"ipfs: cannot read {path}: {exc}") from exc
        try:
            cid = await node.add_file(path)
        except (BackendUnavailableError, NodeClosedError) as exc:
            raise SourceUnavailableError(f"ipfs: {exc}") from exc
        except IpfsError as exc:
            raise DownloadError(f"ipfs: adding {path.name} failed: {exc}") from exc
        if expected is not None and cid != expected:
            raise DownloadError(
                f"ipfs: the daemon added {path.name} as {cid}, not {expected} (CIDv1, raw "
                "leaves, 256 KiB chunks): it does not honour the add options"
            )
        return cid

    # ------------------------------------------------------------------ pinning what a node keeps

    def _record_path(self) -> Path | None:
        state = self.settings.state_dir
        return None if state is None else state / SEED_RECORD

    def _load_record(self) -> dict[str, str]:
        path = self._record_path()
        if path is None or not path.exists():
            return dict(self._memory_record)
        try:
            value = json.loads(path.read_text())
            seeded = value["seeded"]
            if not isinstance(seeded, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in seeded.items()
            ):
                raise ValueError("bad record")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DownloadError(f"ipfs: unreadable pin record {path}: {exc}") from exc
        return dict(seeded)

    def _save_record(self, record: Mapping[str, str]) -> None:
        self._memory_record = dict(record)
        path = self._record_path()
        if path is None:
            return
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"seeded": dict(sorted(record.items()))}, indent=1))
        os.replace(tmp, path)

    async def seed(self, blobs: Mapping[str, Path]) -> None:
        """Pin exactly ``blobs`` (sha256 -> verified file); unpin what an earlier call pinned
        that is no longer among them. Every blob is tried; a failure is raised at the end."""
        node = await self._ready()
        if self._seed_lock is None:
            self._seed_lock = anyio.Lock()
        failures: list[str] = []
        async with self._seed_lock:
            record = await anyio.to_thread.run_sync(self._load_record)
            pinned = await self._pins(node)
            for sha256, path in sorted(blobs.items()):
                cid = record.get(sha256)
                if cid is not None and cid in pinned:
                    continue
                try:
                    record[sha256] = await self._add_verified(node, Path(path), sha256)
                except (DownloadError, LengthOrHashMismatchError) as exc:
                    failures.append(f"{sha256[:12]}: {exc}")
                    continue
                await anyio.to_thread.run_sync(self._save_record, dict(record))
            keep = set(record[s] for s in blobs if s in record)
            for sha256 in sorted(set(record) - set(blobs)):
                cid = record.pop(sha256)
                if cid not in keep and cid in pinned:
                    try:
                        await node.unpin(cid)
                    except PinError as exc:
                        log.info("ipfs: unpinning %s: %s", cid, exc)
                    except IpfsError as exc:
                        failures.append(f"unpin {cid}: {exc}")
                        record[sha256] = cid
                        continue
                await anyio.to_thread.run_sync(self._save_record, dict(record))
        if failures:
            raise DownloadError(f"ipfs: could not seed every kept blob: {'; '.join(failures)}")

    async def _pins(self, node: IpfsBackend) -> frozenset[str]:
        try:
            return await node.pins()
        except IpfsError as exc:
            raise DownloadError(f"ipfs: listing pins failed: {exc}") from exc

    async def pinned(self) -> dict[str, str]:
        """The blobs :meth:`seed` pinned that are pinned now (sha256 -> CID)."""
        node = await self._ready()
        record = await anyio.to_thread.run_sync(self._load_record)
        pins = await self._pins(node)
        return {sha: cid for sha, cid in record.items() if cid in pins}

    # ------------------------------------------------------------------ peer messages

    def _topic(self, kind: str) -> str:
        network = self.settings.network_id
        if not network:
            raise ConfigurationError("ipfs: announce and subscribe need the network_id option")
        if not _KIND.match(kind):
            raise ValueError(f"not a message kind: {kind!r}")
        return topic_for(network, kind)

    async def announce(self, kind: str, payload: bytes) -> None:
        """Publish ``payload`` (a signed document) on ``kind``'s topic. Best effort: pubsub
        delivers only to peers already in the topic's mesh."""
        topic = self._topic(kind)
        if len(payload) > self.settings.max_message_size:
            raise ValueError(
                f"a {len(payload)}-byte {kind} exceeds max_message_size "
                f"({self.settings.max_message_size}); peers would drop it"
            )
        node = await self._ready()
        try:
            await node.publish(topic, bytes(payload))
        except IpfsError as exc:
            raise DownloadError(f"ipfs: publishing a {kind} failed: {exc}") from exc

    def subscribe(self, kinds: Iterable[str]) -> AsyncIterator[PeerMessage]:
        """Messages of ``kinds`` the ``message_validator`` accepted, from when the iterator is
        first awaited; ``aclose()`` it (the transport's close ends it too)."""
        if self.closed:
            raise DownloadError("the ipfs transport is closed")
        validator = self._validator
        if validator is None:
            raise ConfigurationError("ipfs: subscribe needs the message_validator option")
        topics = {self._topic(kind): kind for kind in kinds}
        return _LazyInbox(self, topics, validator)

    def _open_inbox(
        self, node: IpfsBackend, topics: Mapping[str, str], validator: MessageValidator
    ) -> Inbox:
        inbox = Inbox(
            node,
            topics,
            validator=validator,
            own_peer=self._peer_id,
            guard=self.guard,
            max_size=self.settings.max_message_size,
            transport=self.name,
            on_close=self._inboxes.discard,
        )
        self._inboxes.add(inbox)
        return inbox


class _LazyInbox:
    """What :meth:`IpfsTransport.subscribe` returns: starts the transport on first use."""

    def __init__(
        self, transport: IpfsTransport, topics: Mapping[str, str], validator: MessageValidator
    ) -> None:
        self._transport = transport
        self._topics = topics
        self._validator = validator
        self._inbox: Inbox | None = None
        self._closed = False

    def __aiter__(self) -> _LazyInbox:
        return self

    async def __anext__(self) -> PeerMessage:
        if self._closed or self._transport.closed:
            raise StopAsyncIteration
        if self._inbox is None:
            node = await self._transport._ready()
            self._inbox = self._transport._open_inbox(node, self._topics, self._validator)
        return await self._inbox.__anext__()

    async def aclose(self) -> None:
        self._closed = True
        if self._inbox is not None:
            await self._inbox.aclose()
