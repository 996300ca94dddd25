"""The pluggy plugin object: this module, registered under the ``blackhole_sync`` entry-point
group as ``http``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

from blackhole_sync import TransportSpec

from ._spec import HTTP_TRANSPORT_SPEC
from .webhook import WebhookChannel, webhook_from_config

if TYPE_CHECKING:
    from .server import RepositoryServer

__all__ = [
    "blackhole_sync_notification_channels",
    "blackhole_sync_server",
    "blackhole_sync_transports",
    "hookimpl",
]

hookimpl = pluggy.HookimplMarker("blackhole_sync")


@hookimpl
def blackhole_sync_transports() -> list[TransportSpec]:
    """The HTTP transport: ``http`` and ``https`` URLs, under asyncio."""
    return [HTTP_TRANSPORT_SPEC]


@hookimpl
def blackhole_sync_server() -> RepositoryServer:
    """The repository origin server that ``blackhole-sync serve`` runs."""
    from .server import RepositoryServer  # aiohttp.web only where a server is wanted

    return RepositoryServer()


@hookimpl
def blackhole_sync_notification_channels(node_config: Mapping[str, Any]) -> list[WebhookChannel]:
    """The ``webhook`` channel, when ``config.toml`` has ``[webhook] url``."""
    channel = webhook_from_config(node_config)
    return [channel] if channel is not None else []
