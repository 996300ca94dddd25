"""The origin: what ``blackhole-sync serve REPO`` runs.

The origin serves a repository directory to nodes through every installed plugin's origin
side. Today that is the HTTP server a plugin registers (``blackhole_sync_server``); the
peer-to-peer plugins add their own parts (seeding, pinning, announcing each new index).
"""

from __future__ import annotations

from .errors import MissingPluginError
from .fetch import PluginHost, ServerFactory

__all__ = ["find_server"]


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
