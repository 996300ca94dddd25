"""The HTTP transport's registration, without the client: the plugin module (imported by every
command that loads plugins) names the transport from here, and aiohttp is imported only when a
transport is created (:func:`make_http_transport`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blackhole_sync.fetch import TRANSPORT_API, TransportSpec

if TYPE_CHECKING:
    from .client import HttpTransport

__all__ = ["HTTP_TRANSPORT_SPEC", "make_http_transport"]


def make_http_transport(**options: Any) -> HttpTransport:
    """A new :class:`~blackhole_sync_http.client.HttpTransport` (imports the client, aiohttp)."""
    from .client import HttpTransport

    return HttpTransport(**options)


HTTP_TRANSPORT_SPEC = TransportSpec(
    name="http",
    factory=make_http_transport,
    api=TRANSPORT_API,
    schemes=frozenset({"http", "https"}),
    backends=frozenset({"asyncio"}),
    description="HTTP(S) origins and mirrors (aiohttp): Range resume, bandwidth limit",
)
