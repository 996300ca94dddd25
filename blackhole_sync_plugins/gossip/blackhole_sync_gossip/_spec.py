"""The gossip transport's registration, without the transport: the plugin module (imported by
every command that loads plugins) names the transport from here; the transport module (anyio
streams, the settings) and py-libp2p load when a transport is created."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blackhole_sync import TRANSPORT_API, TransportSpec

if TYPE_CHECKING:
    from .transport import GossipTransport

__all__ = ["GOSSIP_TRANSPORT_SPEC", "make_gossip_transport"]


def make_gossip_transport(**options: Any) -> GossipTransport:
    """A new :class:`~blackhole_sync_gossip.transport.GossipTransport`."""
    from .transport import GossipTransport

    return GossipTransport(**options)


#: How the plugin registers the transport.
GOSSIP_TRANSPORT_SPEC = TransportSpec(
    name="gossip",
    factory=make_gossip_transport,
    api=TRANSPORT_API,
    backends=frozenset({"asyncio", "trio"}),
    description="libp2p GossipSub v1.1 (py-libp2p): announcements, status, votes; catch-up queries",
)
