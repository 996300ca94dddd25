"""The origin: what ``blackhole-sync serve REPO`` runs.

The origin serves a repository directory to nodes through every installed plugin's origin
side, all in one process:

* the HTTP server a plugin registers (``blackhole_sync_server``: repository files, web seed);
* every peer transport (:class:`~blackhole_sync.network.PeerNetwork`): each published blob is
  handed to the transports that can ``publish`` (the BitTorrent plugin seeds it, the IPFS
  plugin adds and pins it), and, when the origin holds the online index key, each new index it
  sees on disk is announced (gossip, IPFS pubsub, a BEP 44 put -- re-put by the plugin while
  it runs).

The origin watches ``index.json``: a ``release publish`` or ``repo refresh`` in another process
is picked up within :data:`INDEX_POLL` seconds. Its peer identity and seq floors live in
``REPO/.bhsync/origin/`` (never served), and so does ``status.json``: the origin's own byte
counters, rewritten every :data:`INDEX_POLL` seconds while they change -- ``http`` (what the
HTTP server sent, per path, when the server keeps counters) and ``peers`` (each peer
transport's ``status()``, e.g. the BitTorrent seed's upload per blob).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .errors import BlackholeSyncError, MissingPluginError
from .fetch import CAP_PUBLISH, PluginHost, ServerFactory

if TYPE_CHECKING:
    from .documents import PrivateKey
    from .network import PeerNetwork

__all__ = ["INDEX_POLL", "find_server", "origin_status", "run_origin"]

log = logging.getLogger(__name__)

#: Seconds between looks at ``index.json`` for a newly published index.
INDEX_POLL = 1.0


def find_server(plugins: PluginHost) -> ServerFactory:
    """The HTTP origin server a plugin registered, or :class:`MissingPluginError` naming the
    package to install."""
    server: ServerFactory | None = plugins.hook.blackhole_sync_server()
    if server is None:
        raise MissingPluginError(
            "no plugin provides 'serve': install blackhole-sync-http "
            "(pip install 'blackhole-sync[http]')"
        )
    return server


def origin_peer_network(
    repo: Path,
    plugins: PluginHost,
    peer_config: Mapping[str, Any] | None = None,
    index_key: PrivateKey | None = None,
) -> PeerNetwork:
    """The origin's peer network: its own identity and floors under ``REPO/.bhsync/origin``,
    the gate over the repository's root (not started: use ``async with``). With
    ``index_key``, transports get its seed as the ``index_key`` option (BEP 44 puts)."""
    from .codecs import load_private_key, write_key_pair
    from .network import PeerMessageGate, PeerNetwork, admit
    from .node import StateDB
    from .release import RepoLayout

    layout = RepoLayout.open(repo)
    home = layout.private_dir / "origin"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = home / "identity.key"
    identity: PrivateKey = (
        load_private_key(key_path) if key_path.exists() else write_key_pair(key_path)
    )
    gate = PeerMessageGate(layout.root, StateDB.open(home / "state.db"))
    config = dict(peer_config or {})
    network = dict(config.get("network") or {})
    options: dict[str, Any] = {
        "network_id": layout.root().network_id,
        "identity_key": identity.seed,
        "state_root": home,
        "loopback_only": bool(network.get("loopback_only", False)),
        "node_config": config,
        # nodes that declare protocol versions say a fork id at the handshake: the origin runs
        # no host protocol and admits any node of its network (network/compat.py)
        "admit": functools.partial(admit, None, network_id=layout.root().network_id),
    }
    if index_key is not None:
        options["index_key"] = index_key.seed
    return PeerNetwork(plugins.transport_specs(), gate, options)


async def _follow_index(
    repo: Path, peers: PeerNetwork, index_key: PrivateKey | None, poll: float
) -> None:
    """Publish each release's blobs to the publishing peer transports and announce each new
    index (with the index key), as the repository on disk changes."""
    from .network import make_announcements
    from .release import RepoLayout, release_blobs

    layout = RepoLayout.open(repo)
    published: set[str] = set()
    seen: bytes | None = None
    publishers = [t for t in peers.transports if CAP_PUBLISH in t.capabilities]
    while True:
        data = layout.index_bytes()
        if data is not None and data != seen:
            seen = data
            for version, (_channel, state) in sorted(layout.published().items()):
                if state != "published" or version in published:
                    continue
                envelope, _ = layout.release_envelope(version)
                from .documents import ReleaseManifest

                manifest = envelope.parse(ReleaseManifest.from_dict)
                for sha256 in release_blobs(manifest):
                    for transport in publishers:
                        try:
                            await transport.publish(layout.blob_path(sha256), sha256=sha256)
                        except BlackholeSyncError as exc:
                            log.warning("%s could not publish %s: %s", transport.name, sha256, exc)
                published.add(version)
            if index_key is not None:
                try:
                    for payload in make_announcements(data, layout.root(), index_key).values():
                        told = await peers.announce("announcement", payload)
                        log.info("announced the index over %s", ", ".join(told) or "nothing")
                except (BlackholeSyncError, ValueError) as exc:
                    log.warning("could not announce the new index: %s", exc)
        await anyio.sleep(poll)


def origin_status(server: object, peers: PeerNetwork | None) -> dict[str, Any]:
    """The origin's own counters: the HTTP server's (``stats.to_dict()`` when it keeps any)
    and each peer transport's ``status()``."""
    stats = getattr(server, "stats", None)
    http = stats.to_dict() if stats is not None and hasattr(stats, "to_dict") else None
    transports: dict[str, Any] = {}
    for transport in [] if peers is None else peers.transports:
        status = getattr(getattr(transport, "inner", transport), "status", None)
        if callable(status):
            try:
                transports[transport.name] = status()
            except Exception:  # a counter must never stop the origin
                log.debug("%s status failed", transport.name, exc_info=True)
    return {"http": http, "peers": transports}


async def _write_status(path: Path, server: object, peers: PeerNetwork, poll: float) -> None:
    """Rewrite ``path`` with :func:`origin_status` whenever it changed."""
    import json

    import anyio.to_thread

    from ._fsutil import write_atomic

    last = b""
    while True:
        data = json.dumps(origin_status(server, peers), sort_keys=True).encode()
        if data != last:
            try:
                await anyio.to_thread.run_sync(
                    functools.partial(write_atomic, path, data, mode=0o600)
                )
                last = data
            except OSError as exc:
                log.debug("could not write %s: %s", path, exc)
        await anyio.sleep(poll)


async def run_origin(
    repo: Path,
    *,
    plugins: PluginHost,
    host: str,
    port: int,
    ready: Callable[[str], None],
    tls: Mapping[str, str] | None = None,
    index_key: PrivateKey | None = None,
    peer_config: Mapping[str, Any] | None = None,
    poll: float = INDEX_POLL,
) -> None:
    """Serve ``repo`` until cancelled: HTTP, and the peer side when a peer plugin is installed.

    ``ready(line)`` hears the HTTP URL once listening, then one line per peer transport with
    the addresses peers can reach it at (``peer <name> <address>``).
    """
    server = find_server(plugins)
    async with anyio.create_task_group() as tg:
        started = anyio.Event()

        def http_ready(url: str) -> None:
            ready(url)
            started.set()

        tg.start_soon(lambda: server.serve(repo, host, port, ready=http_ready, **dict(tls or {})))
        await started.wait()
        peers = origin_peer_network(repo, plugins, peer_config, index_key)
        async with peers:
            for transport in peers.transports:
                for address in transport.addresses():
                    ready(f"peer {transport.name} {address}")
            from .release import RepoLayout

            status_path = RepoLayout.open(repo).private_dir / "origin" / "status.json"
            tg.start_soon(_write_status, status_path, server, peers, poll)
            if peers.active:
                await _follow_index(repo, peers, index_key, poll)
            else:
                await anyio.sleep_forever()
