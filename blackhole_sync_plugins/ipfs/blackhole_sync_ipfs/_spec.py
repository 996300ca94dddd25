"""The IPFS transport's registration, without the transport: the plugin module (imported by
every command that loads plugins) names the transport from here; the transport module and
its backends load when a transport is created (:func:`make_ipfs_transport`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blackhole_sync.fetch import TRANSPORT_API, TransportSpec

if TYPE_CHECKING:
    from .transport import IpfsTransport

__all__ = ["IPFS_TRANSPORT_SPEC", "make_ipfs_transport"]


def make_ipfs_transport(**options: Any) -> IpfsTransport:
    """A new :class:`~blackhole_sync_ipfs.transport.IpfsTransport`."""
    from .transport import IpfsTransport

    return IpfsTransport(**options)


IPFS_TRANSPORT_SPEC = TransportSpec(
    name="ipfs",
    factory=make_ipfs_transport,
    api=TRANSPORT_API,
    backends=frozenset({"asyncio", "trio"}),
    schemes=frozenset({"ipfs", "ipfs+rpc"}),
    locator_kinds=frozenset({"cid"}),
    description="IPFS: an embedded Kubo node (ipfs://) or a Kubo daemon (ipfs+rpc://HOST:PORT); "
    "cid locators, pinning, pubsub",
)
