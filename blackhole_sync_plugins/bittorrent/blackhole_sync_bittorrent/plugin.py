"""The pluggy plugin object: this module, registered under the ``blackhole_sync`` entry-point
group as ``bittorrent``. Importing it starts nothing: the transport opens the process's
libtorrent session only when used."""

from __future__ import annotations

import pluggy

from blackhole_sync import TransportSpec

from ._spec import BITTORRENT_TRANSPORT_SPEC

__all__ = ["blackhole_sync_transports", "hookimpl"]

hookimpl = pluggy.HookimplMarker("blackhole_sync")


@hookimpl
def blackhole_sync_transports() -> list[TransportSpec]:
    """The BitTorrent transport: ``btih`` locators (tried before the node's sources, which it
    uses as web seeds), the ``.torrent`` companion of each blob, under asyncio and trio."""
    return [BITTORRENT_TRANSPORT_SPEC]
