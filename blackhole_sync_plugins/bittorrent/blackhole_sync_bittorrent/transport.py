"""The BitTorrent transport: the engine behind the core's transport API.

=============== =============================================================================
capability      what it does here
=============== =============================================================================
``locate``      the blob's deterministic hybrid torrent, offline: ``btih`` and ``btmh``
                locators, which the release builder signs into the manifest (and the torrent
                it writes as ``torrents/<btih>.torrent`` next to the blobs, see
                :func:`torrent_companions`)
``fetch``       a ``btih`` locator: the ``.torrent`` from a local copy or the node's sources,
                checked against the signed info hash; the file downloaded from the swarm
                into ``NODE/bittorrent/downloads`` (length cap enforced before anything
                starts; every piece verified by libtorrent) and streamed into the core's sink
                as its verified prefix grows -- the sink checks the sha256 of the whole. The
                node's http(s) sources become web seeds when a swarm stalls. No peer known
                (at once), none within ``peer_timeout``, or no verified byte for
                ``give_up_after``: a ``DownloadError`` subclass, and the core falls back to
                its own sources.
``publish``     check the file's sha256, seed it read-only (the origin: super-seeding)
``seed``        seed exactly the kept blobs the agent passes (``NODE/blobs``, read-only) as the
                seeding policy allows (``kept``/``current``/``none``, ``seed_ratio``,
                ``seed_time``); stop the others
``announce``    an ``announcement`` as a BEP 44 mutable item: key = the index key (option
                ``index_key``, given to the origin by ``serve --index-key``), salt =
                ``blackhole-sync/<network>/<channel>``, seq = the index version, value = the
                signed document; re-put every ``republish_interval`` (other kinds are not
                carried over the DHT)
``query``       a BEP 44 lookup of the announcement under each of the trusted root's index keys
                (option ``index_keys``): every candidate, unverified (the core's gate decides)
``subscribe``   that lookup every ``dht_poll_interval`` seconds; each candidate goes through
                the ``message_validator`` (the gate keeps the seq floor) and only accepted ones
                are delivered (and, with ``republish``, re-put as signed)
=============== =============================================================================

One libtorrent session per process, shared by the process's transport instances
(:mod:`._host`): the first one used starts it, the last one closed stops it. ``locate`` never
starts anything. ``addresses()`` is ``["host:port"]`` of the session (peers and DHT) once
started.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import anyio
import anyio.to_thread
from nacl.signing import SigningKey

from blackhole_sync.errors import (
    BlackholeSyncError,
    ConfigurationError,
    DownloadError,
    FormatError,
)
from blackhole_sync.fetch import (
    CAP_ANNOUNCE,
    CAP_FETCH,
    CAP_LOCATE,
    CAP_PUBLISH,
    CAP_QUERY,
    CAP_RANGE,
    CAP_SEED,
    CAP_SUBSCRIBE,
    BaseTransport,
    Locator,
    MessageValidator,
    PeerMessage,
    Sink,
    Verdict,
)

from ._dht import MutableItem, announcement_salt
from ._errors import BittorrentError, DhtError
from ._host import Host, Lease, NoPeersError, SwarmStalledError, acquire
from ._options import BittorrentSettings
from ._sources import TorrentMismatchError, fetch_torrent, torrent_relpath, web_seed_urls
from ._spec import BITTORRENT_TRANSPORT_SPEC
from ._torrent import create_torrent

__all__ = [
    "BITTORRENT_TRANSPORT_SPEC",
    "BittorrentTransport",
    "NoPeersError",
    "SwarmStalledError",
    "TorrentMismatchError",
    "torrent_companions",
]

log = logging.getLogger("blackhole_sync_bittorrent")

#: The first BEP 44 lookup of a subscription runs this many seconds after it starts (the
#: peer network's catch-up asks once on start already).
FIRST_POLL = 10.0
#: Candidates remembered for re-putting once the gate accepted one.
REMEMBERED_ITEMS = 16

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_BASE32 = re.compile(r"[A-Z2-7]{32}")


def btih_of(locator: Locator) -> str:
    """The 40-hex v1 info hash a ``btih`` locator names (hex or base32 form)."""
    value = locator.value.strip()
    if locator.kind != "btih":
        raise DownloadError(f"{locator}: the bittorrent transport fetches btih locators")
    if _HEX40.fullmatch(value):
        return value.lower()
    if _BASE32.fullmatch(value.upper()):
        return binascii.hexlify(base64.b32decode(value.upper())).decode()
    raise DownloadError(f"{locator}: not a BitTorrent v1 info hash")


def torrent_companions(path: Path) -> dict[str, bytes]:
    """The files a repository serves next to the blob at ``path``: its ``.torrent``, as
    ``torrents/<btih>.torrent`` (blocking, offline). Empty for an empty file."""
    if Path(path).stat().st_size == 0:
        return {}
    torrent = create_torrent(path, sha256_hex=_sha_name(Path(path)))
    return {torrent_relpath(torrent.btih): torrent.data}


def _sha_name(path: Path) -> str | None:
    return path.name if re.fullmatch(r"[0-9a-f]{64}", path.name) else None


class _SkipSink:
    """Discards the first ``skip`` bytes written (a fetch asked to start past byte 0)."""

    def __init__(self, inner: Sink, skip: int) -> None:
        self._inner = inner
        self._skip = skip

    @property
    def received(self) -> int:
        return self._inner.received

    async def write(self, data: bytes) -> None:
        if self._skip:
            cut = min(self._skip, len(data))
            self._skip -= cut
            data = data[cut:]
        if data:
            await self._inner.write(data)


class BittorrentTransport(BaseTransport):
    """The ``bittorrent`` transport (see the module docstring). Built by the core with the
    standard options; settings come from ``node_config["bittorrent"]``
    (:class:`~blackhole_sync_bittorrent._options.BittorrentSettings`)."""

    name: ClassVar[str] = "bittorrent"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {
            CAP_FETCH,
            CAP_RANGE,
            CAP_PUBLISH,
            CAP_LOCATE,
            CAP_SEED,
            CAP_ANNOUNCE,
            CAP_SUBSCRIBE,
            CAP_QUERY,
        }
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.settings = BittorrentSettings.from_options(options)
        validator = options.get("message_validator")
        if validator is not None and not callable(validator):
            raise ConfigurationError("message_validator must be callable")
        self._validator: MessageValidator | None = validator
        self._lease: Lease | None = None
        self._start_lock: anyio.Lock | None = None
        self._closing: anyio.Event | None = None
        self._items: OrderedDict[bytes, MutableItem] = OrderedDict()
        #: The announcement items this instance keeps published (key, salt) -> seq.
        self.published_items: dict[tuple[bytes, bytes], int] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def host(self) -> Host | None:
        """The process's host once this instance started it (None before)."""
        return None if self._lease is None else self._lease.host

    async def __aenter__(self) -> Self:
        await self._ready()
        return self

    async def _ready(self) -> Host:
        if self.closed:
            raise DownloadError("the bittorrent transport is closed")
        if self._lease is not None:
            return self._lease.host
        if self._start_lock is None:
            self._start_lock = anyio.Lock()
            self._closing = anyio.Event()
        async with self._start_lock:
            if self._lease is None:
                if self.closed:
                    raise DownloadError("the bittorrent transport is closed")
                self._lease = await acquire(self.settings)
        return self._lease.host

    async def aclose(self) -> None:
        """End subscriptions and let go of the session (the last user stops it)."""
        if self.closed:
            return
        self.closed = True
        if self._closing is not None:
            self._closing.set()
        lease, self._lease = self._lease, None
        if lease is not None:
            with anyio.CancelScope(shield=True):
                await lease.release()

    def addresses(self) -> list[str]:
        """``["host:port"]`` of the session (peers and DHT node) once started; else empty."""
        host = self.host
        return [] if host is None else host.addresses()

    def status(self) -> dict[str, Any] | None:
        """What the session seeds and has moved (``status.json``'s content), once started."""
        host = self.host
        return None if host is None else host.status()

    # ------------------------------------------------------------------ content

    def locate(self, path: Path) -> list[Locator]:
        """The ``btih`` and ``btmh`` of the file's torrent, computed offline (none for an
        empty file: it has no torrent)."""
        path = Path(path)
        if path.stat().st_size == 0:
            return []
        torrent = create_torrent(path, sha256_hex=_sha_name(path))
        return [Locator("btih", torrent.btih), Locator("btmh", torrent.btmh)]

    async def publish(self, path: Path, *, sha256: str) -> list[Locator]:
        """Check ``path`` against ``sha256`` and seed it (read-only); its locators."""
        host = await self._ready()
        torrent = await host.publish(Path(path), sha256)
        return [Locator("btih", torrent.btih), Locator("btmh", torrent.btmh)]

    async def seed(self, blobs: Mapping[str, Path]) -> None:
        """Seed exactly ``blobs`` (sha256 -> a node's kept blob or installed artifact, read
        only) as the seeding policy allows; stop seeding what an earlier call offered and
        ``blobs`` lacks. Every blob is tried; a failure is raised at the end."""
        host = await self._ready()
        problems = await host.offer({sha: Path(p) for sha, p in blobs.items()})
        if problems:
            raise DownloadError(
                f"bittorrent: could not seed every kept blob: {'; '.join(problems)}"
            )

    def can_find_peers(self) -> bool:
        """Whether this node was told where its swarm is: ``[bittorrent] peers``, or DHT nodes
        or routers it was configured with. A node with none (only libtorrent's public routers
        by default) goes straight to its own sources rather than waiting ``peer_timeout`` on
        every blob for a swarm it was never pointed at."""
        s = self.settings
        return bool(s.peers or (s.dht and (s.dht_bootstrap or s.dht_routers)))

    async def fetch(self, locator: Locator, sink: Sink, *, max_length: int, start: int = 0) -> None:
        """Fetch the torrent of a ``btih`` locator into ``sink`` (see the module docstring).
        With ``start``, the first ``start`` bytes are not written again."""
        btih = btih_of(locator)
        if max_length == 0:
            return  # nothing fits a zero cap; the sink judges an empty result
        if not self.can_find_peers():
            raise NoPeersError(
                f"btih:{btih}: no swarm configured ([bittorrent] peers, dht_bootstrap and "
                "dht_routers all empty): left to the node's sources"
            )
        host = await self._ready()
        try:
            torrent = await anyio.to_thread.run_sync(host.cached_torrent, btih, max_length)
            if torrent is None:
                torrent = await fetch_torrent(
                    self.settings.sources, btih, max_length=max_length, tls=self.settings.tls
                )
            web_seeds = web_seed_urls(self.settings.sources, torrent.name)
            target: Sink = sink if not start else _SkipSink(sink, start)
            await host.fetch_into(torrent, target, max_length=max_length, web_seeds=web_seeds)
        except BlackholeSyncError:
            raise
        except (BittorrentError, OSError) as exc:
            raise DownloadError(f"bittorrent: fetching btih:{btih} failed: {exc}") from exc

    # ------------------------------------------------------------------ announcements

    def _salt(self) -> bytes | None:
        network = self.settings.network_id
        if not network:
            return None
        try:
            return announcement_salt(network, self.settings.channel)
        except ValueError:
            return None

    def _lookup_keys(self) -> list[bytes]:
        keys: list[bytes] = []
        if self.settings.index_keys is not None:
            keys.extend(bytes(k) for k in self.settings.index_keys())
        if self.settings.index_key is not None:
            own = bytes(SigningKey(self.settings.index_key).verify_key)
            if own not in keys:
                keys.append(own)
        return [k for k in keys if len(k) == 32]

    def _announcement_item(self, payload: bytes) -> MutableItem | None:
        """The BEP 44 item for a signed announcement: signed with the index key when this
        transport holds it, else one received from the DHT with this exact value (re-put as
        signed), else None."""
        from blackhole_sync.documents import Announcement, Envelope

        network = self.settings.network_id
        if not network:
            raise ConfigurationError("bittorrent: announcements need the network_id option")
        try:
            document = Envelope.from_bytes(payload, expected_type="announcement").parse(
                Announcement.from_dict
            )
            salt = announcement_salt(network, document.channel)
        except (FormatError, ValueError) as exc:
            raise DownloadError(f"bittorrent: not an announcement to put: {exc}") from exc
        key = self.settings.index_key
        if key is not None:
            try:
                return MutableItem.sign(SigningKey(key), payload, document.index_version, salt)
            except ValueError as exc:
                raise DownloadError(f"bittorrent: cannot put this announcement: {exc}") from exc
        return self._items.get(payload)

    async def announce(self, kind: str, payload: bytes) -> None:
        """Put an ``announcement`` as a BEP 44 item and keep it published (see the module
        docstring). Other kinds travel over gossip, not the DHT: nothing is sent."""
        if kind != "announcement" or not self.settings.dht:
            return
        item = self._announcement_item(payload)
        if item is None:
            log.debug("bittorrent: no index key and no such item received: not put")
            return
        host = await self._ready()
        try:
            await host.engine.keep_published(item, interval=self.settings.republish_interval)
        except (DhtError, ValueError, RuntimeError) as exc:
            raise DownloadError(f"bittorrent: cannot put the announcement: {exc}") from exc
        self.published_items[(item.public_key, item.salt)] = item.seq

    async def query(self, kind: str) -> list[PeerMessage]:
        """Every announcement the DHT holds under the index keys for this node's network and
        channel, unverified (the caller's gate decides); nothing for other kinds."""
        if kind != "announcement" or not self.settings.dht:
            return []
        salt = self._salt()
        keys = self._lookup_keys()
        if salt is None or not keys:
            return []
        host = await self._ready()
        out: list[PeerMessage] = []
        for key in keys:
            try:
                result = await host.engine.dht_get(key, salt)
            except (DhtError, ValueError, RuntimeError) as exc:
                raise DownloadError(f"bittorrent: BEP 44 lookup failed: {exc}") from exc
            for candidate in result.candidates:
                self._remember(candidate.item)
                out.append(
                    PeerMessage(
                        "announcement",
                        candidate.value,
                        f"dht:{candidate.responders} nodes",
                        self.name,
                    )
                )
        return out

    def _remember(self, item: MutableItem) -> None:
        self._items[item.value] = item
        self._items.move_to_end(item.value)
        while len(self._items) > REMEMBERED_ITEMS:
            self._items.popitem(last=False)

    def subscribe(self, kinds: Iterable[str]) -> AsyncIterator[PeerMessage]:
        """Announcements the ``message_validator`` accepted, looked up every
        ``dht_poll_interval`` seconds; ends when the transport closes (or ``aclose()``)."""
        if self.closed:
            raise DownloadError("the bittorrent transport is closed")
        if self._validator is None:
            raise ConfigurationError("bittorrent: subscribe needs the message_validator option")
        return self._subscription(frozenset(kinds), self._validator)

    async def _subscription(
        self, kinds: frozenset[str], validator: MessageValidator
    ) -> AsyncIterator[PeerMessage]:
        await self._ready()
        closing = self._closing
        assert closing is not None
        carried = "announcement" in kinds and self.settings.dht
        delay = min(FIRST_POLL, self.settings.dht_poll_interval)
        while not self.closed:
            with anyio.move_on_after(delay if carried else float("inf")):
                await closing.wait()
            if self.closed:
                return
            delay = self.settings.dht_poll_interval
            try:
                messages = await self.query("announcement")
            except DownloadError as exc:
                log.info("bittorrent: %s", exc)
                continue
            for message in messages:
                if validator(message) is not Verdict.ACCEPT:
                    continue
                item = self._items.get(message.payload)
                if item is not None and self.settings.republish and self._lease is not None:
                    try:
                        await self._lease.host.engine.keep_published(
                            item, interval=self.settings.republish_interval
                        )
                    except (DhtError, ValueError, RuntimeError, DownloadError) as exc:
                        log.info("bittorrent: re-put of the announcement: %s", exc)
                yield message


