"""The pluggy plugin object: this module, registered under the ``blackhole_sync`` entry-point
group as ``gossip``."""

from __future__ import annotations

import pluggy

from blackhole_sync import TransportSpec

from ._spec import GOSSIP_TRANSPORT_SPEC

__all__ = ["blackhole_sync_transports", "hookimpl"]

hookimpl = pluggy.HookimplMarker("blackhole_sync")


@hookimpl
def blackhole_sync_transports() -> list[TransportSpec]:
    """The gossip transport: announce, subscribe and query; under asyncio and trio."""
    return [GOSSIP_TRANSPORT_SPEC]
