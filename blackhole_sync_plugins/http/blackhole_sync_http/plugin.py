"""The pluggy plugin object: this module, registered under the ``blackhole_sync`` entry-point
group as ``http``."""

from __future__ import annotations

import pluggy

from blackhole_sync.fetch.transport import TransportSpec

from .client import HTTP_TRANSPORT_SPEC
from .server import RepositoryServer

__all__ = ["blackhole_sync_server", "blackhole_sync_transports", "hookimpl"]

hookimpl = pluggy.HookimplMarker("blackhole_sync")


@hookimpl
def blackhole_sync_transports() -> list[TransportSpec]:
    """The HTTP transport: ``http`` and ``https`` URLs, under asyncio."""
    return [HTTP_TRANSPORT_SPEC]


@hookimpl
def blackhole_sync_server() -> RepositoryServer:
    """The repository origin server that ``blackhole-sync serve`` runs."""
    return RepositoryServer()
