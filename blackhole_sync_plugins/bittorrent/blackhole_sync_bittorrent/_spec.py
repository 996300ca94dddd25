"""The BitTorrent transport's registration, without the transport: the plugin module (imported
by every command that loads plugins) names the transport from here; the transport module and
libtorrent load when a transport is created or a ``.torrent`` companion is made."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from blackhole_sync import TRANSPORT_API, TransportSpec

if TYPE_CHECKING:
    from .transport import BittorrentTransport

__all__ = ["BITTORRENT_TRANSPORT_SPEC", "make_bittorrent_transport", "torrent_companions"]


def make_bittorrent_transport(**options: Any) -> BittorrentTransport:
    """A new :class:`~blackhole_sync_bittorrent.transport.BittorrentTransport`."""
    from .transport import BittorrentTransport

    return BittorrentTransport(**options)


def torrent_companions(path: Path) -> dict[str, bytes]:
    """:func:`blackhole_sync_bittorrent.transport.torrent_companions` (the blob's
    ``torrents/<btih>.torrent``; blocking, offline)."""
    from .transport import torrent_companions as companions

    return companions(path)


#: How the plugin registers the transport.
BITTORRENT_TRANSPORT_SPEC = TransportSpec(
    name="bittorrent",
    factory=make_bittorrent_transport,
    api=TRANSPORT_API,
    backends=frozenset({"asyncio", "trio"}),
    locator_kinds=frozenset({"btih"}),
    before_sources=True,
    companions=torrent_companions,
    description="BitTorrent (libtorrent): btih locators, a swarm with the node's http(s) "
    "sources as web seeds, seeding kept blobs, BEP 44 announcements",
)
